"""A control for the gateway benchmark: CPU work in bursts, and nothing else.

    python benchmarks/cpu_burner.py PERIOD_MS BURST_US [normal|idle] [NICE]

Every ``PERIOD_MS`` it spins for ``BURST_US`` (a loop on the clock: no
memory traffic, no system calls, no sockets, no files). Beside the engine it
shows what a co-located process costs the engine's p99 **by its CPU bursts
alone**, at the same CPU share as a gateway: ``bench_gateways.py
--controls`` runs it as two more configurations, at the gateway's default
``nice`` and under ``SCHED_IDLE``. A gateway that does worse than the
burner of its duty cycle costs the engine through something else than
scheduling (its caches, its files, its sockets).
"""
from __future__ import annotations

import os
import sys
import time


def main(argv: list[str]) -> None:
    period_s, burst_s = float(argv[0]) / 1e3, float(argv[1]) / 1e6
    policy = argv[2] if len(argv) > 2 else "normal"
    nice = int(argv[3]) if len(argv) > 3 else 10
    if nice:
        os.nice(nice)
    if policy == "idle":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    clock = time.perf_counter
    while True:
        time.sleep(period_s)
        end = clock() + burst_s
        while clock() < end:
            pass


if __name__ == "__main__":
    main(sys.argv[1:])
