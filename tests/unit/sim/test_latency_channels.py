"""Reports from two venues made by one operation each take their own venue's latency.

Audit (stop 33): a lit trade that moved the mid and filled the strategy's dark peg sent
reports from both venues; the second venue reused the first's latency draw (and skipped its
own channel's ordering), so the dark fill arrived on the lit venue's latency.
"""
from collections import defaultdict

from sim import Backtest


def test_two_venues_in_one_operation_draw_their_own_latencies():
    result = Backtest(None, strategy="passive_aggressive",
                      params={"dark_fraction": 0.5, "passive_fraction": 0.8}, seed=10).run()
    fills = result.fills
    at = defaultdict(dict)
    for k in range(len(fills["child_id"])):
        at[fills["venue_ts"][k]].setdefault(fills["venue"][k], set()).add(
            fills["recv_ts"][k] - fills["venue_ts"][k])
    shared = {ts: venues for ts, venues in at.items() if len(venues) > 1}
    assert shared, "seed 10 has an operation that fills at two venues"
    for venues in shared.values():
        delays = [d for per_venue in venues.values() for d in per_venue]
        assert len(set(delays)) == len(delays), venues
    # Each venue's channel keeps its order: reports arrive in the order the venue sent them.
    for venue in set(fills["venue"]):
        rows = sorted((ts, recv) for ts, recv, v in zip(fills["venue_ts"], fills["recv_ts"],
                                                       fills["venue"]) if v == venue)
        assert all(a[1] <= b[1] for a, b in zip(rows, rows[1:])), venue
