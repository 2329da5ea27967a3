"""The engine's tick looks only at the instruments whose market changed (Pipeline.tick).

An unchanged instrument's reference is kept fresh by one ``market_checked`` per
tick instead of a stamp per instrument, so risk must accept and refuse exactly
as when every instrument was stamped at every tick: each test drives the real
pipeline on the embedded simulator (no background flow) and probes risk with a
market order, which needs the reference, without the order path's own refresh.
"""
import random
import time
from pathlib import Path

import pytest
import uvloop

from benchmarks.bench_e2e import engine_config
from benchmarks.profile_pipeline import start_by_hand
from benchmarks.profile_tick import sim_text
from engine.config import parse_config
from ext.book import OP_ADD, OP_CANCEL
from ext.risk import RiskEngine
from ext.types import OrdType, RejectReason as R, Side

MS = 1_000_000
AGE = 5_000 * MS            # risk's default max_reference_age_ms
LIT = ("NEXA", "BRIX", "COVE")
MID = 5000                  # 50.00 in ticks


def run_with_engine(n, test, tmp_path):
    """``test(pipe, market)`` on a started engine over a quiet market of ``n`` instruments."""
    async def main():
        sim = Path(tmp_path) / "sim.toml"
        sim.write_text(sim_text(n))
        text = engine_config("tcp://127.0.0.1:0", Path(tmp_path)).replace(
            'level = "INFO"', 'level = "WARNING"').replace("[sim]\n",
                                                           f'[sim]\nconfig = "{sim}"\n')
        service, _ = await start_by_hand(parse_config(text, base_dir=str(tmp_path),
                                                      source="test_tick_market"))
        try:
            test(service.pipeline, service.venues.market)
        finally:
            await service.stop()
    uvloop.run(main())


class Quotes:
    """Background orders placed and taken out on the lit books, by hand."""

    def __init__(self, market):
        self.market, self.next_id, self.resting = market, 1, []

    def add(self, k, venue, side, price, qty=10):
        self.next_id += 1
        self.market.loop.external(self.market.book_index(venue, f"I{k}"), OP_ADD, self.next_id,
                                  side, price, qty)
        self.resting.append((k, venue, self.next_id))
        return self.next_id

    def cancel(self, k, venue, order_id):
        self.market.loop.external(self.market.book_index(venue, f"I{k}"), OP_CANCEL, order_id)


class Probe:
    """Asks a risk engine whether a market buy of one lot in instrument ``ix`` passes now,
    and takes it out again: (reason, the reject's value: the reference's age when stale)."""

    def __init__(self, risk):
        self.risk, self.key = risk, 10**9
        self.session, self.account = risk.session_index("probe"), risk.account_index("BENCH")

    def __call__(self, ix, now):
        self.key += 1
        reason = self.risk.check_new(self.key, self.session, self.account, ix, Side.BUY,
                                     OrdType.MARKET, 1, 0, 0, self.key, now)
        if reason:
            return int(reason), self.risk.last_reject()["value"]
        self.risk.on_cancel(self.key)
        return 0, 0


def quote_all(quotes, n):
    for k in range(n):
        quotes.add(k, "NEXA", Side.BUY, MID - 10)
        quotes.add(k, "NEXA", Side.SELL, MID + 10)


def test_a_changed_book_gives_risk_its_new_reference_at_the_next_tick(tmp_path):
    def test(pipe, market):
        quotes = Quotes(market)
        quote_all(quotes, 3)
        t = time.time_ns()
        pipe.tick(t)
        assert pipe._references == [MID] * 3
        quotes.add(1, "BRIX", Side.BUY, MID + 4)   # a better bid in I1 only
        pipe.tick(t + 50 * MS)
        assert pipe._references == [MID, MID + 7, MID]
        assert pipe.risk.snapshot()["instrument_state"][1][:2] == [MID + 7, t + 50 * MS]
        # Its router view too: every lit book's depth copied as of its last change.
        assert all(pipe._book_seqs[k][v] == market.loop.book(market.book_index(v, f"I{k}")).seq
                   for k in range(3) for v in range(3))
    run_with_engine(3, test, tmp_path)


def test_an_unchanged_two_sided_quote_stays_fresh_without_a_stamp_each(tmp_path):
    def test(pipe, market):
        quote_all(Quotes(market), 2)
        probe = Probe(pipe.risk)
        t = time.time_ns()
        pipe.tick(t)
        for step in range(1, 5):                   # 8 s without a quote change
            pipe.tick(t + step * 2_000 * MS)
        last = t + 8_000 * MS
        assert probe(0, last + AGE) == (0, 0)
        assert probe(1, last + AGE + 1) == (R.STALE_REFERENCE_PRICE, AGE + 1)
        assert pipe.risk.snapshot()["instrument_state"][0][1] == last
    run_with_engine(2, test, tmp_path)


def test_a_quote_turned_one_sided_ages_from_the_last_tick_that_saw_it_two_sided(tmp_path):
    def test(pipe, market):
        quotes = Quotes(market)
        quotes.add(0, "NEXA", Side.BUY, MID - 10)
        ask = quotes.add(0, "NEXA", Side.SELL, MID + 10)
        probe = Probe(pipe.risk)
        t = time.time_ns()
        pipe.tick(t)
        pipe.tick(t + 1_000 * MS)                  # two-sided: fresh as of 1 s
        quotes.cancel(0, "NEXA", ask)              # bid only from here on
        # Before the next tick, as after it: as of 1 s.
        assert probe(0, t + 1_000 * MS + AGE + 1) == (R.STALE_REFERENCE_PRICE, AGE + 1)
        for step in range(2, 9):
            pipe.tick(t + step * 1_000 * MS)
        assert probe(0, t + 1_000 * MS + AGE) == (0, 0)
        assert probe(0, t + 1_000 * MS + AGE + 1) == (R.STALE_REFERENCE_PRICE, AGE + 1)
        # Two-sided again: fresh from the tick that sees it.
        quotes.add(0, "COVE", Side.SELL, MID + 20)
        pipe.tick(t + 20_000 * MS)
        pipe.tick(t + 30_000 * MS)
        assert probe(0, t + 30_000 * MS + AGE) == (0, 0)
        assert pipe._references[0] == MID + 5
    run_with_engine(1, test, tmp_path)


@pytest.mark.parametrize("seed", range(4))
def test_risk_decides_as_when_every_tick_stamped_every_instrument(tmp_path, seed):
    """Random quote changes (added, canceled, crossed into fills, venues closed and
    opened), ticks, order-path refreshes and clock steps; after each, every instrument
    is probed on the pipeline's risk and on a twin driven by the old loop (a stamp per
    two-sided instrument per tick). They must give the same answers, and the pipeline
    must have told the router every lit book's change and all printed volume."""
    n = 6

    def test(pipe, market):
        rng = random.Random(seed)
        quotes = Quotes(market)
        quote_all(quotes, n)
        old = RiskEngine(pipe.risk.config)
        new_probe, old_probe = Probe(pipe.risk), Probe(old)
        loop = market.loop

        def old_refresh(ix, now):
            bid, ask = loop.nbbo(pipe._market_ix[ix])
            if bid and ask:
                old.set_reference_price(ix, (bid + ask) // 2, now)

        now = time.time_ns() + 1_000 * MS
        for _ in range(400):
            action = rng.random()
            if action < 0.35:                          # a quote comes or goes
                k, venue = rng.randrange(n), rng.choice(LIT)
                mine = [r for r in quotes.resting if r[0] == k]
                if mine and rng.random() < 0.3:
                    entry = rng.choice(mine)
                    quotes.resting.remove(entry)
                    quotes.cancel(*entry)
                else:                                   # one in ten crosses: fills, volume
                    side = rng.choice((Side.BUY, Side.SELL))
                    away = rng.randrange(1, 20) * (-1 if side == Side.BUY else 1)
                    quotes.add(k, venue, side, MID + (-away if rng.random() < 0.1 else away),
                               rng.randrange(1, 30))
            elif action < 0.40:                        # a venue closes or opens
                v = rng.randrange(3)
                if loop.is_open(v):
                    loop.set_session(v, loop.now + 10**12, loop.now + 2 * 10**12)
                else:
                    loop.set_session(v, loop.now, loop.now + 10**15)
            elif action < 0.55:                        # an order's own refresh
                ix = rng.randrange(n)
                pipe.refresh_market(ix, now)
                old_refresh(ix, now)
            else:                                       # a tick
                pipe.tick(now)
                for ix in range(n):
                    old_refresh(ix, now)
                for ix in range(n):
                    assert pipe._volume_seen[ix] == market.market_volume(f"I{ix}")[0]
                    assert all(pipe._book_seqs[ix][v] == loop.book(
                        market.book_index(v, f"I{ix}")).seq for v in range(3))
            # Time moves on (now and then past the age limit, or back a little).
            now += rng.choice((0, 1, 50 * MS, 50 * MS, 50 * MS, 2_000 * MS, AGE, -30 * MS))
            at = now + rng.choice((0, 1_000 * MS, AGE - 1, AGE, AGE + 1))
            for ix in range(n):
                assert new_probe(ix, at) == old_probe(ix, at), (ix, at - now)
    run_with_engine(n, test, tmp_path)
