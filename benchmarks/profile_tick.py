"""CPU time of the service's tick (``Pipeline.tick``, every 50 ms at most) by instruments.

    .venv/bin/python benchmarks/profile_tick.py [N ...]

For each N, builds the real service in-process (as ``profile_pipeline.py``
does) on a quiet simulated market of N instruments (the test market's
venues, no background flow) where each lit book holds one bid and one ask
that do not move, then times ``Pipeline.tick`` a few hundred times: the
cost of a tick when nothing changed. ``--changed K``: before each tick, K
instruments' books change (a deep bid added, the quote as it was), so the
tick has K instruments to look at. The last line is a JSON object of the
figures (microseconds per tick by N).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_e2e import engine_config  # noqa: E402
from benchmarks.profile_pipeline import run, settle, start_by_hand  # noqa: E402
from engine.config import parse_config  # noqa: E402
from engine.messages import NewOrder  # noqa: E402
from ext.book import OP_ADD  # noqa: E402

QUIET_SIM = Path(__file__).resolve().parents[1] / "tests/integration/configs/quiet_sim.toml"
TICKS = 200


def sim_text(n: int) -> str:
    """The quiet test market with ``n`` instruments (``I0``, ``I1``, ...) for its two."""
    text = QUIET_SIM.read_text()
    instruments = "".join(f'[[instruments]]\nsymbol = "I{k}"\ntick_size = "0.01"\n'
                          f'lot_size = "1"\nprice = "50.00"\nvolatility = 0.0\nmodel = "gbm"\n\n'
                          for k in range(n))
    text = re.sub(r"(\[\[instruments\]\].*?\n\n)+", lambda m: instruments, text, count=1,
                  flags=re.S)
    return re.sub(r'symbol = "(AAA|BBB)"', 'symbol = "I0"', text)  # (the backtest's parents)


async def tick_cost(n: int, changed: int = 0) -> float:
    """Microseconds of CPU per tick with ``n`` instruments, ``changed`` of whose books
    change before each tick (the others do not move)."""
    with tempfile.TemporaryDirectory() as work:
        sim = Path(work) / "sim.toml"
        sim.write_text(sim_text(n))
        text = engine_config("tcp://127.0.0.1:0", Path(work)).replace(
            'level = "INFO"', 'level = "WARNING"').replace("[sim]\n", f'[sim]\nconfig = "{sim}"\n')
        service, session = await start_by_hand(parse_config(text, base_dir=work,
                                                            source="profile_tick"))
        try:
            pipe, venues = service.pipeline, service.venues
            # One resting bid and ask per instrument: a two-sided quote, which never moves.
            run(pipe, venues, session, [
                NewOrder(cl_ord_id=f"q{k}{side}", account="BENCH", symbol=f"I{k}", side=side,
                         qty="1", price="49.00" if side == 1 else "51.00", time_in_force=1,
                         locate=side != 1)
                for k in range(n) for side in (1, 5)])
            settle(pipe, venues, 10**9)
            now = time.time_ns()
            pipe.tick(now)
            assert all(pipe._references), "an instrument without a two-sided quote"
            market = venues.market
            spent, order_id = 0.0, 0
            for i in range(TICKS):
                for _ in range(min(changed, n)):
                    order_id += 1
                    market.loop.external(market.book_index(0, f"I{order_id % n}"), OP_ADD,
                                         order_id, 1, 4800, 1)
                cpu = time.thread_time()
                pipe.tick(now + i * 50_000_000)
                spent += time.thread_time() - cpu
            return spent / TICKS * 1e6
        finally:
            await service.stop()


async def main(sizes: list[int], changed: int = 0) -> dict:
    return {str(n): round(await tick_cost(n, changed), 1) for n in sizes}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="*", type=int, default=[1, 100, 10_000])
    parser.add_argument("--changed", type=int, default=0,
                        help="instruments whose book changes before each tick")
    args = parser.parse_args()
    print(json.dumps({"us_per_tick_cpu": uvloop.run(main(args.n, args.changed)),
                      "changed_per_tick": args.changed}))
