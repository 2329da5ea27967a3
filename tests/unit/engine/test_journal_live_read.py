"""Reading a journal while its writer rotates segments: ``verify``, ``export`` and the
readers must not report a hole the journal does not have.

A directory listing is not a snapshot: listed while the writer makes segment after
segment, it can hold a segment made during the listing and not one made just before
it (seen on ext4: ``verify`` on a live journal with 4 KiB segments said ``BROKEN:
sequence ... segment starts at 39928, expected 39906`` while segment 39906 was there).
The listing the kernel gave is reproduced here: the real one, less the segment the
journal goes on in (the only thing replaced is what ``readdir`` returned).
"""
import engine.journal as journal_module
from engine.cli import main as cli_main
from engine.journal import JournalReader, JournalWriter, RecordKind, list_segments, verify


def written(tmp_path, records=60):
    """A journal of ``records`` records in many small segments; returns its directory."""
    directory = tmp_path / "journal"
    with JournalWriter(directory, fsync="none", rotate_bytes=4096) as writer:
        for i in range(records):
            writer.append(RecordKind.EVENT, bytes([i]) * 300, ts_ns=1_000 + i)
    assert len(list_segments(directory)) > 4
    return directory


def listed_during_a_rotation(monkeypatch, directory):
    """The next listing of ``directory`` leaves out its third segment, as one taken while
    the writer made it and the next ones can; the listings after it are whole."""
    real = journal_module.list_segments
    calls = []

    def listing(data_dir):
        segments = real(data_dir)
        calls.append(len(segments))
        return segments[:2] + segments[3:] if len(calls) == 1 else segments
    monkeypatch.setattr(journal_module, "list_segments", listing)
    return calls


def test_verify_and_reading_see_no_hole_a_listing_during_a_rotation_left(tmp_path,
                                                                         monkeypatch, capsys):
    directory = written(tmp_path)
    expected = [record.seq for record in JournalReader(directory)]
    listed_during_a_rotation(monkeypatch, directory)
    result = verify(directory)
    assert result.ok, result.problem
    assert (result.records, result.first_seq, result.last_seq) == (60, 1, 60)
    listed_during_a_rotation(monkeypatch, directory)
    assert [record.seq for record in JournalReader(directory)] == expected
    listed_during_a_rotation(monkeypatch, directory)
    assert cli_main(["journal", "verify", "--data-dir", str(directory)]) == 0
    assert "OK: 60 records (seq 1..60)" in capsys.readouterr().out
    listed_during_a_rotation(monkeypatch, directory)
    out = tmp_path / "all.parquet"
    assert cli_main(["journal", "export", "--data-dir", str(directory), "--out", str(out)]) == 0
    import pyarrow.parquet as pq
    assert pq.read_table(out).column("seq").to_pylist() == expected


def test_a_segment_really_missing_is_still_a_hole(tmp_path):
    directory = written(tmp_path)
    missing = list_segments(directory)[2]
    missing.unlink()
    result = verify(directory)
    assert not result.ok
    assert result.problem.problem == "sequence"
    assert result.problem.seq == int(missing.stem)
