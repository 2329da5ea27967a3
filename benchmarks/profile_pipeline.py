"""Deterministic per-order cost of the engine's pipeline, for profiling and callgrind A/B.

    .venv/bin/python benchmarks/profile_pipeline.py [N] [--cprofile tottime]
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=starmap_next \\
        .venv/bin/python benchmarks/profile_pipeline.py 1000

Builds the real service (simulator venues, risk, router, buffered journal)
in-process, stops the venues' wall-clock pacing and advances simulated time
by hand (20 µs per order), so every run does exactly the same work: N new
orders (half marketable IOC, half far passive IOC) through
``Pipeline.handle``, venue reports, and the journal flush per batch of ten.
Intake and sockets are left out (a stand-in session encodes what it is
sent): this measures the pipeline itself. The measured loop runs inside
``itertools.starmap`` so that callgrind can count it alone
(``--toggle-collect=starmap_next``); divide the total by N.

Not a benchmark of a target (bench_e2e.py is): a tool to see where an
order's time goes and to compare two versions of the hot path without the
machine's noise. The last line is a JSON object of its figures.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import itertools
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_e2e import engine_config, orders as encoded_orders  # noqa: E402
from engine.config import parse_config  # noqa: E402
from engine.messages import request_decoder  # noqa: E402
from engine.service import EngineService  # noqa: E402

SIM_NS_PER_ORDER = 20_000
BATCH = 10


class _Session:
    """Stands in for an intake session: stamps, encodes and journals what it is sent
    (through the handler's ``record_sent``, as ``engine.intake.Session.send`` does)."""

    session_id, principal, client_name = "S1", "", "profile"

    def __init__(self, handler):
        self.sent = 0
        self._handler = handler
        self._encoder = msgspec.msgpack.Encoder()

    def send(self, msg) -> int:
        self.sent += 1
        frame = self._encoder.encode(msgspec.structs.replace(msg, seq=self.sent))
        self._handler.record_sent(self, frame)
        return self.sent


class _ManualClock:
    """The venues' clock, moved by hand."""

    def __init__(self, t: int):
        self.t = t

    def now(self) -> int:
        return self.t

    def wall_delay(self, ts: int) -> float:
        return 1.0


def _config(work: Path):
    # bench_e2e's engine, quieter; its endpoint is bound but never used.
    text = engine_config("tcp://127.0.0.1:0", work).replace('level = "INFO"', 'level = "WARNING"')
    return parse_config(text, base_dir=work, source="profile_pipeline")


def run(pipe, venues, session, requests) -> None:
    """Hand ``requests`` to the pipeline in batches, as intake would, moving time by hand."""
    for k in range(0, len(requests), BATCH):
        for request in requests[k:k + BATCH]:
            pipe.handle(session, request)
        venues.clock.t += SIM_NS_PER_ORDER * BATCH
        venues.catch_up()
        while pipe._pump_scheduled:
            pipe._deferred_pump()
        pipe.flush(lambda: None)


async def main(n: int, sort: str | None) -> dict:
    service = EngineService(_config(Path(tempfile.mkdtemp(prefix="kronos-profile-"))))
    await service.start()
    await service.venues.stop()  # no pacing task: simulated time moves only by hand
    venues, pipe = service.venues, service.pipeline
    venues.clock = _ManualClock(venues.market.now)
    decode = request_decoder().decode
    session = _Session(pipe)
    run(pipe, venues, session, [decode(m) for m in encoded_orders(2_000, "warm")])
    requests = [decode(m) for m in encoded_orders(n, "p")]
    profile = cProfile.Profile() if sort else None
    sent = session.sent
    cpu = time.process_time()
    if profile:
        profile.enable()
    collections.deque(itertools.starmap(run, [(pipe, venues, session, requests)]), 0)
    if profile:
        profile.disable()
    cpu = time.process_time() - cpu
    if profile:
        pstats.Stats(profile).sort_stats(sort).print_stats(40)
    figures = {"orders": n, "us_per_order_cpu": round(cpu / n * 1e6, 1),
               "messages_per_order": round((session.sent - sent) / n, 2)}
    await service.stop()
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=5_000, help="orders measured")
    parser.add_argument("--cprofile", metavar="SORT", help="print a cProfile sorted by SORT")
    args = parser.parse_args()
    result = uvloop.run(main(args.n, args.cprofile))
    print(f"{result['orders']} orders: {result['us_per_order_cpu']} µs CPU per order, "
          f"{result['messages_per_order']} messages per order")
    print(json.dumps(result))
