"""Checkpoints: a restart from the newest checkpoint plus the journal after it reaches
exactly the state a replay of the whole journal reaches.

A real engine (in a thread) trades under a random load across several day rolls; after
each roll it checkpoints the journal in a child process (``[journal] checkpoint``, the
default). Then two engines start: one on the journal with its checkpoints, one on a copy
of the journal without them (a whole replay). Everything recovery builds is compared:
the order table order by order, children and fills included, the trade history, risk's
whole state, the trading day, the sessions with their resend rings, the requests in
flight. A damaged checkpoint, or one of another journal, is skipped, not trusted.
"""
import collections
import os
import pickle
import random
import shutil
import time

import msgspec
import pytest

from engine import checkpoint
from engine.client import Client
from engine.config import load_config
from engine.history import _Account
from engine.orders import _Calendar, _Day
from engine.journal import JournalReader
from engine.messages import ExecType
from tests.integration.engine_harness import ThreadedEngine, engine_config, seen_at_resume
from tests.integration.test_order_forgetting import (random_load, report, rest_market,
                                                     table_state)


def whole_state(pipeline, recovered) -> dict:
    """Everything recovery rebuilds, as comparable values."""
    def order_state(order):
        fields = msgspec.structs.asdict(order)
        fields["children"] = {i: msgspec.structs.asdict(c) for i, c in order.children.items()}
        # (A working order holds its own table's day, to be booked in when done.)
        fields["calendar"] = order.calendar is pipeline.orders._calendar
        return fields
    return {
        "table": table_state(pipeline.orders),
        "orders": {i: order_state(o) for i, o in pipeline.orders.by_id.items()},
        "history": {a: (list(e.fills), e.dropped_through_ns, e.dropped_position)
                    for a, e in pipeline.history._accounts.items()},
        "risk": pipeline.risk.snapshot(),
        "day": (pipeline._day_entered, pipeline._roll_taken, pipeline._next_roll),
        "journaled_sessions": sorted(pipeline._event_envelopes),
        "exec_id": pipeline._exec_id,
        "expiring": sorted(pipeline._expiring),
        "next_child_id": pipeline.router.next_child_id,
        "recovered": recovered._asdict(),
    }


def assert_same(got, expected, where="state") -> None:
    """``got == expected``, failing with the path of the first value that differs."""
    if isinstance(got, dict) and isinstance(expected, dict):
        assert got.keys() == expected.keys(), where
        for key in expected:
            assert_same(got[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(got, (list, tuple)) and isinstance(expected, (list, tuple)) \
            and len(got) == len(expected):
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert got == expected, where


def assert_exact(got, expected, where="state", shared=None) -> None:
    """``got`` is ``expected`` unpickled: equal, of the same types all the way down (an
    enum member where there was one, a tuple where a tuple), and what ``expected``
    references twice ``got`` does too (one object, not two copies)."""
    shared = {} if shared is None else shared
    assert type(got) is type(expected), f"{where}: {type(got)} is not {type(expected)}"
    if isinstance(expected, (msgspec.Struct, dict, list, collections.deque, set, _Account,
                             _Calendar, _Day)):
        if id(expected) in shared:
            assert shared[id(expected)][0] is got, f"{where}: a copy of a shared object"
            return
        shared[id(expected)] = (got, expected)  # (expected kept: its id stays its own)
    if isinstance(expected, msgspec.Struct):
        for name in expected.__struct_fields__:
            assert_exact(getattr(got, name), getattr(expected, name), f"{where}.{name}", shared)
    elif isinstance(expected, (_Account, _Calendar, _Day)):
        for name in type(expected).__slots__:
            assert_exact(getattr(got, name), getattr(expected, name), f"{where}.{name}", shared)
    elif isinstance(expected, dict):
        assert list(got) == list(expected), f"{where}: keys"
        for (key, value), (got_key, got_value) in zip(expected.items(), got.items()):
            assert_exact(got_key, key, f"{where} key {key!r}", shared)
            assert_exact(got_value, value, f"{where}[{key!r}]", shared)
    elif isinstance(expected, (list, tuple, collections.deque)):
        assert len(got) == len(expected), f"{where}: length"
        assert getattr(got, "maxlen", None) == getattr(expected, "maxlen", None), where
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_exact(a, b, f"{where}[{i}]", shared)
    else:
        assert got == expected, where


def struct_types(value, seen=None) -> set:
    """The msgspec struct types in ``value``, all the way down."""
    seen = set() if seen is None else seen
    if isinstance(value, msgspec.Struct):
        seen.add(type(value))
        for name in value.__struct_fields__:
            struct_types(getattr(value, name), seen)
    elif isinstance(value, dict):
        for item in value.values():
            struct_types(item, seen)
    elif isinstance(value, (list, tuple, set, collections.deque)):
        for item in value:
            struct_types(item, seen)
    elif isinstance(value, _Account):
        struct_types(value.fills, seen)
    return seen


def wait_for_checkpointer(engine, timeout=60.0) -> None:
    """Until the engine has checkpointed its last roll: the writer started for it has
    finished, successfully."""
    service = engine.service

    def state():
        child = service._checkpointer
        return (service._checkpoint_seq == service.pipeline.last_roll_seq
                and service._checkpoint_start is None
                and (child is None or not child.is_alive()), child)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, child = engine.call(state)
        if done:
            assert child is None or child.exitcode == 0, child.exitcode
            return
        time.sleep(0.05)
    raise AssertionError("the checkpoint writer did not finish")


@pytest.fixture(scope="module")
def traded(tmp_path_factory):
    """A journal with checkpoints after several rolls, and records after the last one."""
    tmp = tmp_path_factory.mktemp("checkpointed")
    path, endpoint = engine_config(tmp)
    # Small segments: the checkpoint writer reads across rotations, and segments can go.
    path.write_text(path.read_text().replace('fsync = "none"', 'fsync = "none"\nrotate_bytes = 8192'))
    rng = random.Random(11)
    rolls = 0
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        pipeline = engine.service.pipeline
        rest_market(engine, client)
        working, used = [], []
        for block in range(4):
            rolls += random_load(engine, client, rng, 30, working, used, f"o{block}-")
            engine.call(lambda: pipeline.roll_day(time.time_ns()))
            rolls += 1
            client.drain(0.2)
            wait_for_checkpointer(engine)
        # The tail: records after the last checkpoint, with orders still working.
        rolls += random_load(engine, client, rng, 25, working, used, "t-")
        client.drain(0.3)
        wait_for_checkpointer(engine)
    cfg = load_config(path)
    return tmp, path, cfg, rolls


def copy_journal(tmp, cfg, *, checkpoints=False, edit=lambda text: text):
    """A copy of the journal (with its checkpoints or not), under an engine config of its
    own in ``tmp`` (``edit``: what to change in its text)."""
    tmp.mkdir(parents=True, exist_ok=True)
    path, _ = engine_config(tmp)
    path.write_text(edit(path.read_text()))
    shutil.copytree(cfg.journal.dir, tmp / "journal",
                    ignore=shutil.ignore_patterns("*.lock", *(() if checkpoints
                                                              else ("checkpoints",))))
    return path


def copy_without_checkpoints(tmp, src_tmp, cfg):
    """A copy of the journal with no checkpoints, under an engine config of its own."""
    return copy_journal(tmp, cfg)


def recovered_state(monkeypatch, path) -> tuple[dict, list]:
    """The state the next engine started on ``path`` recovers, and the checkpoints it
    loaded (their paths; [None]: none)."""
    loaded = []
    load_newest = checkpoint.load_newest

    def recording(replay, journal_dir):
        found = load_newest(replay, journal_dir)
        loaded.append(found and found.path)
        return found
    monkeypatch.setattr(checkpoint, "load_newest", recording)
    seen = seen_at_resume(monkeypatch, whole_state)
    with ThreadedEngine(path):
        pass
    monkeypatch.undo()
    return seen[0], loaded


def test_a_restart_from_a_checkpoint_reaches_the_state_of_a_whole_replay(traded, tmp_path,
                                                                          monkeypatch):
    tmp, path, cfg, rolls = traded
    journal_dir = tmp / "journal_before_restart"
    shutil.copytree(cfg.journal.dir, journal_dir)  # (the restarts below append to it)
    kept = checkpoint.list_checkpoints(cfg.journal.dir)
    # One per roll, the newest cfg.journal.checkpoints_kept kept; the tail follows the last.
    assert rolls >= 6 and len(kept) == cfg.journal.checkpoints_kept
    reader = JournalReader(journal_dir)
    last = sum(1 for _ in reader.records())
    assert kept[0][0] < last - 20  # (a tail to replay after it)
    whole = copy_without_checkpoints(tmp_path, tmp, cfg)
    from_checkpoint, loaded = recovered_state(monkeypatch, path)
    from_journal, none_loaded = recovered_state(monkeypatch, whole)
    assert loaded == [kept[0][1]] and none_loaded == [None]
    assert_same(from_checkpoint, from_journal)
    state = from_checkpoint
    assert state["recovered"]["working"] > 0 and state["table"]["rolls"] == rolls
    assert state["table"]["accounts_forgotten"] and state["history"]


def test_a_damaged_checkpoint_or_one_of_another_journal_is_skipped(traded, tmp_path,
                                                                    monkeypatch, caplog):
    tmp, path, cfg, _ = traded
    (seq_new, newest), (seq_old, older) = checkpoint.list_checkpoints(cfg.journal.dir)[:2]
    expected, _ = recovered_state(monkeypatch,
                                  copy_without_checkpoints(tmp_path / "whole", tmp, cfg))
    # Damaged: one byte of the newest's payload flipped. The older one is used.
    damaged = tmp_path / "damaged"
    damaged_cfg = copy_without_checkpoints(damaged, tmp, cfg)
    target = checkpoint.checkpoint_dir(damaged / "journal")
    target.mkdir()
    shutil.copy(older, target)
    data = bytearray(newest.read_bytes())
    data[-100] ^= 0xFF
    (target / newest.name).write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="engine.checkpoint"):
        state, loaded = recovered_state(monkeypatch, damaged_cfg)
    assert loaded == [target / older.name]
    assert "damaged" in caplog.text and newest.name in caplog.text
    assert_same(state, expected)
    # Another journal's: bound to another record hash at its seq. Skipped: a whole replay.
    other = tmp_path / "other"
    other_cfg = copy_without_checkpoints(other, tmp, cfg)
    foreign = checkpoint.checkpoint_dir(other / "journal")
    foreign.mkdir()
    data = bytearray(newest.read_bytes())
    data[24] ^= 0xFF  # (the header's record hash: magic 8, format 2, reserved 2, seq 8, hash)
    (foreign / newest.name).write_bytes(bytes(data))
    caplog.clear()
    with caplog.at_level("WARNING", logger="engine.checkpoint"):
        state, loaded = recovered_state(monkeypatch, other_cfg)
    assert loaded == [None]
    assert "another journal's checkpoint" in caplog.text
    assert_same(state, expected)


def test_the_command_line_writes_a_checkpoint_at_the_journal_end(traded, tmp_path,
                                                                  monkeypatch):
    from engine.cli import main
    tmp, path, cfg, _ = traded
    copy = tmp_path / "cli"
    copy_cfg = copy_without_checkpoints(copy, tmp, cfg)
    assert main(["journal", "checkpoint", "--config", str(copy_cfg)]) == 0
    (seq, written), = checkpoint.list_checkpoints(copy / "journal")
    reader = JournalReader(copy / "journal")
    assert seq == sum(1 for _ in reader.records()) == reader.next_seq - 1
    # A restart loads it, replays nothing more, and reaches the whole replay's state.
    expected, _ = recovered_state(monkeypatch,
                                  copy_without_checkpoints(tmp_path / "whole", tmp, cfg))
    state, loaded = recovered_state(monkeypatch, copy_cfg)
    assert loaded == [written]
    assert_same(state, expected)


def test_a_writer_killed_mid_file_leaves_nothing_a_restart_reads(tmp_path):
    # Its temporary file is not a checkpoint; prune deletes it once it is an hour old.
    directory = checkpoint.checkpoint_dir(tmp_path)
    directory.mkdir()
    tmp = directory / f".{checkpoint.checkpoint_path(tmp_path, 5).name}.4242.tmp"
    tmp.write_bytes(b"half a checkpoint")
    assert checkpoint.list_checkpoints(tmp_path) == []
    assert checkpoint.prune(tmp_path, 1) == [] and tmp.exists()
    os.utime(tmp, (time.time() - 7200,) * 2)
    assert checkpoint.prune(tmp_path, 1) == [tmp] and not tmp.exists()


def test_the_command_line_says_why_it_cannot_checkpoint(tmp_path, capsys):
    from engine.cli import main
    assert main(["journal", "checkpoint", "--config", str(tmp_path / "none.toml")]) == 2
    assert "kronos-exec journal checkpoint:" in capsys.readouterr().err
    # A journal whose middle is damaged cannot be replayed: exit 1, nothing written.
    path, _ = engine_config(tmp_path)
    journal = tmp_path / "journal"
    journal.mkdir()
    (journal / "00000000000000000001.krj").write_bytes(b"\0" * 10)
    (journal / "00000000000000000005.krj").write_bytes(b"\0" * 10)
    assert main(["journal", "checkpoint", "--config", str(path)]) == 1
    assert "kronos-exec journal checkpoint:" in capsys.readouterr().err
    assert checkpoint.list_checkpoints(journal) == []
    # No journal where the configuration says: exit 2, as verify says of such a directory.
    shutil.rmtree(journal)
    assert main(["journal", "checkpoint", "--config", str(path)]) == 2
    assert "no journal in" in capsys.readouterr().err


def test_segments_before_the_checkpoints_can_go(traded, tmp_path, monkeypatch):
    from engine.recovery import RecoveryError
    tmp, path, cfg, _ = traded
    expected, _ = recovered_state(monkeypatch, copy_journal(tmp_path / "whole", cfg))
    archived = tmp_path / "archived"
    archived_cfg = copy_journal(archived, cfg, checkpoints=True)
    journal = archived / "journal"
    segments = checkpoint.archivable_segments(journal)
    oldest_kept = checkpoint.list_checkpoints(journal)[-1][0]
    assert len(segments) >= 3 and int(segments[-1].stem) < oldest_kept
    (tmp_path / "archive").mkdir()
    for segment in segments:
        shutil.move(segment, tmp_path / "archive")
    # The newest checkpoint is damaged: the older one stands in, its record still there.
    newest = checkpoint.list_checkpoints(journal)[0][1]
    newest.write_bytes(newest.read_bytes()[:-1])
    state, loaded = recovered_state(monkeypatch, archived_cfg)
    assert loaded == [checkpoint.checkpoint_path(journal, oldest_kept)]
    assert_same(state, expected)
    # Without a checkpoint the engine refuses the journal rather than start from its middle.
    shutil.rmtree(checkpoint.checkpoint_dir(journal))
    with pytest.raises(RecoveryError, match="no usable checkpoint holds the replay"):
        with ThreadedEngine(archived_cfg):
            pass


def test_an_account_added_since_the_checkpoint_is_taken_in(traded, tmp_path, monkeypatch):
    # Risk numbers accounts in the configuration's order: one added first moves the others.
    tmp, path, cfg, _ = traded
    def add(text):
        return text.replace("[risk.accounts.DEMO1]", '[risk.accounts.AAA0]\ncash = "1"\n\n'
                                                      "[risk.accounts.DEMO1]")
    expected, _ = recovered_state(monkeypatch, copy_journal(tmp_path / "whole", cfg, edit=add))
    assert expected["risk"]["accounts"][0] == "AAA0"
    state, loaded = recovered_state(monkeypatch, copy_journal(tmp_path / "added", cfg,
                                                              checkpoints=True, edit=add))
    assert loaded[0] is not None
    assert_same(state, expected)


def test_an_account_removed_since_the_checkpoint_is_not_taken_from_it(traded, tmp_path,
                                                                      monkeypatch, caplog):
    # DEMO2 has working orders: a replay of the whole journal refuses to start without
    # it, and so must a restart from a checkpoint (it would route them again).
    from engine.recovery import RecoveryError
    tmp, path, cfg, _ = traded
    def remove(text):
        return text.replace('[risk.accounts.DEMO2]\ncash = "10000000"\nallow_short = true', "") \
            .replace('plaintext_accounts = ["DEMO1", "DEMO2"]', 'plaintext_accounts = ["DEMO1"]')
    removed = copy_journal(tmp_path / "removed", cfg, checkpoints=True, edit=remove)
    assert "DEMO2" not in removed.read_text()
    with caplog.at_level("WARNING", logger="engine.checkpoint"), \
            pytest.raises(RecoveryError, match="account 'DEMO2'"):
        with ThreadedEngine(removed):
            pass
    assert "it holds account 'DEMO2', which the configuration no longer has" in caplog.text


def test_a_checkpoint_others_could_write_is_not_loaded(traded, tmp_path, monkeypatch, caplog):
    # Loading one unpickles it, which can run code: only the engine's user's own.
    tmp, path, cfg, _ = traded
    copied = copy_journal(tmp_path / "open", cfg, checkpoints=True)
    for _, kept in checkpoint.list_checkpoints(tmp_path / "open" / "journal"):
        kept.chmod(0o666)
    with caplog.at_level("WARNING", logger="engine.checkpoint"):
        _, loaded = recovered_state(monkeypatch, copied)
    assert loaded == [None] and "is writable by others (mode 666)" in caplog.text


def test_a_checkpoint_past_the_journal_end_is_pruned_not_kept_as_newest(traded, tmp_path):
    # A journal replaced under old checkpoints (or a torn tail dropped): theirs name
    # records this journal does not have. The next write must not be pruned for them.
    tmp, path, cfg, _ = traded
    copied = copy_journal(tmp_path / "stale", cfg, checkpoints=True)
    journal = tmp_path / "stale" / "journal"
    (seq, newest), _ = checkpoint.list_checkpoints(journal)[:2]
    for later in (10_000, 20_000):
        shutil.copy(newest, checkpoint.checkpoint_path(journal, later))
    written = checkpoint.make(load_config(copied))
    assert written is not None
    assert [p for _, p in checkpoint.list_checkpoints(journal)] == [written, newest]


def add_account(text: str) -> str:
    """An engine config with account NEW too (first: the others are numbered anew)."""
    return text.replace("[risk.accounts.DEMO1]",
                        '[risk.accounts.NEW]\ncash = "10000000"\n\n[risk.accounts.DEMO1]') \
        .replace('plaintext_accounts = ["DEMO1", "DEMO2"]',
                 'plaintext_accounts = ["NEW", "DEMO1", "DEMO2"]')


def test_an_account_a_reload_added_is_in_the_engines_checkpoint(tmp_path, monkeypatch):
    # The checkpoint writer replays under the file as reloaded, not as at start-up: else it
    # could not take the new account's orders, and its checkpoint would stop the restart.
    from engine.messages import AdminReply, ReloadLimits
    path, endpoint = engine_config(tmp_path)
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        path.write_text(add_account(path.read_text()))
        assert engine.call(engine.service.reload_security)
        client.send(ReloadLimits(req_id="add"))
        assert client.recv_until(lambda m: isinstance(m, AdminReply), 5)[-1].ok
        client.new_order("AAA", "buy", "5", "48.00", account="NEW", cl_ord_id="n1",
                         time_in_force="gtc")
        report(client, "n1", ExecType.NEW)
        engine.call(lambda: engine.service.pipeline.roll_day(time.time_ns()))
        wait_for_checkpointer(engine)
    cfg = load_config(path)
    assert checkpoint.list_checkpoints(cfg.journal.dir)
    expected, _ = recovered_state(monkeypatch, copy_journal(tmp_path / "whole", cfg,
                                                            edit=add_account))
    state, loaded = recovered_state(monkeypatch, path)
    assert loaded[0] is not None
    assert_same(state, expected)


def test_a_checkpoint_under_a_config_without_an_accounts_orders_is_not_written(traded,
                                                                               tmp_path,
                                                                               capsys):
    # Written, it would stop every restart that loads it; the engine's config has DEMO2.
    from engine.cli import main
    tmp, path, cfg, _ = traded
    copied = copy_journal(tmp_path / "other", cfg, edit=lambda text: text.replace(
        '[risk.accounts.DEMO2]\ncash = "10000000"\nallow_short = true', "").replace(
        'plaintext_accounts = ["DEMO1", "DEMO2"]', 'plaintext_accounts = ["DEMO1"]'))
    assert main(["journal", "checkpoint", "--config", str(copied)]) == 1
    assert "accepted orders of account 'DEMO2'" in capsys.readouterr().err
    assert checkpoint.list_checkpoints(tmp_path / "other" / "journal") == []


def test_an_account_without_orders_removed_since_the_checkpoint_is_left_out(traded, tmp_path,
                                                                            monkeypatch):
    # A checkpoint written under a config with a spare account is still used without it.
    from engine.cli import main
    tmp, path, cfg, _ = traded
    spare = copy_journal(tmp_path / "spare", cfg, edit=add_account)
    assert main(["journal", "checkpoint", "--config", str(spare)]) == 0
    plain = spare.with_name("plain.toml")
    plain.write_text(spare.read_text().replace(
        '[risk.accounts.NEW]\ncash = "10000000"\n\n', "").replace('"NEW", ', ""))
    expected, _ = recovered_state(monkeypatch, copy_journal(tmp_path / "whole", cfg))
    state, loaded = recovered_state(monkeypatch, plain)
    assert loaded[0] is not None
    assert_same(state, expected)


def test_a_checkpoint_that_would_leave_the_journal_short_of_disk_is_not_written(
        traded, tmp_path, monkeypatch, capsys):
    # The journal is on the same disk, and a full one stops the engine: the reserve is kept.
    import collections
    from engine.cli import main
    tmp, path, cfg, _ = traded
    copied = copy_journal(tmp_path / "full", cfg)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                        lambda _: usage(100 << 30, 95 << 30, 5 << 30))
    assert main(["journal", "checkpoint", "--config", str(copied)]) == 1
    assert "GiB kept for the journal" in capsys.readouterr().err
    assert list((tmp_path / "full" / "journal").glob("checkpoints/*")) == []
    monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                        lambda _: usage(100 << 30, 90 << 30, 10 << 30))
    assert main(["journal", "checkpoint", "--config", str(copied)]) == 0


def test_a_served_engine_checkpoints_at_its_clocks_roll_and_a_kill_9_restart_loads_it(
        tmp_path):
    # `kronos-exec serve`, its trading day ending seconds after it starts: the roll
    # comes from its own clock, its child writes the checkpoint; killed -9, the engine
    # comes back from that checkpoint with every acknowledged order.
    import datetime as dt
    from engine.messages import OrderStatusReply
    from tests.integration.engine_harness import kill_9, start_subprocess, terminate
    path, endpoint = engine_config(tmp_path)
    roll = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=10)  # (started by then)
    path.write_text(path.read_text() + f'\n[trading_day]\nroll_time = "{roll:%H:%M:%S}"\n')
    log = tmp_path / "engine.log"
    engine = start_subprocess(path, log)
    try:
        with Client(endpoint) as client:
            for i in range(20):
                client.new_order("AAA", "buy", "5", "48.00", account="DEMO1",
                                 cl_ord_id=f"g{i}", time_in_force="gtc")
            client.recv_until(lambda m: getattr(m, "cl_ord_id", None) == "g19", 5)
        journal = tmp_path / "journal"
        # Until the child says it is done: its file is there before it prunes and logs,
        # and a kill -9 of the engine in between takes the child with it, unlogged.
        deadline = time.monotonic() + 45
        while " written (after record" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        (seq, written), = checkpoint.list_checkpoints(journal)
        kill_9(engine)
        engine = start_subprocess(path, log)
        with Client(endpoint) as client:
            client.status("g7", account="DEMO1")
            assert client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1].found
    finally:
        if engine.poll() is None:
            terminate(engine)
    text = log.read_text()
    assert "trading day" in text and f"checkpoint {written.name} written" in text
    assert f"recovery: loaded checkpoint {written.name}" in text


def replayed(cfg):
    """A replay of the whole of ``cfg``'s journal, not finished (as a checkpoint saves it)."""
    from engine.intake import client_names
    from engine.recovery import Replay
    from engine.service import build_pipeline, build_venues
    replay = Replay(build_pipeline(cfg, build_venues(cfg), None), cfg.intake.resend_ring_size,
                    client_names(cfg.security))
    replay.run(JournalReader(cfg.journal.dir).records())
    return replay


def test_a_checkpoints_payload_gives_back_its_state_exactly(traded):
    # Its structs go as msgpack bytes (recovery._StatePickler): every one must come back
    # as it was, types and sharing included (a TradeFill's side, a child in its order
    # and in the replay's children).
    from engine import messages, orders
    tmp, path, cfg, _ = traded
    replay = replayed(cfg)
    payload = replay.save()
    assert b"Decoder" in payload  # (the structs are packed, not pickled field by field)
    state = replay.state()
    assert_exact(pickle.loads(payload), state)
    held = struct_types(state)
    # (A replay at its end holds no NewOrder: each command's orders are answered before
    # the next command, tests/unit/engine/test_order_forgetting.py; the hand-built
    # round trip below packs one.)
    assert {messages.ExecutionReport, messages.TradeFill, orders.Order, orders.Child} <= held, held
    reports = [o.last_report for o in replay.pipeline.orders.by_id.values() if o.last_report]
    assert any(r.last_px is None for r in reports) and any(r.last_px for r in reports)


def test_the_packed_structs_round_trip_with_defaults_none_and_nested_structs():
    # What the state may hold beyond what one journal shows: defaults left out
    # (omit_defaults), None, enums, nested structs, tagged unions, a struct twice.
    from engine import messages as m
    from engine.orders import Child
    from engine.recovery import _dumps
    report = m.ExecutionReport(order_id="7", cl_ord_id="c", account="A", symbol="S",
                               side=m.Side.SELL, exec_type=m.ExecType.FILL,
                               ord_status=m.OrdStatus.FILLED, qty="5", cum_qty="5",
                               leaves_qty="0", last_qty="5", last_px="1.5", seq=3,
                               transact_time=11, text="x" * m.MAX_TEXT)
    child = Child(4, "V", 100, 5, cum_qty=2)
    values = [
        report,
        m.ExecutionReport(order_id="8", cl_ord_id="d", account="A", symbol="S",
                          side=m.Side.BUY, exec_type=m.ExecType.NEW, ord_status=m.OrdStatus.NEW, qty="1",
                          cum_qty="0", leaves_qty="1"),
        m.NewOrder(cl_ord_id="n", account="A", symbol="S", side=m.Side.BUY, qty="1",
                   profile=[1, 2], stp=m.StpMode(1)),
        m.BulkNewOrders(orders=[m.NewOrder(cl_ord_id="b", account="A", symbol="S",
                                           side=m.Side.BUY, qty="2", price="1")]),
        m.Replace(cl_ord_id="r", orig_cl_ord_id="n", account="A", price="2"),
        m.Cancel(cl_ord_id="k", orig_cl_ord_id="n", account="A"),
        m.KillSwitch(req_id="q", action="engage", scope="account", target="A"),
        # (a copy of its own: a struct inside a packed one comes back a copy, the
        # limit _StatePickler names, which the state's own test holds it to)
        m.OrderStatusReply(cl_ord_id="c", account="A", found=True,
                           report=msgspec.structs.replace(report),
                           stages=[m.StageTime(stage="NEW", time=1)],
                           children=[m.ChildState(child_id="1", venue="V", price=None,
                                                  qty="1", cum_qty="0", done=False)]),
        m.JournalChildren(new=[(1, 2, "V", 3, 4)], done=[1]),
        m.JournalChildren(),
        m.TradeFill(exec_id="e", order_id="7", cl_ord_id="c", symbol="S", side=m.Side.SELL,
                    last_qty="5", last_px="1.5", transact_time=11),
        child, {"again": child, "report again": report},
    ]
    assert_exact(pickle.loads(_dumps(values)), values)


@pytest.mark.parametrize("unit", ["tick_size", "lot_size", "money_unit"])
def test_a_checkpoint_taken_in_other_units_is_skipped_not_read_in_the_new_ones(
        traded, tmp_path, monkeypatch, caplog, unit):
    # Prices are held in ticks, quantities in lots, money in the money unit. A restart
    # under a finer tick loaded a checkpoint's prices as they were: every order at half
    # its price (50.10 in ticks of 0.01 read as 25.05 in ticks of 0.005, and routed again
    # there), where a replay of the journal, which holds decimals, converts them afresh.
    from tests.integration.engine_harness import QUIET_SIM
    tmp, path, cfg, _ = traded
    sim = tmp_path / "sim.toml"
    sim.write_text(QUIET_SIM.read_text().replace(
        'tick_size = "0.01"', 'tick_size = "0.005"' if unit == "tick_size" else
        'tick_size = "0.01"').replace(
        'lot_size = "1"', 'lot_size = "0.5"' if unit == "lot_size" else 'lot_size = "1"'))

    def edit(text):
        text = text.replace(str(QUIET_SIM), str(sim))
        if unit == "money_unit":
            text = text.replace("[risk.firm]\n", '[risk.firm]\nmoney_unit = "0.00001"\n')
        return text
    expected, _ = recovered_state(monkeypatch, copy_journal(tmp_path / "whole", cfg, edit=edit))
    with caplog.at_level("WARNING", logger="engine.checkpoint"):
        state, loaded = recovered_state(monkeypatch, copy_journal(tmp_path / "changed", cfg,
                                                                  checkpoints=True, edit=edit))
    assert_same(state, expected)
    assert loaded == [None]
    assert f"skipped: it {'counts money' if unit == 'money_unit' else 'was taken with'}" \
        in caplog.text
    # (The change took: the whole replay counts the same orders in other numbers.)
    before, _ = recovered_state(monkeypatch, copy_journal(tmp_path / "before", cfg))
    assert before["risk"] != expected["risk"]


def test_a_checkpoint_of_the_format_before_is_skipped_not_misread(traded, tmp_path,
                                                                   monkeypatch, caplog):
    # Format 1 pickled each struct as a dict of its fields: written as that engine wrote
    # it (its layout fingerprint, its payload), at the journal's end, it is not loaded.
    import hashlib
    tmp, path, cfg, _ = traded
    expected, _ = recovered_state(monkeypatch, copy_journal(tmp_path / "whole", cfg))
    copied = copy_journal(tmp_path / "old", cfg, checkpoints=True)
    journal = tmp_path / "old" / "journal"
    newest = checkpoint.list_checkpoints(journal)[0][1]
    replay = replayed(load_config(copied))
    payload = pickle.dumps(pickle.loads(replay.save()), protocol=pickle.HIGHEST_PROTOCOL)
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "FORMAT", 1)
        layout = checkpoint._layout()
    header = checkpoint._HEADER.pack(checkpoint.MAGIC, 1, 0, replay.seq, replay.hash, layout,
                                     len(payload), hashlib.sha256(payload).digest())
    old = checkpoint.checkpoint_path(journal, replay.seq)
    old.write_bytes(header + payload)
    old.chmod(0o600)
    with caplog.at_level("WARNING", logger="engine.checkpoint"):
        state, loaded = recovered_state(monkeypatch, copied)
    assert loaded == [newest]
    assert f"{old.name} skipped: format 1, this engine reads format 2" in caplog.text
    assert_same(state, expected)


def segment_reads(monkeypatch) -> collections.Counter:
    """Counts of the journal's segment reads by file name, from now on."""
    from engine import journal
    reads = collections.Counter()
    read_segment = journal._read_segment

    def counting(path):
        reads[path.name] += 1
        return read_segment(path)
    monkeypatch.setattr(journal, "_read_segment", counting)
    return reads


def test_a_restart_reads_each_segment_once(traded, tmp_path, monkeypatch):
    # The segment holding the checkpoint's record was read, and its records checked, once
    # for the record's hash and again for the replay: the replay goes on from the first.
    from engine.intake import client_names
    from engine.recovery import recover
    from engine.service import build_pipeline, build_venues
    tmp, path, cfg, _ = traded
    copied = load_config(copy_journal(tmp_path / "twice", cfg, checkpoints=True))
    journal = tmp_path / "twice" / "journal"
    pipeline = build_pipeline(copied, build_venues(copied), None)
    reads = segment_reads(monkeypatch)
    recovered = recover(pipeline, journal, copied.intake.resend_ring_size,
                        client_names(copied.security), checkpoints=True)
    assert recovered.records > 0 and reads and max(reads.values()) == 1, reads


def test_a_checkpoint_write_reads_each_segment_once(traded, tmp_path, monkeypatch):
    # As a restart, and then prune read the journal again for the record hash of each
    # checkpoint it kept: the new one's and the loaded one's, which the write knows.
    tmp, path, cfg, _ = traded
    copied = load_config(copy_journal(tmp_path / "twice", cfg, checkpoints=True))
    journal = tmp_path / "twice" / "journal"
    seq = checkpoint.list_checkpoints(journal)[0][0]
    reads = segment_reads(monkeypatch)
    written = checkpoint.make(copied)
    assert written is not None and int(written.stem) > seq
    assert [s for s, _ in checkpoint.list_checkpoints(journal)] == [int(written.stem), seq]
    assert reads and max(reads.values()) == 1, reads


def test_the_layout_fingerprint_sees_field_types_defaults_and_encoding_options():
    # The payload's structs are decoded by their types: a field whose type or default
    # changed between versions would be read as another value, not refused (review).
    import subprocess
    import sys

    import msgspec

    def shaped(annotation, default, **options):
        return msgspec.defstruct("Fill", [("qty", int), ("last_ts", annotation, default)],
                                 **options)

    base = checkpoint._struct_layout(shaped(int, 0))
    assert base == checkpoint._struct_layout(shaped(int, 0))
    for other in (shaped(float, 0), shaped(int, 1), shaped(int, 0, omit_defaults=True),
                  shaped(int, 0, array_like=True), shaped(int, 0, rename="camel")):
        assert checkpoint._struct_layout(other) != base
    # The engine and its checkpoint child (another process, another hash seed) agree.
    layouts = {subprocess.run(
        [sys.executable, "-c", "import engine.checkpoint as c; print(c.LAYOUT.hex())"],
        env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True,
        check=True).stdout.strip() for seed in ("1", "2")}
    assert layouts == {checkpoint.LAYOUT.hex()}


def test_a_history_bound_lowered_since_the_checkpoint_holds_from_the_load(traded):
    # Before, the checkpoint's longer histories were kept until each account's next fill.
    tmp, path, cfg, _ = traded
    saved = replayed(cfg)
    held = {account: list(entry.fills) for account, entry in saved.pipeline.history._accounts.items()}
    bound = min(len(fills) for fills in held.values()) - 1
    assert bound >= 2, held  # (every account holds more than the lowered bound)
    lowered = msgspec.structs.replace(
        cfg, history=msgspec.structs.replace(cfg.history, max_fills_per_account=bound))
    from engine.intake import client_names
    from engine.recovery import Replay
    from engine.service import build_pipeline, build_venues
    loaded = Replay(build_pipeline(lowered, build_venues(lowered), None),
                    cfg.intake.resend_ring_size, client_names(cfg.security))
    loaded.load(saved.save())
    keep = bound - bound // 4  # (a trim keeps three quarters of the bound, as each fill's does)
    history = loaded.pipeline.history
    for account, fills in held.items():
        entry = history._accounts[account]
        # The newest fills are kept; answers say from when they are complete, and which
        # journal position a trade store must have delivered to fill in the rest.
        assert entry.fills == fills[-keep:]
        assert entry.dropped_through_ns == fills[-keep - 1].transact_time
        assert entry.dropped_position == saved.seq
        answer = history.query(account, 0, 2**63)
        assert not answer.complete and answer.fills == fills[-keep:]


def test_a_client_key_renamed_since_the_checkpoint_throttles_under_its_new_name(traded):
    # Sessions draw on their key's throttle bucket, named by the configuration: one
    # renamed since the checkpoint takes the new name at the load, as a replay of the
    # whole journal does (before, the checkpoint's old name stayed until a restart
    # without checkpoints).
    from engine.recovery import Replay
    from engine.service import build_pipeline, build_venues
    tmp, path, cfg, _ = traded
    saved = Replay(build_pipeline(cfg, build_venues(cfg), None), cfg.intake.resend_ring_size,
                   lambda principal: "before-rename")
    saved.run(JournalReader(cfg.journal.dir).records())
    assert saved.in_risk
    loaded = Replay(build_pipeline(cfg, build_venues(cfg), None), cfg.intake.resend_ring_size,
                    lambda principal: "after-rename")
    loaded.load(saved.save())
    for replay, name in ((saved, "before-rename"), (loaded, "after-rename")):
        snap = replay.pipeline.risk.snapshot()
        profiles = {sid: snap["session_profiles"][snap["sessions"].index(sid)]
                    for sid in replay.in_risk}
        assert set(profiles.values()) == {name}, profiles


def test_the_command_line_refuses_another_users_journal(traded, tmp_path, monkeypatch, capsys):
    # Written as another user (root, say), the checkpoint would be skipped by the engine
    # (not its user's) and its directory left unwritable to the engine: refused, nothing
    # written.
    from engine.cli import main
    tmp, path, cfg, _ = traded
    copy = tmp_path / "other"
    copy_cfg = copy_without_checkpoints(copy, tmp, cfg)
    monkeypatch.setattr(checkpoint.os, "geteuid", lambda: os.getuid() + 4242)
    assert main(["journal", "checkpoint", "--config", str(copy_cfg)]) == 1
    err = capsys.readouterr().err
    assert f"not by this user (uid {os.getuid() + 4242}): run it as the engine's user" in err
    assert not checkpoint.checkpoint_dir(copy / "journal").exists()
