"""Property tests: the Cython risk core against the reference and against arithmetic.

Random sequences of new orders, fills, cancels, rejects, replaces, market
data, kill switches, day rolls and sessions released and registered (a
released slot reused by the next) run through both implementations; every
return code and reject detail must agree, the exposure state must agree after
every step, and the core's exposure must equal a recomputation from the
fills and working orders. A replay of the same calls, and a restore from a
snapshot, must give the same state.
"""
from hypothesis import HealthCheck, given, settings, strategies as st

from ext.risk import RiskEngine
from ext.types import Side
from tests.reference.risk_reference import RiskReference

CONFIG = {
    "firm": {"max_open_orders": 10, "duplicative_window_ms": 5, "throttle_rate": 4000,
             "throttle_burst": 12, "max_daily_notional": "4000", "max_reference_age_ms": 12},
    "instruments": {
        "AAPL": {"tick_size": "0.01", "lot_size": "1", "collar_bps": 150, "max_net_position": 25},
        # mult = 0.5 * 0.001 / 0.0001 = 5 money units per tick-lot
        "BTC": {"tick_size": "0.5", "lot_size": "0.001", "min_qty": "0.002", "max_order_notional": "130"},
    },
    "accounts": {
        "A1": {"cash": "3000", "credit_limit": "500", "max_open_orders": 6, "max_order_qty": 40,
               "max_daily_loss": "5"},
        "A2": {"cash": "2000", "allow_short": True, "max_gross_position": 20,
               "limits": {"AAPL": {"max_order_qty": 25, "collar_ticks": 120}}},
    },
}
MULT = {0: 100, 1: 5}


def random_ops(rng, n, market=False):
    """``n`` (op, dt_ns) pairs weighted like a busy session: mostly valid new
    orders, then fills, cancels and replaces of working ones, market data and
    now and then an admin action. Drawn from hypothesis' ``rng`` so failures
    replay and shrink. ``market``: market data also as the engine's tick gives
    it (a market reference, its loss, a market check). The clock steps back now and then
    (a ``dt`` below 0), never to before 0."""
    out = []
    clock = 0
    for _ in range(n):
        roll = rng.random()
        price = rng.randint(9800, 10200)
        if roll < 0.55:
            op = ("new", rng.choice([0, 0, 1, 2, 3]), rng.choice([0] * 6 + [1] * 6 + [2]),
                  rng.choice([0] * 6 + [1] * 6 + [2]),
                  rng.choice([Side.BUY] * 5 + [Side.SELL] * 3 + [Side.SELL_SHORT] * 2 + [3]),
                  rng.choice([1, 2, 2, 2]), rng.choice([rng.randint(1, 30)] * 12 + [0, -1]), price,
                  rng.choice([0, 1, 1, 1, 2, 3]), rng.choice([None] * 12 + [rng.randint(0, 5)]))
        elif roll < 0.75:
            op = ("fill", rng.randint(0, 8), rng.choice([rng.randint(1, 12)] * 10 + [0, 40]), price)
        elif roll < 0.83:
            op = (rng.choice(["cancel", "cancel", "reject"]), rng.randint(0, 8))
        elif roll < 0.90:
            op = ("replace", rng.randint(0, 8), rng.randint(0, 40), price,
                  rng.choice([None] * 8 + [rng.randint(0, 3)]),
                  rng.random() < 0.5)  # admitted first (the engine's way), or all in one call
        elif roll < 0.95:
            op = ("ref", rng.randint(0, 1), price)
        elif roll < 0.97:
            # S2 (index 1) and S3 let go, with or without working orders, and
            # sessions registered again: a freed slot goes to the next.
            op = rng.choice([("end", "S2"), ("end", "S3"), ("open", "S2"), ("open", "S3"),
                             ("open", "S4")])
        else:
            # Releases outnumber kills so that a sequence is not mostly dead.
            op = rng.choice([("kill", "account", "A1"), ("kill", "global", None), ("reset",), ("reload",)]
                            + [("release", "account", "A1"), ("release", "global", None)] * 3)
        if market and rng.random() < 0.2:
            instrument = rng.randint(0, 1)
            op = rng.choice([("market_ref", instrument, price), ("lost", instrument),
                             ("checked",), ("checked",)])
        dt = rng.randint(0, 3_000_000)
        if clock and rng.random() < 0.04:
            # The clock steps back (an adjustment, a replayed journal), past the
            # reference age and the duplicative window at times: never below 0.
            dt = -rng.randint(1, min(clock, 30_000_000))
        clock += dt
        out.append((op, dt))
    return out


ops = st.builds(random_ops, st.randoms(use_true_random=False), st.integers(10, 120))
market_ops = st.builds(random_ops, st.randoms(use_true_random=False), st.integers(10, 120),
                       st.just(True))


def target(engine, op, keys):
    """The order key an op acts on: a new key, or a working order picked by position."""
    if op[0] == "new":
        return len(keys) + 1
    if op[0] in ("fill", "cancel", "reject", "replace"):
        working = [k for k in keys if engine.working_order(k) is not None]
        return working[-1 - op[1] % len(working)] if working and op[1] else 10**9
    return 0


def apply(engine, op, now, keys, key):
    """Apply one op to order ``key``; returns what the call returned (plus reject detail)."""
    kind = op[0]
    if kind == "new":
        _, session, account, instrument, side, ord_type, qty, price, flags, cl = op
        keys.append(key)
        cl = key + 1_000_000 if cl is None else cl      # None: a fresh cl_ord_id
        result = engine.check_new(key, session, account, instrument, int(side), ord_type, qty, price, flags,
                                  cl, now)
    elif kind == "fill":
        return engine.on_fill(key, op[2], op[3])
    elif kind in ("cancel", "reject"):
        return engine.on_cancel(key) if kind == "cancel" else engine.on_reject(key)
    elif kind == "replace":
        cl = 2_000_000 + len(keys) if op[4] is None else op[4]
        if op[5]:
            result = engine.admit_replace(key, now) or \
                engine.on_replace(key, op[2], op[3], cl, now, admitted=True)
        else:
            result = engine.on_replace(key, op[2], op[3], cl, now)
    elif kind == "ref":
        engine.set_reference_price(op[1], op[2], now)
        return None
    elif kind == "market_ref":
        engine.set_market_reference(op[1], op[2], now)
        return None
    elif kind == "lost":
        engine.market_reference_lost(op[1])
        return None
    elif kind == "checked":
        engine.market_checked(now)
        return None
    elif kind == "kill":
        return engine.engage_kill_switch(op[1], op[2], now_ns=now, actor="t")
    elif kind == "release":
        return engine.release_kill_switch(op[1], op[2], now_ns=now, actor="t")
    elif kind == "reset":
        return engine.reset_daily(now)
    elif kind == "end":
        return engine.release_session(op[1])
    elif kind == "open":
        return engine.session_index(op[1], "S1" if op[1] == "S3" else None)
    else:
        return engine.reload(CONFIG, now)
    if result == 0:
        return 0
    detail = engine.last_reject()
    return (result, int(detail["layer"]), detail["limit"] if detail["limit"] < 2**62 else None)


def state(engine, keys):
    cells = {(a, i): engine.exposure(a, i) for a in range(2) for i in range(2)}
    accounts = {a: engine.account_state(a) for a in range(2)}
    working = {k: engine.working_order(k) for k in keys}
    return cells, accounts, {k: v for k, v in working.items() if v is not None}


def new_engines():
    core, ref = RiskEngine(CONFIG), RiskReference(CONFIG)
    for engine in (core, ref):
        engine.session_index("S1")
        engine.session_index("S2")
        engine.session_index("S3", "S1")           # shares S1's throttle bucket
        engine.set_reference_price(0, 10000, 0)
        engine.set_reference_price(1, 10000, 0)
    return core, ref


def check_recomputed(core, fills, keys):
    """The core's exposure equals one recomputed from fills and working orders."""
    cells, accounts, working = state(core, keys)
    for (a, i), cell in cells.items():
        mine = [w for w in working.values() if (w["account"], w["instrument"]) == (a, i)]
        assert cell["position"] == sum(q for (fa, fi, q) in fills if (fa, fi) == (a, i))
        assert cell["open_buy"] == sum(w["leaves"] for w in mine if w["side"] == Side.BUY)
        assert cell["open_sell"] == sum(w["leaves"] for w in mine if w["side"] != Side.BUY)
        assert cell["open_orders"] == len(mine)
    for a, money in accounts.items():
        mine = [w for w in working.values() if w["account"] == a]
        value = lambda w: w["leaves"] * w["value_price"] * MULT[w["instrument"]]  # noqa: E731
        assert money["reserved"] == sum(value(w) for w in mine if w["side"] != Side.SELL)
        assert money["open_notional"] == sum(value(w) for w in mine)
        assert money["open_orders"] == len(mine)
    assert core.n_working == len(working)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(market_ops, st.integers(0, 130))
def test_core_matches_reference_and_recomputation(sequence, cut):
    """After step ``cut``, a core restored from the core's snapshot runs beside it and
    must answer every step alike, and its snapshots equal the core's.

    A restored reference is as of its time, no longer the market's: ``market_checked``
    vouches only for the quotes its caller looked at, and a restore's caller (a new
    process, at recovery) has looked at none. So, as the engine's first tick looks at
    every instrument before its check, the market's quotes are given again (the
    reference model says which) at the first check after the restore; from there the
    restored core must keep them as fresh as the core does."""
    core, ref = new_engines()
    core_keys, ref_keys, restored_keys = [], [], []
    restored, requote = None, False
    fills = []                                 # (account, instrument, signed qty) applied
    now = 0
    for k, (op, dt) in enumerate(sequence):
        now += dt
        if k == cut:
            restored = RiskEngine(CONFIG)
            restored.restore(core.snapshot())
            restored_keys = list(core_keys)
            requote = True
        if requote and op[0] == "checked":
            for instrument in sorted(ref.market_refs):
                restored.set_market_reference(instrument, ref.ref[instrument][0], now)
            requote = False
        key = target(core, op, core_keys)
        working = core.working_order(key)
        got = apply(core, op, now, core_keys, key)
        want = apply(ref, op, now, ref_keys, key)
        assert got == want, op
        if restored is not None:
            assert apply(restored, op, now, restored_keys, key) == got, op
            assert restored.snapshot() == core.snapshot(), op
        if op[0] == "fill" and got == 0:
            sign = 1 if working["side"] == Side.BUY else -1
            fills.append((working["account"], working["instrument"], sign * op[2]))
        assert state(core, core_keys) == state(ref, ref_keys), op
        assert core.session_names == ref.session_names, op
        # Each reference and the time it is as of (a clock step back included).
        assert [row[:2] for row in core.snapshot()["instrument_state"]] == \
            [list(ref.ref.get(i, (0, 0))) for i in range(2)], op
        check_recomputed(core, fills, core_keys)


@settings(max_examples=60, deadline=None)
@given(ops, st.integers(0, 80))
def test_replay_and_restore_rebuild_the_same_state(sequence, cut):
    first, _ = new_engines()
    second, _ = new_engines()
    keys_a, keys_b = [], []
    now = 0
    for k, (op, dt) in enumerate(sequence):
        now += dt
        if k == cut:
            restored = RiskEngine(CONFIG)
            restored.restore(first.snapshot())
            assert restored.snapshot() == first.snapshot()
            # continue on the restored one: it must stay in lockstep
            second = restored
            keys_b = list(keys_a)
        key = target(first, op, keys_a)
        assert apply(first, op, now, keys_a, key) == apply(second, op, now, keys_b, key)
    assert first.snapshot() == second.snapshot()
