"""``journal verify --config``: each checkpoint held to the journal's replay.

A checkpoint is bound to its record's chain hash and its payload carries a SHA-256, but
whoever can rewrite the journal directory can rewrite a checkpoint's payload and its
digest: the engine then loads it at its next start and runs on positions, orders and
fills its journal does not hold, while ``journal verify`` said OK (it read only the
segments). With ``--config`` verify replays the journal as the engine does and compares
each checkpoint's state with the replay's at its record.
"""
import hashlib
import pickle
import shutil

import pytest

from engine import checkpoint
from engine.cli import main
from engine.client import Client
from engine.config import load_config
from engine.intake import client_names
from engine.messages import ExecType
from engine.recovery import Replay, _dumps
from engine.service import build_pipeline, build_venues
from tests.integration.engine_harness import ThreadedEngine, engine_config
from tests.integration.test_order_forgetting import report, rest_market


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    """A journal of a real engine with two checkpoints (after a fill, and after more) and
    records after them; returns (tmp, config path, config)."""
    tmp = tmp_path_factory.mktemp("checkpointed")
    path, endpoint = engine_config(tmp)
    # Small segments: those before the oldest checkpoint can be archived.
    path.write_text(path.read_text().replace('fsync = "none"',
                                             'fsync = "none"\nrotate_bytes = 4096'))
    with ThreadedEngine(path) as engine, Client(endpoint) as client:
        rest_market(engine, client)
        for i in range(3):
            client.new_order("AAA", "buy", "30", "51.00", account="DEMO1", cl_ord_id=f"f{i}")
            report(client, f"f{i}", ExecType.FILL)
            assert checkpoint.make(load_config(path)) is not None
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="rest")
        report(client, "rest", ExecType.NEW)
    cfg = load_config(path)
    assert len(checkpoint.list_checkpoints(cfg.journal.dir)) == cfg.journal.checkpoints_kept == 2
    return tmp, path, cfg


def copy(checkpointed, tmp_path):
    """A copy of the journal and its checkpoints under a configuration of its own."""
    src, path, _ = checkpointed
    shutil.copytree(src / "journal", tmp_path / "journal", ignore=shutil.ignore_patterns("*.lock"))
    config = tmp_path / "engine.toml"
    config.write_text(path.read_text().replace(str(src / "journal"), str(tmp_path / "journal")))
    return config, load_config(config)


def rewrite(path, state_or_payload) -> None:
    """Replace a checkpoint's payload, its SHA-256 recomputed (the header stays bound)."""
    payload = state_or_payload if isinstance(state_or_payload, bytes) else _dumps(state_or_payload)
    data = path.read_bytes()
    magic, fmt, reserved, seq, record_hash, layout, _, _ = checkpoint._HEADER.unpack_from(data)
    header = checkpoint._HEADER.pack(magic, fmt, reserved, seq, record_hash, layout,
                                     len(payload), hashlib.sha256(payload).digest())
    path.write_bytes(header + payload)


def verify(config, cfg):
    return main(["journal", "verify", "--data-dir", str(cfg.journal.dir), "--config", str(config)])


def test_checkpoints_the_replay_reaches_verify(checkpointed, tmp_path, capsys):
    config, cfg = copy(checkpointed, tmp_path)
    assert verify(config, cfg) == 0
    out = capsys.readouterr().out
    for seq, path in checkpoint.list_checkpoints(cfg.journal.dir):
        assert (f"checkpoint {path.name}: the journal's replay through seq {seq} reaches "
                f"its state") in out


def test_a_checkpoint_rewritten_with_its_digest_is_loaded_by_the_engine_and_fails_verify(
        checkpointed, tmp_path, capsys):
    config, cfg = copy(checkpointed, tmp_path)
    newest = checkpoint.list_checkpoints(cfg.journal.dir)[0][1]
    state = pickle.loads(checkpoint.read(newest)[2])
    cell = state["risk"]["cells"][0]
    position = cell[2]
    assert position == 90  # DEMO1's AAA: three fills of 30
    cell[2] = 9_000
    rewrite(newest, state)
    # What the engine does with it: loaded, its position taken for the journal's.
    replay = Replay(build_pipeline(cfg, build_venues(cfg), None), cfg.intake.resend_ring_size,
                    client_names(cfg.security))
    assert checkpoint.load_newest(replay, cfg.journal.dir).path == newest
    assert replay.pipeline.risk.snapshot()["cells"][0][2] == 9_000
    # The chain alone sees nothing; held to the replay, the checkpoint fails.
    assert main(["journal", "verify", "--data-dir", str(cfg.journal.dir)]) == 0
    capsys.readouterr()
    assert verify(config, cfg) == 1
    out = capsys.readouterr().out
    assert (f"BROKEN: checkpoint {newest.name}: holds a state the journal's replay through "
            f"seq {int(newest.stem)} does not reach (state['risk']['cells'][0][2] is 9000, "
            f"the replay's 90)") in out


def test_the_same_state_pickled_otherwise_still_agrees(checkpointed, tmp_path, capsys):
    """Compared by value, not by bytes: a set of texts pickles in an order of the process's."""
    config, cfg = copy(checkpointed, tmp_path)
    newest = checkpoint.list_checkpoints(cfg.journal.dir)[0][1]
    payload = bytes(checkpoint.read(newest)[2])
    again = pickle.dumps(pickle.loads(payload), protocol=2)
    assert again != payload
    rewrite(newest, again)
    assert verify(config, cfg) == 0
    assert f"checkpoint {newest.name}: the journal's replay" in capsys.readouterr().out


def test_a_checkpoint_the_engine_skips_is_a_note(checkpointed, tmp_path, capsys):
    config, cfg = copy(checkpointed, tmp_path)
    newest = checkpoint.list_checkpoints(cfg.journal.dir)[0][1]
    data = bytearray(newest.read_bytes())
    data[-1] ^= 1  # damaged: its digest no longer matches
    newest.write_bytes(bytes(data))
    assert verify(config, cfg) == 0
    assert (f"note: checkpoint {newest.name}: not checked (the engine skips it): damaged"
            in capsys.readouterr().out)


def test_another_journals_configuration_is_refused(checkpointed, tmp_path, capsys):
    _, path, _ = checkpointed
    _, cfg = copy(checkpointed, tmp_path)
    assert main(["journal", "verify", "--data-dir", str(cfg.journal.dir), "--config",
                 str(path)]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "is the configuration of the journal in" in err
    assert out == ""  # (refused before the journal is read)


def test_a_configuration_that_cannot_be_read_is_one_line_before_anything(checkpointed,
                                                                         tmp_path, capsys):
    _, cfg = copy(checkpointed, tmp_path)
    assert main(["journal", "verify", "--data-dir", str(cfg.journal.dir), "--config",
                 str(tmp_path / "none.toml")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("kronos-exec journal: --config: ") and "No such file" in err


def test_with_its_first_segments_archived_the_oldest_checkpoint_stands_in(checkpointed,
                                                                          tmp_path, capsys):
    config, cfg = copy(checkpointed, tmp_path)
    archivable = checkpoint.archivable_segments(cfg.journal.dir)
    assert archivable
    for segment in archivable:
        segment.unlink()
    (oldest_seq, oldest), (newest_seq, newest) = checkpoint.list_checkpoints(cfg.journal.dir)[::-1]
    assert verify(config, cfg) == 0
    out = capsys.readouterr().out
    assert f"note: checkpoint {oldest.name}: taken as given: the journal begins at seq" in out
    assert f"checkpoint {newest.name}: the journal's replay through seq {newest_seq}" in out


def test_under_a_configuration_without_the_journals_accounts_nothing_is_compared(
        checkpointed, tmp_path, capsys):
    """A replay under another configuration (an account missing) reaches another state: each
    checkpoint would be reported as disagreeing. Said instead, as ``journal checkpoint`` says
    it."""
    config, cfg = copy(checkpointed, tmp_path)
    text = config.read_text()
    assert '"DEMO1", ' in text and "[risk.accounts.DEMO1]" in text
    config.write_text(text.replace('"DEMO1", ', "").replace("[risk.accounts.DEMO1]",
                                                            "[risk.accounts.OTHER]"))
    assert verify(config, load_config(config)) == 0
    out = capsys.readouterr().out
    assert "BROKEN" not in out
    assert out.count("not checked: the journal holds") == 2
    assert "of account 'DEMO1', which this configuration does not have" in out
