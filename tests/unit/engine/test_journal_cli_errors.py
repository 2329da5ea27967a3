"""``kronos-exec journal`` on journals it cannot fully use: unreadable segments are a finding,
not a traceback; ``export`` never writes over the journal it reads; a segment whose name
disagrees with its header is reported, and readers never start past what they were asked for;
the order id of a valuation record is exported; and ``demo --help`` says where the journal goes.
"""
import errno
import pathlib
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import cmd_journal
from engine.cli import main
from engine.journal import (
    JournalCorruptError,
    JournalReader,
    JournalWriter,
    RecordKind,
    list_segments,
    segment_name,
    verify,
)
from engine.messages import JournalValuation

T0 = 1_704_205_800_000_000_000  # 2024-01-02T14:30:00Z
S = 1_000_000_000


@pytest.fixture
def journal(tmp_path):
    """20 records of 61 bytes in segments of 5 records: seq 1, 6, 11 and 16 start one."""
    path = tmp_path / "journal"
    with JournalWriter(path, fsync="none", rotate_bytes=400) as j:
        for i in range(20):
            j.append(RecordKind.EVENT, b"\x80", ts_ns=T0 + i * S)   # msgpack {}
    assert [p.name for p in list_segments(path)] == [segment_name(s) for s in (1, 6, 11, 16)]
    return path


def _contents(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# ---------------------------------------------------------------- J1: unreadable segments
def _directory(path, monkeypatch):
    path.mkdir()


def _dangling_symlink(path, monkeypatch):
    path.symlink_to(path.parent / "nowhere")


def _eio(path, monkeypatch):
    # A failed read(2) on a bad disk: unlike a failed open, its OSError names no file.
    path.write_bytes(b"")
    real = pathlib.Path.read_bytes

    def read_bytes(self):
        if self == path:
            raise OSError(errno.EIO, "Input/output error")
        return real(self)
    monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)


UNREADABLE = [(_directory, "Is a directory"), (_dangling_symlink, "No such file or directory"),
              (_eio, "Input/output error")]


@pytest.mark.parametrize("make,reason", UNREADABLE, ids=["directory", "dangling-symlink", "eio"])
def test_verify_reports_an_unreadable_segment_as_the_break(journal, monkeypatch, capsys, make,
                                                           reason):
    bad = journal / segment_name(21)
    make(bad, monkeypatch)
    assert main(["journal", "verify", "--data-dir", str(journal)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"BROKEN: unreadable at {bad} (seq 21): {reason}",
                                "20 records before it are intact (seq 1..20)"]
    assert err == ""
    result = verify(journal)
    assert not result.ok and result.records == 20
    assert (result.problem.path, result.problem.seq, result.problem.problem,
            result.problem.detail) == (bad, 21, "unreadable", reason)


@pytest.mark.parametrize("make,reason", UNREADABLE, ids=["directory", "dangling-symlink", "eio"])
def test_export_of_an_unreadable_segment_says_which_and_writes_nothing(journal, tmp_path,
                                                                       monkeypatch, capsys,
                                                                       make, reason):
    bad = journal / segment_name(21)
    make(bad, monkeypatch)
    out = tmp_path / "x.parquet"
    assert main(["journal", "export", "--data-dir", str(journal), "--out", str(out)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"kronos-exec journal: cannot read {bad}: {reason}; nothing written"]
    assert not out.exists() and not (tmp_path / "x.parquet.tmp").exists()


def test_a_journal_directory_that_cannot_be_listed_is_one_line(journal, monkeypatch, capsys):
    def refuse(data_dir):
        raise PermissionError(errno.EACCES, "Permission denied", str(data_dir))
    monkeypatch.setattr(cmd_journal, "list_segments", refuse)
    assert main(["journal", "verify", "--data-dir", str(journal)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"kronos-exec journal: cannot list {journal}: Permission denied"]


def test_a_leftover_tmp_directory_fails_the_export_cleanly_and_stays(journal, tmp_path, capsys):
    out = tmp_path / "x.parquet"
    (tmp_path / "x.parquet.tmp").mkdir()
    (tmp_path / "x.parquet.tmp" / "keep").write_text("not ours")
    assert main(["journal", "export", "--data-dir", str(journal), "--out", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"kronos-exec journal: cannot write {out}: ")
    assert "x.parquet.tmp" in err[0] and "directory" in err[0]
    assert not out.exists() and (tmp_path / "x.parquet.tmp" / "keep").read_text() == "not ours"


# ---------------------------------------------------------------- J2: --out onto the journal
def _refused(journal, out, capsys, expected):
    before = _contents(journal)
    assert main(["journal", "export", "--data-dir", str(journal), "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert _contents(journal) == before
    assert verify(journal).ok


def test_export_refuses_to_overwrite_a_segment_of_the_journal(journal, capsys):
    _refused(journal, journal / segment_name(11), capsys, "is inside the journal directory")


def test_export_refuses_any_new_file_in_the_journal_directory(journal, capsys):
    _refused(journal, journal / segment_name(21), capsys, "is inside the journal directory")
    _refused(journal, journal / "day.parquet", capsys, "is inside the journal directory")
    assert not (journal / "day.parquet").exists() and not (journal / segment_name(21)).exists()


def test_export_refuses_the_journal_directory_through_a_symlink(journal, tmp_path, capsys):
    (tmp_path / "alias").symlink_to(journal)
    _refused(journal, tmp_path / "alias" / segment_name(6), capsys,
             "is inside the journal directory")
    (tmp_path / "link.parquet").symlink_to(journal / segment_name(6))
    _refused(journal, tmp_path / "link.parquet", capsys, "is inside the journal directory")
    (tmp_path / "jalias").symlink_to(journal)
    assert main(["journal", "export", "--data-dir", str(tmp_path / "jalias"),
                 "--out", str(journal / "x.parquet")]) == 2
    assert "is inside the journal directory" in capsys.readouterr().err


def test_export_refuses_to_overwrite_a_segment_elsewhere(journal, tmp_path, capsys):
    backup = tmp_path / "backup"
    backup.mkdir()
    copy = backup / "first.bin"
    shutil.copyfile(journal / segment_name(1), copy)     # a segment, whatever its name
    named = backup / segment_name(1)
    named.write_bytes(b"a damaged segment")              # named as one, whatever it holds
    for out, expected in ((copy, "is a journal segment"), (named, "named like a journal segment")):
        before = out.read_bytes()
        assert main(["journal", "export", "--data-dir", str(journal), "--out", str(out)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and expected in err[0], err
        assert out.read_bytes() == before
    # An ordinary existing file is still replaced.
    (backup / "old.parquet").write_bytes(b"old")
    assert main(["journal", "export", "--data-dir", str(journal),
                 "--out", str(backup / "old.parquet")]) == 0
    assert pq.read_table(backup / "old.parquet").num_rows == 20


# ---------------------------------------------------------------- J3: names vs headers
@pytest.mark.parametrize("first,renamed", [(11, 8), (11, 14)])
def test_a_renamed_segment_fails_verify(journal, capsys, first, renamed):
    (journal / segment_name(first)).rename(journal / segment_name(renamed))
    result = verify(journal)
    assert not result.ok
    assert (result.problem.path.name, result.problem.problem, result.problem.seq) == \
        (segment_name(renamed), "name", first)
    assert main(["journal", "verify", "--data-dir", str(journal)]) == 1
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"BROKEN: name at {segment_name(renamed)} offset 0 (seq {first}): ")
    assert f"its name must be {segment_name(first)}" in line


@pytest.mark.parametrize("first,misnamed", [(11, "11.krj"), (16, "16.krj"), (1, "1.krj"),
                                           (6, "000000000000000000006.krj")])
def test_a_segment_file_not_zero_padded_is_reported_as_misnamed(journal, capsys, first,
                                                                 misnamed):
    """4711.krj was reported as a missing segment (sorted by name it came last, so the
    next segment broke the sequence), and as the last segment it passed verify (review)."""
    (journal / segment_name(first)).rename(journal / misnamed)
    result = verify(journal)
    assert not result.ok
    assert (result.problem.path.name, result.problem.problem, result.problem.seq) == \
        (misnamed, "name", first)
    assert result.records == first - 1 and result.segments == 4
    assert main(["journal", "verify", "--data-dir", str(journal)]) == 1
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"BROKEN: name at {misnamed} offset 0 (seq {first}): a misnamed "
                           f"segment file")
    assert f"rename it to {segment_name(first)}" in line
    with pytest.raises(JournalCorruptError) as info:
        JournalWriter(journal)                       # the writer does not open beside it
    assert info.value.problem == "name" and info.value.path.name == misnamed
    (journal / misnamed).rename(journal / segment_name(first))
    assert verify(journal).ok


def test_a_misnamed_copy_beside_its_segment_is_not_advised_over_it(journal):
    shutil.copy(journal / segment_name(11), journal / "11.krj")
    result = verify(journal)
    assert (result.problem.path.name, result.problem.problem) == ("11.krj", "name")
    assert f"{segment_name(11)} exists too" in result.problem.detail


def test_a_copy_of_a_segment_under_another_name_is_not_advised_over_the_original(journal,
                                                                                 capsys):
    """verify told to rename a duplicated segment to its header's name, which the genuine
    segment holds (audit): following that advice would overwrite it."""
    import shutil
    shutil.copy(journal / segment_name(11), journal / segment_name(12))
    assert main(["journal", "verify", "--data-dir", str(journal)]) == 1
    line = capsys.readouterr().out.splitlines()[0]
    assert f"{segment_name(11)} exists too: this file may be a copy of it, to be removed" in line
    assert "its name must be" not in line


@pytest.mark.parametrize("first,renamed,start", [(11, 8, 9), (11, 8, 12), (11, 14, 12),
                                                 (11, 14, 15), (6, 3, 4)])
def test_a_reader_never_starts_past_the_seq_asked_for(journal, first, renamed, start):
    (journal / segment_name(first)).rename(journal / segment_name(renamed))
    with pytest.raises(JournalCorruptError) as info:
        for record in JournalReader(journal).records(start):
            assert record.seq == start   # every record from the one asked for, or an error
            start += 1
    assert info.value.problem == "name" and info.value.path.name == segment_name(renamed)


def test_a_reader_from_a_seq_in_good_segments_is_unaffected(journal):
    (journal / segment_name(6)).rename(journal / segment_name(3))
    assert [r.seq for r in JournalReader(journal).records(16)] == [16, 17, 18, 19, 20]


# ---------------------------------------------------------------- J4: valuation order id
def test_export_puts_a_valuations_order_id_in_the_order_id_column(tmp_path):
    path = tmp_path / "journal"
    with JournalWriter(path, fsync="none") as j:
        j.append_msg(RecordKind.META, JournalValuation(order_id=3, value_ticks=12_000), ts_ns=T0)
    out = tmp_path / "x.parquet"
    assert main(["journal", "export", "--data-dir", str(path), "--out", str(out)]) == 0
    table = pq.read_table(out)
    assert table.schema.field("order_id").type == pa.string()
    assert table.column("msg_type").to_pylist() == ["JournalValuation"]
    assert table.column("order_id").to_pylist() == ["3"]    # as an ExecutionReport carries it


# ---------------------------------------------------------------- J5: demo --help
def test_demo_help_says_the_journal_is_in_a_subdirectory(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "journal directory" not in text
    assert "the journal goes to its journal/ subdirectory" in text
