"""The journal's identity outlives its first segment: archived, the gateways still know it.

Gateways store their cursors with the journal's identity and refuse a cursor of another
journal (a journal made anew starts at seq 1 again). With checkpoints the first segments
may be archived; the identity then comes from the ``identity`` file the writer keeps.
"""
import shutil

from engine.journal import IDENTITY_FILE, JournalWriter, journal_identity, list_segments
from engine.messages import JournalSession
from engine.journal import RecordKind


def write(path, n):
    with JournalWriter(path, fsync="none", rotate_bytes=4096) as writer:
        for i in range(n):
            writer.append_msg(RecordKind.META, JournalSession(session_id=f"s{i}", principal="p"))


def test_the_identity_outlives_the_first_segments(tmp_path):
    write(tmp_path, 300)
    identity = journal_identity(tmp_path)
    assert (tmp_path / IDENTITY_FILE).read_text().strip() == identity
    segments = list_segments(tmp_path)
    assert len(segments) >= 3
    (tmp_path.parent / "archive").mkdir()
    for segment in segments[:2]:
        shutil.move(segment, tmp_path.parent / "archive")
    assert journal_identity(tmp_path) == identity
    write(tmp_path, 10)  # (a writer reopening it keeps the file as it is)
    assert journal_identity(tmp_path) == identity


def test_a_journal_made_anew_in_the_directory_has_an_identity_of_its_own(tmp_path):
    write(tmp_path, 300)
    old = journal_identity(tmp_path)
    for segment in list_segments(tmp_path):
        segment.unlink()  # (the identity file stays behind)
    write(tmp_path, 5)
    assert journal_identity(tmp_path) not in (None, old)
    assert (tmp_path / IDENTITY_FILE).read_text().strip() == journal_identity(tmp_path)


def test_no_segment_is_archivable_before_the_identity_file_exists(tmp_path):
    # A journal an older engine wrote has none: its first segment names it, and archived,
    # gateways would take the journal for another one. A checkpoint writes the file.
    from engine import checkpoint
    write(tmp_path, 300)
    (tmp_path / IDENTITY_FILE).unlink()
    checkpoint.checkpoint_dir(tmp_path).mkdir(mode=0o700)
    checkpoint.checkpoint_path(tmp_path, 250).write_bytes(b"")
    assert checkpoint.archivable_segments(tmp_path) == []
    from engine.journal import keep_identity
    keep_identity(tmp_path)
    assert checkpoint.archivable_segments(tmp_path)
