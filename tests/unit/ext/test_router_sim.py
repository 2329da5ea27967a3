"""Integration: the router driving the simulator's venues on simulated time.

The glue (``SimVenues``) lives here, in the tests, on purpose: ``ext.router``
knows nothing of ``sim`` and ``sim`` nothing of the router; the engine
pipeline does its own wiring. The glue copies each lit venue's depth, fees,
latency and session state into the router, sends the router's actions with
``sim.Market.submit/cancel/replace``, and hands every venue report back to the
router. Reports arrive inside ``Market.run_until``, which must not be
re-entered, so new actions go out only after it returns.

Runs are deterministic: the default configuration's seeded flow, or the quiet market of
``tests/unit/sim/helpers.py`` (no background flow) where a test places every order itself.
"""
import pytest

from ext.router import (
    ACT_CANCEL, ACT_NEW, ACT_REPLACE, CF_MID_PEG, CF_POST_ONLY, ROLE_DARK, ROLE_POST, ROLE_SWEEP,
    STRAT_DARK_FIRST, STRAT_SWEEP, STRAT_TWAP, Router,
)
from ext.simloop import ReportKind
from ext.types import CancelReason, OrdStatus, Side, StpMode, TimeInForce as T

sim = pytest.importorskip("sim")

MS = 1_000_000
SYMBOL = "AAA"


class SimVenues:
    """The simulator's venues as the router sees them (one instrument, index 0)."""

    def __init__(self, market=None):
        if market is None:
            market = sim.Market(sim.load_config())
            market.run_until(market.session_start)
        self.market = m = market
        self.router = Router(len(m.venues), n_instruments=1, max_levels=10)
        for info in m.venues:
            maker_pl, taker_pl, maker_cb, taker_cb = m.fee_rates(info.index, SYMBOL)
            self.router.set_venue(info.index, dark=info.dark, maker_fee=maker_pl,
                                  taker_fee=taker_pl, maker_cbps=maker_cb, taker_cbps=taker_cb,
                                  latency_ns=int(info.latency_us * 1000))
        self.child_of = {}              # sim id -> router child id
        self.sim_of = {}                # router child id -> sim id
        self.reports = []               # every report handed to the router
        self.sent = []                  # every action sent
        self.scope = {}                 # parent id -> (account, stp) its children carry
        self.publish()

    @property
    def now(self):
        return self.market.now

    def publish(self):
        m = self.market
        for info in m.venues:
            self.router.set_open(info.index, m.is_open(info.index))
            if not info.dark:
                bids, asks = m.depth(info.index, SYMBOL, 10)
                assert self.router.update_book(0, info.index, bids, asks) == 0

    def depth(self):
        """Ask and bid levels of every lit venue now: {venue: (bids, asks)} as lists."""
        out = {}
        for info in self.market.lit_venues():
            bids, asks = self.market.depth(info.index, SYMBOL, 10)
            out[info.index] = ([(int(p), int(q)) for p, q in zip(bids["price"], bids["qty"])],
                               [(int(p), int(q)) for p, q in zip(asks["price"], asks["qty"])])
        return out

    def _on_report(self, report):
        r, now = self.router, self.market.now
        cid = self.child_of.get(report.child_id)
        assert cid is not None
        self.reports.append((cid, report))
        kind = report.kind
        if kind == ReportKind.RPT_FILL:
            code = r.on_fill(cid, report.last_qty, report.price_x2, now, fee=report.fee)
        elif kind == ReportKind.RPT_ACCEPTED:
            code = r.on_ack(cid, now)
        elif kind == ReportKind.RPT_REJECTED:
            code = r.on_reject(cid, report.reason, now)
        elif kind == ReportKind.RPT_CANCELED:
            code = r.on_canceled(cid, now)
        elif kind == ReportKind.RPT_EXPIRED:
            code = r.on_expired(cid, now)
        elif kind == ReportKind.RPT_REPLACED:
            code = r.on_replaced(cid, now)
        else:
            code = r.on_replace_rejected(cid, now)
        # A report after the router retired the child (e.g. a cancel racing a
        # fill that completed it) is the only acceptable refusal.
        assert code == 0 or (kind != ReportKind.RPT_FILL and code == 1)

    def send(self, actions=None):
        m = self.market
        for a in self.router.drain_actions() if actions is None else actions:
            self.sent.append(a)
            cid, kind = int(a["child_id"]), int(a["kind"])
            if kind == ACT_NEW:
                # As the engine does: the parent's account and STP mode (default: the
                # venue's) go with each child, so that venue STP compares accounts.
                account, stp = self.scope.get(int(a["parent_id"]), (1000, -1))
                sim_id = m.submit(int(a["venue"]), SYMBOL, int(a["side"]), int(a["qty"]),
                                  int(a["price"]), int(a["ord_type"]), int(a["tif"]),
                                  bool(a["flags"] & CF_POST_ONLY), account=account, stp=stp,
                                  on_report=self._on_report)
                self.child_of[sim_id] = cid
                self.sim_of[cid] = sim_id
            elif kind == ACT_CANCEL:
                m.cancel(self.sim_of[cid])
            elif kind == ACT_REPLACE:
                m.replace(self.sim_of[cid], int(a["price"]), int(a["qty"]))

    def run(self, until):
        """Advance to ``until`` in 1 ms steps: reports in, fresh books, tick, actions out."""
        while self.market.now < until:
            self.market.run_until(min(self.market.now + MS, until))
            self.publish()
            self.router.tick(self.market.now)
            self.send()


def fills_of(venues, parent_children):
    return [(cid, rep) for cid, rep in venues.reports
            if rep.kind == ReportKind.RPT_FILL and cid in parent_children]


def test_sweep_on_the_simulator_balances_and_never_trades_through():
    v = SimVenues()
    before = v.depth()
    bid, ask = v.market.nbbo(SYMBOL)
    limit = ask + 3
    # More than the best price shows across all venues: several venues, several levels.
    qty = sum(q for _, asks in before.values() for p, q in asks if p == ask) + 1500
    assert v.router.route(1, 0, Side.BUY, qty, limit, v.now, STRAT_SWEEP, T.IOC) == 0
    first = v.router.drain_actions()
    news = first[first["kind"] == ACT_NEW]
    assert len(news) >= 2 and (news["role"] == ROLE_SWEEP).all() and (news["price"] <= limit).all()
    assert int(news["price"].max()) > ask and int(news["qty"].sum()) == qty
    # No trade-through in the decision: every displayed ask better than the
    # worst price sent is taken in full by the children.
    worst = int(news["price"].max())
    sent = {int(a["venue"]): int(a["qty"]) for a in news}
    for venue, (_, asks) in before.items():
        better = sum(q for p, q in asks if p < worst)
        assert sent.get(venue, 0) >= better
    # Execute them, and whatever the router re-routes, on the simulator.
    v.send(first)
    v.run(v.now + 200 * MS)
    rec = v.router.drain_finished()
    assert len(rec) == 1
    rec = rec[0]
    children = {int(a["child_id"]) for a in v.sent}
    fills = fills_of(v, children)
    cum = sum(rep.last_qty for _, rep in fills)
    assert rec["cum_qty"] == cum > 0 and rec["status"] in (OrdStatus.FILLED, OrdStatus.CANCELED)
    assert rec["notional_x2"] == sum(rep.last_qty * rep.price_x2 for _, rep in fills)
    assert rec["fees"] == sum(rep.fee for _, rep in fills)
    assert rec["avg_px_num"] * 2 * cum == rec["avg_px_den"] * rec["notional_x2"]
    assert all(rep.price_x2 <= 2 * limit for _, rep in fills)
    assert (rec["arr_bid_px"], rec["arr_ask_px"]) == (bid, ask)
    assert sum(rec["venue_filled"]) == cum


def test_dark_first_then_lit_on_the_simulator():
    v = SimVenues()
    dark = [info.index for info in v.market.dark_venues()]
    assert dark
    bid, ask = v.market.nbbo(SYMBOL)
    assert v.router.route(2, 0, Side.SELL, 6000, bid - 2, v.now, STRAT_DARK_FIRST, T.IOC) == 0
    v.send()
    first = v.sent[0]
    assert int(first["venue"]) in dark and first["flags"] & CF_MID_PEG
    assert first["role"] == ROLE_DARK and int(first["qty"]) == 6000
    v.run(v.now + 300 * MS)
    rec = v.router.drain_finished()[0]
    children = {int(a["child_id"]) for a in v.sent}
    fills = fills_of(v, children)
    assert rec["cum_qty"] == sum(rep.last_qty for _, rep in fills)
    assert rec["notional_x2"] == sum(rep.last_qty * rep.price_x2 for _, rep in fills)
    # Lit children went out only once the dark ping had come back.
    ping_end = max(rep.recv_ts for cid, rep in v.reports if cid == int(first["child_id"]))
    lit = [a for a in v.sent if a["kind"] == ACT_NEW and int(a["venue"]) not in dark]
    dark_filled = sum(rep.last_qty for cid, rep in fills if cid == int(first["child_id"]))
    assert 0 < dark_filled < 6000 and lit                   # the pool had some, not all
    assert all(int(a["ts"]) >= ping_end for a in lit)
    assert int(lit[0]["qty"]) + sum(int(a["qty"]) for a in lit[1:] if a["ts"] == lit[0]["ts"]) \
        == 6000 - dark_filled                               # the first lit round: the rest
    assert any(rep.price_x2 % 2 for _, rep in fills)       # a midpoint fill between ticks
    assert rec["cum_qty"] <= 6000 and all(rep.price_x2 >= 2 * (bid - 2) for _, rep in fills)


def test_twap_on_simulated_time():
    v = SimVenues()
    start = v.now
    end = start + 6_000 * MS
    bid, ask = v.market.nbbo(SYMBOL)
    assert v.router.route(3, 0, Side.BUY, 600, ask + 20, v.now, STRAT_TWAP, T.DAY,
                          end_ns=end, slices=6) == 0
    v.send()
    v.run(end + 500 * MS)
    news = [a for a in v.sent if a["kind"] == ACT_NEW]
    # The first child of each slice goes out on the first tick at or after the
    # slice start (ticks are 1 ms apart here), never before it.
    slice_ns = (end - start) // 6
    starts = sorted({(int(a["ts"]) - start) // slice_ns for a in news})
    assert starts == [0, 1, 2, 3, 4, 5]
    for k in range(6):
        sent_by = sum(int(a["qty"]) for a in news if int(a["ts"]) < start + (k + 1) * slice_ns)
        assert sent_by <= 100 * (k + 1)           # never ahead of the schedule
    rec = v.router.drain_finished()
    assert len(rec) == 1 and rec[0]["status"] == OrdStatus.FILLED and rec[0]["cum_qty"] == 600


def test_a_sweep_meeting_its_own_resting_order_under_cancel_oldest_reaches_the_next_level():
    """The audit's case on the simulator's venues (no background flow): our account rests a
    buy of 100 at 50.00, a third party bids 49.99 for 100 on the same venue, and the same
    account sells 100 IOC limit 49.99 under CANCEL_OLDEST. The venue cancels our resting buy
    and the child, priced at 49.99 and not at 50.00, takes the third party's bid."""
    from tests.unit.sim.helpers import BUY, add, quiet_market   # (needs sim: imported here)
    v = SimVenues(quiet_market())
    oldest = int(StpMode.CANCEL_OLDEST)
    v.scope[1] = v.scope[2] = (1001, oldest)
    assert v.router.route(1, 0, Side.BUY, 100, 5000, v.now, tif=T.DAY, stp_account=1001,
                          stp=oldest) == 0
    v.send()
    post = v.sent[-1]
    assert (post["role"], int(post["price"])) == (ROLE_POST, 5000)
    venue = int(post["venue"])
    v.run(v.now + 2 * MS)
    assert v.router.live_children(1)[0]["acked"]
    add(v.market, v.market.venues[venue].name, 1, BUY, 4999, 100, account=1)
    v.publish()
    assert v.router.depth(0, venue)[0] == [(5000, 100), (4999, 100)]
    assert v.router.route(2, 0, Side.SELL, 100, 4999, v.now, tif=T.IOC, stp_account=1001,
                          stp=oldest) == 0
    v.send()
    sweep = v.sent[-1]
    assert (int(sweep["venue"]), int(sweep["price"]), int(sweep["qty"]), sweep["role"]) == \
        (venue, 4999, 100, ROLE_SWEEP)
    v.run(v.now + 3 * MS)
    rec = {int(r["parent_id"]): r for r in v.router.drain_finished()}
    assert rec[2]["status"] == OrdStatus.FILLED and rec[2]["cum_qty"] == 100
    assert (rec[2]["avg_px_num"], rec[2]["avg_px_den"]) == (4999, 1)
    own = [rep for cid, rep in v.reports if cid == int(post["child_id"])
           and rep.kind == ReportKind.RPT_CANCELED]
    assert [rep.reason for rep in own] == [CancelReason.CXL_SELF_TRADE]
