"""The venues in real time on the asyncio loop: the API the engine and the router use."""
import asyncio
import time

from ext.simloop import ReportKind as K
from sim.realtime import RealtimeVenues
from tests.unit.sim.helpers import BUY, IOC, LIMIT, SMALL, config


def test_child_order_round_trip_in_real_time():
    async def main():
        venues = RealtimeVenues(config(SMALL), speed=1.0, tick=0.001)
        async with venues:
            assert venues.running
            table = venues.venue_table("AAA")
            assert [r["venue"] for r in table] == ["FAST", "BPS", "INV", "POOL"]
            assert table[3]["dark"] and table[3]["bid_px"] == 0
            assert table[0]["taker_per_lot"] == 3000 and table[1]["taker_cbps"] == 25
            bid, ask = venues.nbbo("AAA")
            assert 0 < bid < ask
            wall = time.monotonic()
            sent = venues.now()
            child = venues.submit("FAST", "AAA", BUY, 1, ask + 5, LIMIT, IOC)   # to the queue
            first = await asyncio.wait_for(venues.reports.get(), 2.0)
            elapsed = time.monotonic() - wall
            assert first.child_id == child and first.kind == K.RPT_ACCEPTED
            # Fixed 100 us each way, on the simulated clock that follows the wall.
            assert first.recv_ts - first.ts == 100_000
            assert first.ts >= sent + 100_000
            assert elapsed < 0.5
            second = await asyncio.wait_for(venues.reports.get(), 2.0)
            assert second.kind in (K.RPT_FILL, K.RPT_CANCELED)
            got = []
            done = asyncio.Event()

            def on_report(r):
                got.append(r)
                if r.leaves_qty == 0:
                    done.set()
            venues.submit("POOL", "AAA", BUY, 1, 0, LIMIT, IOC, on_report=on_report)
            await asyncio.wait_for(done.wait(), 2.0)
            assert got[0].kind == K.RPT_ACCEPTED and got[-1].leaves_qty == 0
            assert venues.latency("FAST") == (200_000.0, 200_000.0, 1)
            assert venues.venue_table("AAA")[0]["latency_us"] == 200.0
            assert venues.market.now > venues.start_ns
        assert not venues.running
    asyncio.run(main())


def test_a_report_callback_may_send_the_next_order():
    async def main():
        venues = RealtimeVenues(config(SMALL), speed=1.0, tick=0.001, duration="2s")
        chain = []
        finished = asyncio.Event()

        def on_report(r):
            chain.append((r.child_id, int(r.kind)))
            if r.leaves_qty == 0 and len({c for c, _ in chain}) < 3:
                # Called from inside the market's own advance: must not re-enter it.
                venues.submit("POOL", "AAA", BUY, 1, 0, LIMIT, IOC, on_report=on_report)
            elif r.leaves_qty == 0:
                finished.set()
        async with venues:
            venues.submit("POOL", "AAA", BUY, 1, 0, LIMIT, IOC, on_report=on_report)
            await asyncio.wait_for(finished.wait(), 2.0)
        ids = [c for c, _ in chain]
        assert len(set(ids)) == 3 and ids == sorted(ids)
        assert all(k in (K.RPT_ACCEPTED, K.RPT_FILL, K.RPT_CANCELED) for _, k in chain)
    asyncio.run(main())


def test_stop_after_the_clock_died_of_an_error_does_not_raise(caplog):
    """The pacing task's error came out of stop(): an engine's stop then skipped its
    intake, journal and gateways, and the process hung until kill -9."""
    async def main():
        venues = RealtimeVenues(config(SMALL), speed=1.0, tick=0.001)
        await venues.start()

        def boom():
            raise OverflowError("the clock overflowed")
        venues.catch_up = boom
        for _ in range(200):
            if not venues.running:
                break
            await asyncio.sleep(0.005)
        assert not venues.running
        await venues.stop()  # (raised OverflowError)
        assert not venues.running
    asyncio.run(main())
    assert "realtime venues: the clock stopped on an error" in caplog.text
