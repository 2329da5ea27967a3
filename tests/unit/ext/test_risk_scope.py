"""The scope lists behind the mass cancels (cancel on disconnect, kill switches).

Every working order is on its session's, account's and instrument's list, so
that a mass cancel walks the orders in scope and not the whole order pool
(which keeps the size of the day's peak). These tests hold the lists to a
brute-force filter of the working orders after random sequences of every
call that admits, changes or removes an order, including a restore from a
snapshot, and hold each mass cancel's result to the reference model's
(ascending keys) and its walk to the orders in scope (``debug_scope``'s
``visits``: a count, not a timing).
"""
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ext.risk import RiskEngine, Scope
from ext.types import OrdType, Side
from tests.reference.risk_reference import RiskReference
from tests.unit.ext.test_risk_properties import CONFIG, apply, new_engines, random_ops, target

SESSION, ACCOUNT, INSTRUMENT = Scope.SCOPE_SESSION, Scope.SCOPE_ACCOUNT, Scope.SCOPE_INSTRUMENT
# snapshot()["orders"] rows: [key, session, account, instrument, ...]
COLUMN = {SESSION: 1, ACCOUNT: 2, INSTRUMENT: 3}


def check_lists(engine):
    """Each scope list holds exactly its working orders, head to tail in admission order
    (ascending here: the tests hand out keys in increasing order), and its backward
    links walk the same orders in reverse."""
    snap = engine.snapshot()
    sizes = {SESSION: len(snap["sessions"]), ACCOUNT: len(snap["accounts"]),
             INSTRUMENT: len(snap["instruments"])}
    for kind, n in sizes.items():
        for ix in range(n):
            want = [row[0] for row in snap["orders"] if row[COLUMN[kind]] == ix]
            got = engine.debug_scope(kind, ix)
            assert got["keys"] == want, (kind.name, ix)
            assert got["reverse"] == want[::-1], (kind.name, ix)


def scope_ops(rng, n):
    """``random_ops`` with mass cancels of every scope mixed in, each followed or not by
    the cancels the engine would send for the orders it returned, and restores."""
    out = []
    for op, dt in random_ops(rng, n):
        out.append((op, dt))
        roll = rng.random()
        if roll < 0.10:
            out.append((("cod", rng.choice(["S1", "S1", "S2", "S3", "never-ordered"]),
                         rng.random() < 0.7), 0))
        elif roll < 0.16:
            scope, target_ = rng.choice([("account", "A1"), ("account", "A2"), ("instrument", "AAPL"),
                                         ("instrument", "BTC"), ("global", None)])
            out.append((("mass_kill", scope, target_, rng.random() < 0.7), 0))
        elif roll < 0.19:
            out.append((("restore",), 0))
    return out


scope_sequences = st.builds(scope_ops, st.randoms(use_true_random=False), st.integers(10, 120))


def mass_cancel(engine, op, now):
    """Run a mass-cancel op; the keys it returned, and whether to cancel them."""
    if op[0] == "cod":
        return engine.cancel_on_disconnect(op[1], now), op[2]
    keys = engine.engage_kill_switch(op[1], op[2], now_ns=now, actor="t")
    engine.release_kill_switch(op[1], op[2], now_ns=now, actor="t")
    return keys, op[3]


def walked(engine, keys):
    """The last mass cancel looked at its orders in scope only."""
    assert engine.debug_scope(SESSION, 0)["visits"] == len(keys)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scope_sequences)
def test_scope_lists_match_a_brute_force_filter_and_mass_cancels_match_the_reference(sequence):
    core, ref = new_engines()
    core_keys, ref_keys = [], []
    now = 0
    for op, dt in sequence:
        now += dt
        if op[0] == "restore":
            restored = RiskEngine(CONFIG)
            restored.restore(core.snapshot())
            core = restored
        elif op[0] in ("cod", "mass_kill"):
            got, cancel = mass_cancel(core, op, now)
            want, _ = mass_cancel(ref, op, now)
            assert got == want == sorted(want), op
            walked(core, got)
            if cancel:              # as the engine does, one on_cancel per key
                for key in got:
                    assert core.on_cancel(key) == 0 and ref.on_cancel(key) == 0
        else:
            key = target(core, op, core_keys)
            assert apply(core, op, now, core_keys, key) == apply(ref, op, now, ref_keys, key), op
        check_lists(core)


@pytest.mark.parametrize("cls", [RiskEngine, RiskReference])
def test_mass_cancels_return_ascending_keys_whatever_the_admission_order(cls):
    """Keys admitted out of order (as recovery may replay them) still come back ascending."""
    engine = cls(CONFIG)
    s1, s2 = engine.session_index("S1"), engine.session_index("S2")
    engine.set_reference_price(0, 10000, 0)
    for key, session in ((50, s1), (7, s2), (30, s1), (9, s1), (41, s2)):
        # (prices apart: identical orders would be duplicative)
        assert engine.check_new(key, session, 1, 0, int(Side.BUY), int(OrdType.LIMIT), 1, 10000 + key,
                                0, key, 0) == 0
    if cls is RiskEngine:
        assert engine.debug_scope(SESSION, s1)["keys"] == [50, 30, 9]     # admission order
        assert engine.debug_scope(ACCOUNT, 1)["keys"] == [50, 7, 30, 9, 41]
    assert engine.cancel_on_disconnect("S1", 1) == [9, 30, 50]
    assert engine.engage_kill_switch("instrument", "AAPL", now_ns=1, actor="t") == [7, 9, 30, 41, 50]
    assert engine.engage_kill_switch("global", now_ns=1, actor="t") == [7, 9, 30, 41, 50]
    assert engine.on_cancel(30) == 0
    assert engine.cancel_on_disconnect("S1", 2) == [9, 50]
    if cls is RiskEngine:
        assert engine.debug_scope(SESSION, s1) == {"keys": [50, 9], "reverse": [9, 50], "visits": 2}


def test_a_mass_cancel_walks_the_orders_in_scope_not_the_pool():
    """A session, account or instrument with one order costs one step however many other
    orders work, or once worked (the pool never shrinks)."""
    config = {"firm": {"max_open_orders": 100_000},
              "instruments": {"X": {}, "Y": {}},
              "accounts": {"A": {"cash": "100000000000"}, "B": {"cash": "100000000000"}}}
    engine = RiskEngine(config)
    s1, s2 = engine.session_index("S1"), engine.session_index("S2")
    a, b = engine.account_index("A"), engine.account_index("B")
    x, y = engine.instrument_index("X"), engine.instrument_index("Y")
    n = 5000                        # past the pool's first size (1024): it grows on the way
    for key in range(1, n + 1):
        assert engine.check_new(key, s1, a, x, int(Side.BUY), int(OrdType.LIMIT), 1 + key % 7,
                                1000 + key % 97, 0, key, 0) == 0
    assert engine.check_new(n + 1, s2, b, y, int(Side.BUY), int(OrdType.LIMIT), 1, 1000, 0, -1, 0) == 0
    for scope_call in (lambda: engine.cancel_on_disconnect("S2", 1),
                       lambda: engine.engage_kill_switch("instrument", "Y", now_ns=1, actor="t"),
                       lambda: engine.engage_kill_switch("account", "B", now_ns=1, actor="t")):
        assert scope_call() == [n + 1]
        assert engine.debug_scope(SESSION, s2)["visits"] == 1
    keys = engine.engage_kill_switch("global", now_ns=1, actor="t")
    assert keys == list(range(1, n + 2)) and engine.debug_scope(SESSION, s1)["visits"] == n + 1
    for key in range(1, n + 1):
        assert engine.on_cancel(key) == 0
    assert engine.cancel_on_disconnect("S1", 2) == []
    assert engine.engage_kill_switch("global", now_ns=2, actor="t") == [n + 1]
    assert engine.debug_scope(SESSION, s1)["visits"] == 1


def test_scope_lists_survive_table_growth_fills_replaces_and_day_rolls():
    """Sessions, accounts and instruments added while orders work (their tables grow and
    the cell table is laid out afresh), the order pool growing, partial and full fills,
    replaces, rejects and a day roll all leave every list exact."""
    rng = random.Random(7)
    config = {"instruments": {"I0": {}}, "accounts": {"A0": {"cash": "100000000000"}}}
    engine = RiskEngine(config)
    engine.set_reference_price(0, 10000, 0)
    live = {}                       # key -> qty left
    key = 0
    for step in range(3000):
        if step % 300 == 299:       # a new account and instrument: the tables grow past 4, 8, ...
            n = len(config["instruments"])
            config["instruments"][f"I{n}"] = {}
            config["accounts"][f"A{n}"] = {"cash": "100000000000"}
            engine.reload(config, step)
            engine.set_reference_price(n, 10000, step)
        if step == 1500:
            engine.reset_daily(step)
        roll = rng.random()
        if roll < 0.55 or not live:
            key += 1
            session = engine.session_index(f"S{rng.randrange(12)}")
            qty = rng.randint(2, 9)
            assert engine.check_new(key, session, rng.randrange(len(engine.accounts)),
                                    rng.randrange(len(engine.instruments)), int(Side.BUY),
                                    int(OrdType.LIMIT), qty, 10000, 0, key, step) == 0
            live[key] = qty
        else:
            victim = rng.choice(sorted(live))
            if roll < 0.7:
                qty = rng.randint(1, live[victim])
                assert engine.on_fill(victim, qty, 10000) == 0
                live[victim] -= qty
            elif roll < 0.8:
                assert engine.on_replace(victim, live[victim] + 100, 10001, 10**9 + step, step) == 0
                working = engine.working_order(victim)
                live[victim] = working["leaves"]
            elif roll < 0.9:
                assert engine.on_reject(victim) == 0
                live[victim] = 0
            else:
                assert engine.on_cancel(victim) == 0
                live[victim] = 0
            if live[victim] == 0:
                del live[victim]
        if step % 97 == 0:
            check_lists(engine)
    assert engine.n_working == len(live)
    check_lists(engine)
    assert engine.engage_kill_switch("global", now_ns=1, actor="t") == sorted(live)


def test_debug_scope_refuses_an_unknown_scope_or_index():
    engine, _ = new_engines()
    with pytest.raises(IndexError):
        engine.debug_scope(SESSION, 3)          # three sessions: 0..2
    with pytest.raises(IndexError):
        engine.debug_scope(3, 0)
    assert engine.debug_scope(INSTRUMENT, 1) == {"keys": [], "reverse": [], "visits": 0}
