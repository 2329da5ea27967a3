"""Deterministic per-order cost of the engine's pipeline, for profiling and callgrind A/B.

    .venv/bin/python benchmarks/profile_pipeline.py [N] [--cprofile tottime]
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=starmap_next \\
        .venv/bin/python benchmarks/profile_pipeline.py 1000

Builds the real service (simulator venues, risk, router, buffered journal)
in-process, stops the venues' wall-clock pacing and advances simulated time
by hand (20 µs per order), so every run does exactly the same work: N new
orders (half marketable IOC, half far passive IOC) through
``Pipeline.handle``, venue reports, and the journal flush per batch of ten
(``--batch``: orders per wake-up).
Intake and sockets are left out (a stand-in session encodes what it is
sent): this measures the pipeline itself. With ``--intake`` the orders
travel as bytes over a real DEALER socket to the engine's own intake
(ROUTER socket, decoding, checks, sessions, sends), whose drain is called by
hand once each batch has arrived; the replies are read back and counted. The measured loop runs inside
``itertools.starmap`` so that callgrind can count it alone
(``--toggle-collect=starmap_next``); divide the total by N.

``--intake --stub-lifecycle`` keeps everything around the order's lifecycle
and drops the lifecycle itself: each request is journaled as
``Pipeline.handle`` journals it, then answered with two ready-made execution
reports (sent, stamped and journaled as real ones are), and nothing is
validated, checked, routed or tracked. Its cost is what a per-order
lifecycle in C would leave of the figure (see docs/benchmarks.md).

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
from engine.messages import ExecType, request_decoder  # noqa: E402
from engine.orders import execution_report  # noqa: E402
from engine.service import EngineService  # noqa: E402

SIM_NS_PER_ORDER = 20_000
BATCH = 10


class _Session:
    """Stands in for an intake session: stamps, encodes and journals what it is sent
    (through the recorder the handler gives it, ``sent_recorder``, asked at its first
    send, as ``engine.intake.Session.send`` does)."""

    session_id, principal, client_name, dropped = "S1", "", "profile", False

    def __init__(self, handler):
        self.sent = 0
        self._handler = handler
        self._record = None
        self._encoder = msgspec.msgpack.Encoder()

    def send(self, msg) -> int:
        self.sent += 1
        frame = self._encoder.encode(msgspec.structs.replace(msg, seq=self.sent))
        if self._record is None:
            self._record = self._handler.sent_recorder(self)
        self._record(frame)
        return self.sent


class _ManualClock:
    """The venues' clock, moved by hand."""

    def __init__(self, t: int):
        self.t = t

    def now(self) -> int:
        return self.t

    def wall_delay(self, ts: int) -> float:
        return 1.0


def _config(work: Path, extra_toml: str = ""):
    # bench_e2e's engine, quieter; its endpoint is bound but never used.
    text = engine_config("tcp://127.0.0.1:0", work, extra_toml).replace('level = "INFO"',
                                                                         'level = "WARNING"')
    return parse_config(text, base_dir=work, source="profile_pipeline")


async def start_by_hand(cfg) -> tuple[EngineService, _Session]:
    """The real service of ``cfg``, started in-process with its venues' wall-clock pacing
    stopped (simulated time moves only when :func:`run` or :func:`settle` moves it), and a
    stand-in session to hand requests from."""
    service = EngineService(cfg)
    await service.start()
    await service.venues.stop()  # no pacing task: simulated time moves only by hand
    service.venues.clock = _ManualClock(service.venues.market.now)
    return service, _Session(service.pipeline)


def settle(pipe, venues, sim_ns: int) -> None:
    """Move simulated time ``sim_ns`` on, let the venues answer, pump the router and flush
    what was journaled and sent: the end of a wake-up."""
    venues.clock.t += sim_ns
    venues.catch_up()
    while pipe._pump_scheduled:
        pipe._deferred_pump()
    pipe.flush(lambda: None)


def run(pipe, venues, session, requests, batch: int = BATCH) -> None:
    """Hand ``requests`` to the pipeline in batches, as intake would, moving time by hand."""
    for k in range(0, len(requests), batch):
        for request in requests[k:k + batch]:
            pipe.handle(session, request)
        settle(pipe, venues, SIM_NS_PER_ORDER * batch)


def run_intake(intake, listener, venues, pipe, client, frames, batch: int = BATCH) -> None:
    """As :func:`run`, through intake: each batch is sent, drained, answered and read back."""
    socket = listener.socket
    for k in range(0, len(frames), batch):
        sending = frames[k:k + batch]
        for frame in sending:
            client.send(frame, copy=False)
        handled = 0
        while handled < len(sending):
            socket.poll(1000)
            before = intake.messages_read
            intake._drain(listener)
            handled += intake.messages_read - before
        venues.clock.t += SIM_NS_PER_ORDER * batch
        venues.catch_up()
        while pipe._pump_scheduled:
            pipe._deferred_pump()
        intake._flush()
        while client.poll(0):
            client.recv(copy=False)


def stub_lifecycle(pipe) -> None:
    """Replace ``pipe.handle`` by the journaling and answering around a lifecycle (see the
    module docstring): the command's record, then a NEW and a FILL report of one fixed order."""
    order = pipe.orders.create("stub", "-", pipe.risk.accounts[0], pipe.symbols[0], 1, 2, 0,
                               100, 1, time.time_ns())
    inst = pipe.instruments[order.symbol]
    answers = (execution_report(order, inst, ExecType.NEW),
               execution_report(order, inst, ExecType.FILL, last_qty=1, last_px_x2=200))

    def handle(session, request, positions=None, held=(), encoded=None) -> None:
        pipe.sessions[session.session_id] = session
        pipe._journal_command(session, request, time.time_ns(), encoded)
        for report in answers:
            session.send(report)

    pipe.handle = handle


async def main(n: int, sort: str | None, through_intake: bool = False, batch: int = BATCH,
               stub: bool = False) -> dict:
    service, session = await start_by_hand(
        _config(Path(tempfile.mkdtemp(prefix="kronos-profile-"))))
    if stub:
        stub_lifecycle(service.pipeline)
    venues, pipe = service.venues, service.pipeline
    decode = request_decoder().decode
    profile = cProfile.Profile() if sort else None
    if through_intake:
        import zmq
        intake = service.intake
        listener = intake._listeners[0]
        asyncio.get_running_loop().remove_reader(listener.socket.getsockopt(zmq.FD))
        client = zmq.Context.instance().socket(zmq.DEALER)
        handshake = client.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        client.connect(intake.plaintext_endpoints[0])
        # The handshake waits for intake's ZAP handler, which runs on this loop;
        # run_intake below never yields to it.
        while not handshake.poll(0):
            await asyncio.sleep(0.001)
        client.disable_monitor()
        handshake.close()
        args = (intake, listener, venues, pipe, client)
        run_intake(*args, encoded_orders(2_000, "warm"))
        frames, runner = encoded_orders(n, "p"), run_intake
        sent = intake.frames_sent
    else:
        run(pipe, venues, session, [decode(m) for m in encoded_orders(2_000, "warm")])
        args, frames, runner = (pipe, venues, session), [decode(m) for m in encoded_orders(n, "p")], run
        sent = session.sent
    cpu = time.process_time()
    if profile:
        profile.enable()
    collections.deque(itertools.starmap(runner, [(*args, frames, batch)]), 0)
    if profile:
        profile.disable()
    cpu = time.process_time() - cpu
    if through_intake:
        client.close(linger=0)
        messages = intake.frames_sent - sent
    else:
        messages = session.sent - sent
    if profile:
        pstats.Stats(profile).sort_stats(sort).print_stats(40)
    figures = {"orders": n, "us_per_order_cpu": round(cpu / n * 1e6, 1),
               "messages_per_order": round(messages / n, 2), "intake": through_intake,
               "batch": batch, "stub_lifecycle": stub}
    await service.stop()
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=5_000, help="orders measured")
    parser.add_argument("--intake", action="store_true",
                        help="send the orders through the engine's intake over a real socket")
    parser.add_argument("--cprofile", metavar="SORT", help="print a cProfile sorted by SORT")
    parser.add_argument("--batch", type=int, default=BATCH,
                        help=f"orders per wake-up (default {BATCH}); 1 is an engine at a low "
                             f"rate, where every order pays a whole wake-up")
    parser.add_argument("--stub-lifecycle", action="store_true",
                        help="with --intake: answer each request with two ready-made reports "
                             "instead of running the order's lifecycle")
    args = parser.parse_args()
    if args.stub_lifecycle and not args.intake:
        parser.error("--stub-lifecycle needs --intake")
    result = uvloop.run(main(args.n, args.cprofile, args.intake, args.batch, args.stub_lifecycle))
    print(f"{result['orders']} orders: {result['us_per_order_cpu']} µs CPU per order, "
          f"{result['messages_per_order']} messages per order")
    print(json.dumps(result))
