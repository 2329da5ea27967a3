"""The event loop's longest pause around a trading-day roll, with N done orders to forget.

    .venv/bin/python benchmarks/profile_roll.py [N]

Builds the real service in-process (as ``profile_pipeline.py`` does), puts
N orders in its order table, all done (half canceled by a request, whose id
then names the order as well, half refused), and rolls the day twice, as
the service's loop does it: the first roll ends the day they were done in,
the second forgets them (``[orders] keep_done_days = 1``). Meanwhile a probe
on the same loop wakes every millisecond and records how late it woke: the
longest delay is the longest pause of the loop, the roll itself and the
steps that take the forgotten orders out after it (``EngineService._forget_step``)
alike. It runs until the table holds none of them. The last line is a JSON
object of its figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.profile_pipeline import _config, start_by_hand  # noqa: E402
from engine.orders import Stage  # noqa: E402


def fill_table(table, n: int) -> None:
    """``n`` done orders on four accounts: even ones canceled by a request, odd ones refused."""
    for i in range(n):
        order = table.create(f"o{i}", "S1", f"DEMO{1 + i % 2}", "AAA", 1, 2, 1, 5000, 1, 0)
        if i % 2:
            order.reject(10, "refused", 0)
            continue
        for stage in (Stage.VALIDATED, Stage.RISK_CHECKED, Stage.ROUTED):
            order.advance(stage, 0)
        table.reserve(order.account, f"x{i}")
        table.alias(order, f"x{i}")
        order.advance(Stage.CANCELED, 0)


async def probe(worst: list, stop: asyncio.Event) -> None:
    """Wake every millisecond; keep the longest lateness in ``worst[0]`` (seconds)."""
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        worst[0] = max(worst[0], time.perf_counter() - t - 0.001)


async def main(n: int) -> dict:
    with tempfile.TemporaryDirectory() as work:
        service, _ = await start_by_hand(_config(Path(work)))
        try:
            pipe = service.pipeline
            fill_table(pipe.orders, n)
            steps: list[float] = []
            table = pipe.orders
            if hasattr(table, "forget_some"):  # (a version that takes them out in steps)
                forget_some = table.forget_some

                def timed(budget=None):
                    started = time.thread_time()
                    more = forget_some(budget)
                    steps.append(time.thread_time() - started)
                    return more
                table.forget_some = timed
            figures = {"orders": n}
            # The loop's own pauses with no roll (its tick, the machine's noise), to compare.
            worst, stop = [0.0], asyncio.Event()
            task = asyncio.create_task(probe(worst, stop))
            await asyncio.sleep(0.5)
            stop.set()
            await task
            figures["no_roll_longest_pause_ms"] = round(worst[0] * 1e3, 2)
            for label in ("first_roll", "second_roll"):
                worst, stop = [0.0], asyncio.Event()
                task = asyncio.create_task(probe(worst, stop))
                await asyncio.sleep(0.05)
                started, cpu = time.perf_counter(), time.thread_time()
                pipe.roll_day(time.time_ns())
                figures[f"{label}_call_ms"] = round((time.perf_counter() - started) * 1e3, 2)
                figures[f"{label}_call_cpu_ms"] = round((time.thread_time() - cpu) * 1e3, 2)
                while len(pipe.orders.by_id) > len(pipe.orders):  # (the steps after it)
                    await asyncio.sleep(0.01)
                figures[f"{label}_done_ms"] = round((time.perf_counter() - started) * 1e3, 1)
                await asyncio.sleep(0.05)
                stop.set()
                await task
                figures[f"{label}_longest_pause_ms"] = round(worst[0] * 1e3, 2)
            figures["held_after"] = len(pipe.orders.by_id)
            if steps:  # (CPU time: what a step costs, whatever the machine's load)
                figures["steps"] = len(steps)
                figures["longest_step_cpu_ms"] = round(max(steps) * 1e3, 2)
                figures["median_step_cpu_ms"] = round(sorted(steps)[len(steps) // 2] * 1e3, 2)
            return figures
        finally:
            await service.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=1_000_000)
    args = parser.parse_args()
    print(json.dumps(uvloop.run(main(args.n))))
