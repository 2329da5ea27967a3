"""``kronos-exec journal``: times read to the nanosecond, and arguments that cannot work refused
with one line and a non-zero exit."""
import argparse

import pyarrow.parquet as pq
import pytest

from engine.cli import main
from engine.cmd_journal import parse_time
from engine.journal import JournalWriter, RecordKind

T0 = 1_704_205_800_000_000_000  # 2024-01-02T14:30:00Z
S = 1_000_000_000


@pytest.mark.parametrize("text,ns", [
    ("2024-01-02T14:30:00Z", T0),
    ("2024-01-02T14:30:00", T0),                              # no zone: UTC
    ("2024-01-02T15:30:00+01:00", T0),
    ("2024-01-02T14:30:10.000000500Z", T0 + 10 * S + 500),    # below a microsecond
    ("2024-01-02T14:30:10.123456789+00:00", T0 + 10 * S + 123_456_789),
    ("2024-01-02T15:30:10.000000001+01:00", T0 + 10 * S + 1),
    ("2024-01-02 14:30:10.5", T0 + 10 * S + 500_000_000),
    ("2024-01-02T14:30:10,25z", T0 + 10 * S + 250_000_000),
    ("2024-01-02T14:30:10.0000000010Z", T0 + 10 * S + 1),     # a tenth digit that is 0
    ("1969-12-31T23:59:59.999999999Z", -1),
    (str(T0 + 7), T0 + 7),
])
def test_parse_time_is_exact_to_the_nanosecond(text, ns):
    assert parse_time(text) == ns


def test_parse_time_refuses_what_it_cannot_represent():
    with pytest.raises(argparse.ArgumentTypeError, match="at most 9 fractional digits"):
        parse_time("2024-01-02T14:30:10.0000000001Z")
    with pytest.raises(argparse.ArgumentTypeError, match="neither ISO 8601"):
        parse_time("yesterday")


def test_a_date_in_iso_basic_form_is_not_taken_for_nanoseconds(capsys, tmp_path):
    """``--start 20240102`` was read as 20,240,102 ns after the epoch: an export of the day
    asked for wrote every record after 1970 (or, with --end 20240103, none), exit 0."""
    with pytest.raises(argparse.ArgumentTypeError, match="'20240102' is ambiguous: the date "
                                                         "2024-01-02 or 20240102 nanoseconds"):
        parse_time("20240102")
    assert parse_time("2024-01-02") == T0 - (14 * 3600 + 30 * 60) * S
    assert parse_time("120240102") == 120_240_102  # not a date: nanoseconds, as documented
    with pytest.raises(SystemExit) as exit_:
        main(["journal", "export", "--data-dir", str(tmp_path), "--start", "20240102",
              "--out", str(tmp_path / "x.parquet")])
    assert exit_.value.code == 2
    assert "write the date as 2024-01-02" in capsys.readouterr().err


@pytest.fixture
def journal(tmp_path):
    path = tmp_path / "journal"
    with JournalWriter(path, fsync="none") as j:
        for i in range(20):
            j.append(RecordKind.EVENT, b"\x80", ts_ns=T0 + i * S)   # msgpack {}
    return path


def test_export_start_below_a_microsecond(journal, tmp_path, capsys):
    out = tmp_path / "x.parquet"
    assert main(["journal", "export", "--data-dir", str(journal), "--start",
                 "2024-01-02T14:30:10.000000500Z", "--end", "2024-01-02T14:30:12Z",
                 "--out", str(out)]) == 0
    # seq 11 is at 14:30:10 exactly: 500 ns before --start.
    assert pq.read_table(out).column("seq").to_pylist() == [12]


def test_verify_an_empty_directory_is_not_ok(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["journal", "verify", "--data-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kronos-exec journal: no journal in {tmp_path / 'empty'}")
    assert len(err.splitlines()) == 1


def test_export_refuses_start_after_end_and_a_missing_out_directory(journal, tmp_path, capsys):
    out = tmp_path / "x.parquet"
    assert main(["journal", "export", "--data-dir", str(journal), "--start", str(T0 + 5 * S),
                 "--end", str(T0), "--out", str(out)]) == 2
    assert "--start (1704205805000000000 ns) is after --end" in capsys.readouterr().err
    assert not out.exists()
    missing = tmp_path / "nodir" / "x.parquet"
    assert main(["journal", "export", "--data-dir", str(journal), "--out", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"directory {tmp_path / 'nodir'} does not exist" in err and len(err.splitlines()) == 1
    assert main(["journal", "export", "--data-dir", str(journal), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_verify_says_where_timestamps_go_back(tmp_path, capsys):
    """A wall clock stepped back stamps later records earlier: not a break (exit 0), but
    verify names the steps, the largest and where, since a time range then straddles them."""
    path = tmp_path / "journal"
    stamps = [T0, T0 + S, T0 + 2 * S, T0 - 8 * S, T0 - 7 * S, T0 - 7 * S - 250_000, T0 + 3 * S]
    with JournalWriter(path, fsync="none") as j:
        for ts in stamps:
            j.append(RecordKind.EVENT, b"\x80", ts_ns=ts)
    assert main(["journal", "verify", "--data-dir", str(path)]) == 0
    out = capsys.readouterr().out
    assert "note: timestamps go back 2 time(s), by up to 10.000000 s (seq 4)" in out
    assert out.splitlines()[-1].startswith("OK: 7 records")


def test_verify_of_monotonic_timestamps_says_nothing_of_them(journal, capsys):
    assert main(["journal", "verify", "--data-dir", str(journal)]) == 0
    assert "timestamps" not in capsys.readouterr().out


def test_a_payload_json_cannot_hold_is_a_note_not_a_traceback(tmp_path, capsys):
    """JournalWriter.append takes any bytes: a msgpack extension type failed the export
    with a traceback and no file; bytes that are not msgpack lost their payload in silence."""
    import msgspec
    journal = tmp_path / "journal"
    with JournalWriter(journal, fsync="none") as j:
        j.append(RecordKind.META, msgspec.msgpack.encode(msgspec.msgpack.Ext(5, b"abc")))
        j.append(RecordKind.META, msgspec.msgpack.encode({b"key": 1}))
        j.append(RecordKind.META, b"\xc1")
        j.append(RecordKind.EVENT, msgspec.msgpack.encode({"type": "X", "qty": "1"}))
    out = tmp_path / "x.parquet"
    assert main(["journal", "export", "--data-dir", str(journal), "--out", str(out)]) == 0
    table = pq.read_table(out)
    assert table.column("seq").to_pylist() == [1, 2, 3, 4]
    assert table.column("payload_json").to_pylist() == [None, '{"a2V5":1}', None,
                                                        '{"type":"X","qty":"1"}']
    assert "note: 2 record(s) exported without payload_json (seq 1, 3)" in \
        capsys.readouterr().out


def test_an_export_of_a_journal_whose_first_segments_were_archived_says_so(tmp_path, capsys):
    """A time range before the first segment kept exported nothing of it, exit 0 and no word:
    an analyst took the empty (or partial) file for the whole record of that time."""
    journal = tmp_path / "journal"
    with JournalWriter(journal, fsync="none", rotate_bytes=4096) as j:
        for i in range(200):
            j.append(RecordKind.EVENT, b"\x80", ts_ns=T0 + i * S)
    segments = sorted(journal.glob("*.krj"))
    assert len(segments) > 2
    segments[0].unlink()  # archived
    begins = int(segments[1].stem)
    out = tmp_path / "x.parquet"
    assert main(["journal", "export", "--data-dir", str(journal), "--start", str(T0),
                 "--end", str(T0 + 3 * S), "--out", str(out)]) == 0
    assert pq.read_table(out).num_rows == 0
    assert (f"note: the journal begins at seq {begins} (its first segments were archived or "
            f"deleted): the records before it are not in this export") in capsys.readouterr().out
    # A range across the rotations of what is kept: start included, end excluded.
    first_kept = T0 + (begins - 1) * S
    assert main(["journal", "export", "--data-dir", str(journal), "--start", str(first_kept),
                 "--end", str(T0 + 199 * S), "--out", str(out)]) == 0
    assert pq.read_table(out).column("seq").to_pylist() == list(range(begins, 200))
    capsys.readouterr()


def test_an_export_of_a_whole_journal_has_no_archive_note(journal, tmp_path, capsys):
    assert main(["journal", "export", "--data-dir", str(journal), "--out",
                 str(tmp_path / "x.parquet")]) == 0
    assert "archived" not in capsys.readouterr().out


def test_the_export_is_on_disk_before_it_takes_its_name(journal, tmp_path, monkeypatch):
    """Renamed without a sync, a power loss could leave an empty or partial file under the
    name of an export that had said 'wrote': the file is synced, then renamed, then its
    directory synced (the calls are recorded as they reach the kernel, and made)."""
    import os

    out = tmp_path / "x.parquet"
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        events.append(("replace", str(dst)))
        return real_replace(src, dst, **kw)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    assert main(["journal", "export", "--data-dir", str(journal), "--out", str(out)]) == 0
    monkeypatch.undo()
    assert events == [("fsync", str(out) + ".tmp"), ("replace", str(out)),
                      ("fsync", str(tmp_path))]
    assert pq.read_table(out).num_rows == 20
