"""Tamper evidence beyond the chain: a head hash kept outside the journal (an anchor) finds
what a consistent chain hides, and the kinds of tampering a compliance reviewer would try are
each reported at the first record they break.

The chain alone cannot show a journal rewritten from an edit to its end, forged records
appended with their hashes, or records cut off its end: the chain is consistent again.
docs/journal.md said to keep the head hash ``verify`` prints somewhere safe "to pin the
history up to that point", but nothing checked a journal against it: ``verify
--anchor SEQ:HASH`` does.
"""
import struct
import zlib

import msgspec
import pytest

from engine import cmd_journal
from engine.journal import (RECORD_HEADER_SIZE, Anchor, JournalError, JournalReader,
                            JournalWriter, RecordKind, list_segments, verify)
from ext.journalframe import frame_record


def write(path, n, *, fsync="always", rotate_bytes=700, start=1):
    with JournalWriter(path, fsync=fsync, rotate_bytes=rotate_bytes) as writer:
        for i in range(start, start + n):
            writer.append(RecordKind.EVENT, msgspec.msgpack.encode({"i": i, "pad": "x" * 30}),
                          ts_ns=1_000 + i)
    return path


def records(path):
    return list(JournalReader(path))


def run(*argv):
    parser = cmd_journal.argparse.ArgumentParser()
    cmd_journal.add_arguments(parser)
    return cmd_journal.run(parser.parse_args(list(argv)))


def anchor_text(record) -> str:
    return f"{record.seq}:{record.hash.hex()}"


def rewrite_from(path, seq: int, payload: bytes) -> None:
    """What a forger who knows the format does: replace record ``seq`` and rebuild every record
    after it (CRCs and chain hashes), so that the chain is consistent again."""
    kept = [r for r in records(path) if r.seq < seq]
    rest = [r for r in records(path) if r.seq >= seq]
    for segment in list_segments(path):
        segment.unlink()
    (path / "durable.seq").unlink()
    with JournalWriter(path, fsync="none") as writer:
        for record in kept + rest:
            body = payload if record.seq == seq else record.payload
            writer.append(record.kind, body, ts_ns=record.ts_ns)


def append_forged(path, payload: bytes) -> None:
    """A record framed by the format's own code, chained to the last one, appended."""
    last = records(path)[-1]
    out = bytearray()
    frame_record(out, last.hash, last.seq + 1, last.ts_ns + 1, RecordKind.EVENT, payload)
    with open(last.path, "ab") as segment:
        segment.write(out)


# ---------------------------------------------------------------- anchors
def test_a_journal_rewritten_after_an_edit_verifies_but_fails_its_anchor(tmp_path, capsys):
    write(tmp_path, 20)
    pin = records(tmp_path)[14]
    rewrite_from(tmp_path, 9, msgspec.msgpack.encode({"i": 9, "pad": "forged"}))
    assert verify(tmp_path).ok  # the chain alone: consistent again
    result = verify(tmp_path, [Anchor(pin.seq, pin.hash)])
    assert not result.ok
    assert (result.problem.problem, result.problem.seq) == ("anchor", 15)
    assert result.records == 14
    assert run("verify", "--data-dir", str(tmp_path), "--anchor", anchor_text(pin)) == 1
    out = capsys.readouterr().out
    assert "BROKEN: anchor at" in out and "(seq 15)" in out
    assert "rewritten at or before seq 15" in out


def test_an_earlier_anchor_that_matches_narrows_where_the_rewrite_is(tmp_path):
    write(tmp_path, 20)
    early, late = records(tmp_path)[4], records(tmp_path)[17]
    rewrite_from(tmp_path, 11, b"\xa0")
    result = verify(tmp_path, [Anchor(late.seq, late.hash), Anchor(early.seq, early.hash)])
    assert (result.problem.problem, result.problem.seq) == ("anchor", 18)
    assert "between seq 6 (the anchor at seq 5 matched) and seq 18" in result.problem.detail


def test_forged_records_appended_with_their_hashes_fail_an_anchor_at_the_old_head(tmp_path,
                                                                                     capsys):
    """The anchor pins the history up to its record: forged records after it leave it intact
    (the verify line says how far the journal goes), records cut off before it do not."""
    write(tmp_path, 12)
    head = records(tmp_path)[-1]
    append_forged(tmp_path, b"\xa6forged")
    assert verify(tmp_path).ok and verify(tmp_path).last_seq == 13
    assert run("verify", "--data-dir", str(tmp_path), "--anchor", anchor_text(head)) == 0
    out = capsys.readouterr().out
    assert "anchored: the chain hash of seq 12 is the one given" in out
    assert "OK: 13 records (seq 1..13)" in out


@pytest.mark.parametrize("fsync", ["none", "always"])
def test_records_cut_off_the_end_fail_an_anchor_past_the_new_end(tmp_path, capsys, fsync):
    """Under ``none``, and with durable.seq removed under ``always``, a journal cut at a
    record boundary verifies: only the anchor shows the loss."""
    write(tmp_path, 20, fsync=fsync, rotate_bytes=1 << 20)
    head = records(tmp_path)[-1]
    last_segment = list_segments(tmp_path)[-1]
    cut = records(tmp_path)[-4]  # records 17..20 go
    last_segment.write_bytes(last_segment.read_bytes()[:cut.offset])
    (tmp_path / "durable.seq").unlink(missing_ok=True)
    assert verify(tmp_path).ok
    result = verify(tmp_path, [Anchor(head.seq, head.hash)])
    assert (result.problem.problem, result.problem.seq) == ("anchor", 17)
    assert (result.problem.path, result.problem.offset) == (last_segment, cut.offset)
    assert "the journal ends at seq 16, before the anchored record 20" in result.problem.detail
    assert run("verify", "--data-dir", str(tmp_path), "--anchor", anchor_text(head)) == 1
    assert "BROKEN: anchor" in capsys.readouterr().out


def test_an_anchor_in_archived_segments_cannot_pass(tmp_path):
    write(tmp_path, 20)
    pin = records(tmp_path)[1]
    list_segments(tmp_path)[0].unlink()  # archived: the journal begins later
    assert verify(tmp_path).ok
    result = verify(tmp_path, [Anchor(pin.seq, pin.hash)])
    assert result.problem.problem == "anchor"
    assert "cannot be checked" in result.problem.detail


def test_a_matching_anchor_on_an_untouched_journal(tmp_path):
    write(tmp_path, 20)
    pins = [Anchor(r.seq, r.hash) for r in records(tmp_path)[::7]]
    result = verify(tmp_path, pins)
    assert result.ok and result.records == 20


@pytest.mark.parametrize("text", ["12", "x:00", "0:" + "00" * 32, "5:abcd", "5:" + "zz" * 32])
def test_a_malformed_anchor_is_refused_with_one_line(tmp_path, capsys, text):
    write(tmp_path, 3)
    with pytest.raises(SystemExit) as exit_:
        run("verify", "--data-dir", str(tmp_path), "--anchor", text)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --anchor: {text!r}" in err
    assert "an anchor is SEQ:HASH" in err or "hex digits" in err


def test_two_anchors_at_one_seq_that_disagree_are_refused(tmp_path, capsys):
    write(tmp_path, 3)
    one, two = "2:" + "00" * 32, "2:" + "11" * 32
    assert run("verify", "--data-dir", str(tmp_path), "--anchor", one, "--anchor", two) == 2
    assert "two anchors at seq 2" in capsys.readouterr().err


# ---------------------------------------------------------------- the tampering a reviewer tries
def _bytes_of(record) -> bytes:
    data = record.path.read_bytes()
    return data[record.offset:record.offset + RECORD_HEADER_SIZE + len(record.payload)]


def _fix_crc(data: bytearray, offset: int) -> None:
    length = struct.unpack_from("<I", data, offset)[0]
    end = offset + RECORD_HEADER_SIZE + length
    struct.pack_into("<I", data, offset + 4,
                     zlib.crc32(data[offset + 8:end], zlib.crc32(data[offset:offset + 4])))


def test_two_records_swapped_break_the_sequence_at_the_first(tmp_path):
    write(tmp_path, 10, rotate_bytes=1 << 20)
    five, six = records(tmp_path)[4:6]
    data = five.path.read_bytes()
    end = six.offset + len(_bytes_of(six))
    five.path.write_bytes(data[:five.offset] + _bytes_of(six) + _bytes_of(five) + data[end:])
    result = verify(tmp_path)
    assert (result.problem.problem, result.problem.seq, result.problem.offset) == \
        ("sequence", 5, five.offset)


def test_a_copy_of_a_record_inserted_breaks_the_sequence_after_it(tmp_path):
    write(tmp_path, 10, rotate_bytes=1 << 20)
    three = records(tmp_path)[2]
    data = three.path.read_bytes()
    end = three.offset + len(_bytes_of(three))
    three.path.write_bytes(data[:end] + _bytes_of(three) + data[end:])
    result = verify(tmp_path)
    assert (result.problem.problem, result.problem.seq, result.problem.offset) == \
        ("sequence", 4, end)


def test_the_last_record_edited_is_a_break_at_it_with_its_crc_or_without(tmp_path, capsys):
    """With its CRC recomputed the edit is a chain break at it. Without, the record reads as
    a torn tail; under a syncing policy durable.seq says it was durable, which no torn tail
    is: verify reported records "missing" at durable.seq offset 0, and a torn tail beside
    it, where one record is there and fails its checksum."""
    write(tmp_path / "crc", 10)
    last = records(tmp_path / "crc")[-1]
    data = bytearray(last.path.read_bytes())
    data[last.offset + RECORD_HEADER_SIZE + 1] ^= 1
    _fix_crc(data, last.offset)
    last.path.write_bytes(bytes(data))
    result = verify(tmp_path / "crc")
    assert (result.problem.problem, result.problem.seq) == ("chain", 10)

    write(tmp_path / "raw", 10)
    last = records(tmp_path / "raw")[-1]
    data = bytearray(last.path.read_bytes())
    data[last.offset + RECORD_HEADER_SIZE + 1] ^= 1
    last.path.write_bytes(bytes(data))
    for anchors in ([], [Anchor(last.seq, last.hash)]):  # (an anchor on it: the same finding)
        result = verify(tmp_path / "raw", anchors)
        assert (result.problem.problem, result.problem.seq) == ("checksum", 10)
        assert (result.problem.path, result.problem.offset) == (last.path, last.offset)
        assert "not a torn tail" in result.problem.detail and result.torn is None
    assert run("verify", "--data-dir", str(tmp_path / "raw")) == 1
    out = capsys.readouterr().out
    assert not out.startswith("torn tail")
    assert out.startswith(f"BROKEN: checksum at {last.path.name} offset {last.offset} (seq 10)")
    # The writer (serve) refuses it, saying the same: not a segment cut off, a record damaged.
    with pytest.raises(JournalError, match=rf"seq 10 is there but fails its checks at "
                                           rf"{last.path.name} @ {last.offset} \(last record "
                                           rf"fails its checksum\): damaged or edited"):
        JournalWriter(tmp_path / "raw", fsync="always")
    # Under none (not sealed) a power loss can leave just that: a torn tail, verify OK, noted.
    write(tmp_path / "none", 10, fsync="none")
    last = records(tmp_path / "none")[-1]
    data = bytearray(last.path.read_bytes())
    data[last.offset + RECORD_HEADER_SIZE + 1] ^= 1
    last.path.write_bytes(bytes(data))
    result = verify(tmp_path / "none")
    assert result.ok and result.torn.offset == last.offset and result.unsynced_mark == 10


def test_a_middle_segment_removed_is_a_sequence_break_at_its_first_seq(tmp_path):
    write(tmp_path, 20)
    segments = list_segments(tmp_path)
    assert len(segments) >= 3
    gone = int(segments[1].stem)
    segments[1].unlink()
    result = verify(tmp_path)
    assert (result.problem.problem, result.problem.seq, result.problem.path) == \
        ("sequence", gone, segments[2])
