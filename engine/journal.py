"""Append-only journal of every inbound command and every resulting event.

The journal sits after the pipeline: the service writes each decoded request
and each event it causes here, and gateways and audits read it back. It is
the engine's durable memory, so its format is built to be checked:

* every record is length-prefixed and carries a CRC-32 of its bytes, so a
  flipped bit is found;
* every record carries a BLAKE2b-256 hash chained over the previous record's
  hash, so an edited, inserted or removed record breaks the chain from that
  point (tamper evidence, not secrecy). The hash is unkeyed: whoever rewrites
  every record after an edit rebuilds a consistent chain, so the evidence
  holds against a chain hash kept elsewhere (``verify``'s anchors);
* a record cut short by a crash (a "torn" tail, possibly followed by the
  zeros of a file extended before its data landed) is recognised and dropped
  by readers, and truncated by the writer when it reopens the journal.

Files (segments) rotate by size in one data directory and are named by the
sequence number of their first record. ``docs/journal.md`` has the byte
layout, the fsync policies and the durability guarantee they give.
"""
from __future__ import annotations

import asyncio
import ctypes
import enum
import errno
import fcntl
import hashlib
import heapq
import logging
import mmap
import operator
import os
import struct
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, NamedTuple

import msgspec
import numpy as np

from ext import journalframe
from ext.journalframe import read_record
from ext.msgframe import FrameEncoder

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "group", "none"]

# ---------------------------------------------------------------- format
FILE_MAGIC = b"KRXJRNL\x00"
FORMAT_VERSION = 1
SEGMENT_SUFFIX = ".krj"
HASH_SIZE = 32
GENESIS_HASH = bytes(HASH_SIZE)

# Segment header: magic, version, reserved, crc32(header without this field),
# first record seq, creation time (ns), hash of the record before first_seq.
_FILE_HEADER = struct.Struct("<8sHHIQq32s")
FILE_HEADER_SIZE = _FILE_HEADER.size  # 64
# Record header: payload length, crc32, seq, timestamp (ns), kind, reserved,
# chain hash; the payload follows. The CRC covers every byte of the record
# except itself; the chain hash covers the previous hash, bytes 8..28 (seq,
# timestamp, kind, reserved) and the payload.
_RECORD_HEADER = struct.Struct("<IIQqHH32s")
RECORD_HEADER_SIZE = _RECORD_HEADER.size  # 60
# Records are framed by ext/journalframe.pyx (the engine's per-message path).
assert journalframe.RECORD_HEADER_SIZE == RECORD_HEADER_SIZE
# A length beyond this is not a record but garbage (a torn or corrupt header).
MAX_PAYLOAD = 64 << 20
_ANY_DECODER = msgspec.msgpack.Decoder()


class RecordKind(enum.IntEnum):
    """What a record holds."""

    COMMAND = 1  #: an inbound request (``messages.JournalCommand``)
    EVENT = 2    #: an outcome (``messages.JournalEvent``)
    META = 3     #: engine bookkeeping (start-up, configuration, markers)


class Record(NamedTuple):
    """One journal record as read back."""

    seq: int
    ts_ns: int
    kind: int
    payload: bytes
    hash: bytes
    path: Path
    offset: int

    def decode(self, decoder: msgspec.msgpack.Decoder | None = None):
        """The payload decoded with ``decoder`` (schemaless msgpack by default)."""
        return (decoder or _ANY_DECODER).decode(self.payload)


class JournalError(Exception):
    """The journal cannot be used as it is."""


class JournalFailedError(JournalError):
    """The writer stopped for good: the disk refused to make records durable.

    After a failed ``fdatasync`` the kernel may have dropped the dirty pages
    it could not write, so a later sync that succeeds proves nothing about
    them: no record after ``durable_seq`` can be acknowledged any more. The
    writer fails stop: it writes nothing more, and restarting on what is on
    disk is the way on (the journal then ends at a good record or a torn tail).
    """


class JournalLockedError(JournalError):
    """Another process writes this journal (it holds ``journal.lock``): two writers would
    interleave their sequences and break the chain for good."""


#: The file a writer holds an exclusive ``flock`` on for as long as it is open.
LOCK_NAME = "journal.lock"


def _lock(data_dir: Path) -> int:
    """Take the journal's writer lock; returns its file descriptor (closing it releases it).

    ``flock`` is released by the kernel when the process ends, ``kill -9``
    included, so a crashed engine never leaves a stale lock behind. The
    holder's pid is written into the file for the refusal's message.
    """
    path = data_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # a directory there, an immutable file, no rights
        raise JournalError(f"cannot open the journal's lock file {path}: "
                           f"{exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise JournalLockedError(f"{data_dir} is in use by another engine (pid {holder}, "
                                 f"which holds {path}); one journal has one writer") from None
    except BaseException:
        os.close(fd)
        raise
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:  # a full disk
        os.close(fd)
        raise JournalError(f"cannot write the journal's lock file {path}: "
                           f"{exc.strerror or exc}") from None
    return fd


#: The file in a journal directory that holds its durable seq (see DurableMark).
DURABLE_NAME = "durable.seq"


class DurableMark:
    """The journal's highest durable seq, in a mapped file beside its segments.

    A reader that hands records on (a gateway) must not pass it: a record
    written but not yet synced can vanish with a power cut, and the engine
    would then give its seq to another record, which consumers drop as a
    repeat of the one they were sent. The writer sets it as records become
    durable (under ``none``, as they are written: there is nothing better);
    readers read it without a system call. One aligned 8-byte word, written
    and read whole.

    Parameters
    ----------
    data_dir : str or PathLike
        The journal directory.
    create : bool
        The writer creates it; a reader opens an existing one.

    Raises
    ------
    FileNotFoundError
        Opening (``create=False``) a journal whose writer never made it.
    """

    def __init__(self, data_dir: str | os.PathLike, *, create: bool = False):
        fd = os.open(Path(data_dir) / DURABLE_NAME, os.O_RDWR | (os.O_CREAT if create else 0),
                     0o644)
        try:
            if os.fstat(fd).st_size < 8:
                # Written, not ftruncate'd (see engine.busy.BusyFlag): on a full
                # disk, ENOSPC here rather than SIGBUS at the first store.
                os.pwrite(fd, bytes(8), 0)
            self._map = mmap.mmap(fd, 8)
        finally:
            os.close(fd)  # the mapping keeps the file
        self._word = ctypes.c_uint64.from_buffer(self._map)

    #: Set in the word by a writer that syncs (``always``, ``group``): the mark
    #: then proves its records reached the disk (see JournalWriter's open check).
    SYNCED = 1 << 63

    @property
    def seq(self) -> int:
        """The highest seq the journal holds durably."""
        return self._word.value & ~self.SYNCED

    @seq.setter
    def seq(self, value: int) -> None:
        self._word.value = value | self._flag

    _flag = 0

    def mark_synced(self, synced: bool) -> None:
        """Whether the seqs this writer sets were made durable by a sync (not under ``none``)."""
        self._flag = self.SYNCED if synced else 0

    def seal(self, seq: int) -> None:
        """Set ``seq`` with ``SYNCED`` once, whatever the writer's policy: a writer under
        ``none`` that synced everything at a graceful stop (``JournalWriter.seal``)."""
        self._word.value = seq | self.SYNCED

    def close(self) -> None:
        """Unmap (the file stays for the other side)."""
        del self._word  # (a mapping with an exported buffer cannot close)
        self._map.close()


class JournalCorruptError(JournalError):
    """A record before the end of the journal fails its checks.

    Attributes
    ----------
    path : Path
        Segment file holding the bad record.
    offset : int
        Byte offset of the record in that file.
    seq : int or None
        Sequence number the record should have had.
    problem : str
        ``checksum``, ``chain``, ``sequence``, ``header``, ``length`` or ``name``
        (a segment file whose name is not its header's first seq).
    """

    def __init__(self, path: Path, offset: int, seq: int | None, problem: str, detail: str):
        super().__init__(f"{path.name} @ {offset} (seq {seq}): {problem}: {detail}")
        self.path, self.offset, self.seq, self.problem, self.detail = path, offset, seq, problem, detail


def chain_hash(prev_hash: bytes, fixed: bytes | memoryview, payload: bytes | memoryview) -> bytes:
    """The record hash: BLAKE2b-256 over the previous hash, the fixed fields and the payload."""
    # One call over the joined bytes (records are small): the same digest as
    # three updates, at a third of the Python calls on the append path.
    return hashlib.blake2b(b"".join((prev_hash, fixed, payload)), digest_size=HASH_SIZE).digest()


def segment_name(first_seq: int) -> str:
    """File name of the segment whose first record is ``first_seq``."""
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def list_segments(data_dir: str | os.PathLike) -> list[Path]:
    """Segment files of a journal, oldest first.

    Every ``<digits>.krj`` file is listed, in the order of the seq its name
    gives, a misnamed one (``4711.krj``, not zero-padded) included: sorted by
    name it would come last, and the segment would look missing where it
    belongs. Readers refuse it there (``check_zero_padded``).
    """
    directory = Path(data_dir)
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if is_segment_name(p)),
                  key=lambda p: (int(p.stem), p.name))


def first_kept_seq(data_dir: str | os.PathLike) -> int | None:
    """The seq its oldest segment file's name gives: the journal's first record still in
    ``data_dir``, above 1 once its first segments were archived (None: no segment)."""
    segments = list_segments(data_dir)
    return int(segments[0].stem) if segments else None


def is_segment_name(path: str | os.PathLike) -> bool:
    """Whether a file's name is a segment's (``<digits>.krj``), zero-padded or not.

    A misnamed segment (``4711.krj``) still counts as one, so that nothing
    takes it for a stray file; ``check_zero_padded`` is the stricter test.
    """
    path = Path(path)
    return path.suffix == SEGMENT_SUFFIX and path.stem.isdigit()


# ---------------------------------------------------------------- scanning
# Public for readers that follow a live journal (gateways/tail.py): parse a
# segment's header, then scan its bytes record by record; IncompleteRecord
# says "the writer is not done with this one yet", not "corrupt".
class SegmentHeader(NamedTuple):
    """A segment file's header: its first record's seq, creation time, the hash it chains from."""

    first_seq: int
    created_ns: int
    prev_hash: bytes


def parse_segment_header(path: Path, data: bytes | memoryview) -> SegmentHeader:
    """The header at the start of a segment's bytes; ``JournalCorruptError`` if it is bad."""
    if len(data) < FILE_HEADER_SIZE:
        raise JournalCorruptError(path, 0, None, "header", f"file header is {len(data)} bytes, "
                                                           f"needs {FILE_HEADER_SIZE}")
    magic, version, _, crc, first_seq, created_ns, prev_hash = _FILE_HEADER.unpack_from(data, 0)
    if magic != FILE_MAGIC:
        raise JournalCorruptError(path, 0, None, "header", f"bad magic {magic!r}")
    if version != FORMAT_VERSION:
        raise JournalCorruptError(path, 0, None, "header", f"unsupported format version {version}")
    if crc != zlib.crc32(bytes(data[16:FILE_HEADER_SIZE]), zlib.crc32(bytes(data[:12]))):
        raise JournalCorruptError(path, 0, None, "header", "file header checksum mismatch")
    return SegmentHeader(first_seq, created_ns, prev_hash)


def first_segment_header(data_dir: str | os.PathLike) -> tuple[Path, SegmentHeader] | None:
    """The oldest segment of a journal and its header; None when it has no segment.

    Raises ``JournalCorruptError`` for a bad header and ``OSError`` for an
    unreadable file.
    """
    segments = list_segments(data_dir)
    if not segments:
        return None
    with open(segments[0], "rb") as f:
        return segments[0], parse_segment_header(segments[0], f.read(FILE_HEADER_SIZE))


#: The file beside the segments that keeps the journal's identity (journal_identity).
IDENTITY_FILE = "identity"


def identity_of(created_ns: int) -> str:
    """A journal's identity written out: its first segment's creation time (ns) as 16 hex
    digits (what :func:`journal_identity` gives, and a ZeroMQ header's number reads as)."""
    return f"{created_ns:016x}"


def journal_identity(data_dir: str | os.PathLike) -> str | None:
    """Which journal ``data_dir`` holds: its first segment's creation time (ns), in hex.

    Two journals made apart never share it, and it never changes while the
    journal grows, so whatever follows a journal by seq (a gateway's cursor)
    can tell "this journal, further on" from "another journal whose seqs
    start again at 1". While the journal begins at seq 1 its first segment's
    header gives it; the writer also keeps it in the file ``identity`` beside
    the segments (:func:`keep_identity`), which gives it once the first
    segments were archived. ``None`` while the journal has no readable
    segment.
    """
    try:
        first = first_segment_header(data_dir)
    except (OSError, JournalCorruptError):
        return None
    if first is None:
        return None
    if first[1].first_seq != 1:
        try:
            kept = (Path(data_dir) / IDENTITY_FILE).read_text().strip()
        except OSError:
            kept = ""
        if kept:
            return kept
    return identity_of(first[1].created_ns)


def keep_identity(data_dir: str | os.PathLike) -> None:
    """Write the journal's identity (its first segment's) to its ``identity`` file while the
    journal begins at seq 1, so that it outlives that segment. A file left by a journal
    that was made anew in the directory is replaced; one whose first segments are gone
    is left as it is."""
    first = first_segment_header(data_dir)
    if first is None or first[1].first_seq != 1:
        return
    identity = identity_of(first[1].created_ns)
    path = Path(data_dir) / IDENTITY_FILE
    try:
        if path.read_text().strip() == identity:
            return
    except OSError:
        pass
    write_durably(path, f"{identity}\n".encode())


def write_durably(path: Path, *parts: bytes | memoryview, mode: int = 0o644) -> None:
    """Replace ``path`` with ``parts`` written one after the other, whole or not at all.

    Written under a temporary name of this process's (two writers of the same
    file do not share one), synced, renamed over ``path``, and the directory
    synced: a crash leaves the old file or the new one, and at worst a
    ``.<name>.<pid>.tmp`` file (removed here on an error).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                out.write(part)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


def fsync_path(path: str | os.PathLike) -> None:
    """``fsync`` a file or a directory by its name (a directory: the names created,
    renamed or removed in it reach the disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_dir(directory: str | os.PathLike) -> None:
    """``fsync`` a directory: the names created, renamed or removed in it reach the disk."""
    fsync_path(directory)


def _pack_file_header(first_seq: int, prev_hash: bytes) -> bytes:
    header = bytearray(_FILE_HEADER.pack(FILE_MAGIC, FORMAT_VERSION, 0, 0, first_seq,
                                         time.time_ns(), prev_hash))
    crc = zlib.crc32(header[16:], zlib.crc32(header[:12]))
    struct.pack_into("<I", header, 12, crc)
    return bytes(header)


class IncompleteRecord(Exception):
    """The record at ``offset`` runs past the end of the data it sits in.

    ``problem`` is what it would be called were it not at the end (where a
    crash leaves it): ``length`` for a record cut short, ``checksum`` for
    a whole one whose checksum fails (its data never landed).
    """

    def __init__(self, offset: int, detail: str, problem: str = "length"):
        super().__init__(detail)
        self.offset = offset
        self.problem = problem


def scan_records(path: Path, data: bytes, expected_seq: int | None, prev_hash: bytes,
                 *, check_chain: bool = True, base_offset: int = 0) -> Iterator[Record]:
    """Records of one segment's bytes, checked.

    Raises ``IncompleteRecord`` when the data ends inside a record (or the last record
    is incomplete on disk: its checksum fails and nothing, or only zero bytes, follow
    it), and ``JournalCorruptError`` for a bad record with data after it. ``base_offset``:
    where ``data`` starts in the file, added to the records' ``offset`` (the
    exceptions' offsets stay relative to ``data``).
    """
    view = memoryview(data)
    end = len(data)
    offset = FILE_HEADER_SIZE
    data = bytes(data)  # no copy for bytes; the compiled reader takes bytes
    while offset < end:
        # A record that checks out is read in compiled code; anything else
        # is looked at here, to tell a torn tail from corruption and say why.
        good = read_record(data, offset, expected_seq or 0, prev_hash, check_chain)
        if good is not None:
            seq, ts_ns, kind, payload, stored_hash, record_end = good
            yield Record(seq, ts_ns, kind, payload, stored_hash, path, base_offset + offset)
            prev_hash, expected_seq, offset = stored_hash, seq + 1, record_end
            continue
        if end - offset < RECORD_HEADER_SIZE:
            raise IncompleteRecord(offset, f"{end - offset} bytes left, a record header needs {RECORD_HEADER_SIZE}")
        length, crc, seq, ts_ns, kind, _, stored_hash = _RECORD_HEADER.unpack_from(view, offset)
        record_end = offset + RECORD_HEADER_SIZE + length
        if length > MAX_PAYLOAD or record_end > end:
            # A length running past the end is what a torn write leaves, but
            # a flipped bit in a length field mid-file looks the same; only a
            # whole good record further on tells them apart, and then
            # dropping "the tail" would throw good records away.
            if _good_record_after(view, offset + 1, expected_seq):
                raise JournalCorruptError(path, offset, expected_seq, "length",
                                          f"record claims {length} payload bytes but good records follow")
            raise IncompleteRecord(offset, f"record claims {length} payload bytes, {end - offset - RECORD_HEADER_SIZE} remain")
        actual = zlib.crc32(view[offset + 8:record_end], zlib.crc32(view[offset:offset + 4]))
        if actual != crc:
            # A crash can extend the file before the data blocks land: the
            # last record reads as zeros or stale bytes, and the file may go
            # on with zeros for pages past it. Nothing after it was ever
            # written, so it is a torn tail; unless a good record turns up
            # inside its span (a damaged length swallowing acknowledged
            # records), and zeros followed by anything else are damage.
            zeros_after = end - record_end
            if (zeros_after == 0 or data.count(0, record_end) == zeros_after) and \
                    not _good_record_after(view, offset + 1, expected_seq):
                if zeros_after == 0:
                    raise IncompleteRecord(offset, "last record fails its checksum", "checksum")
                raise IncompleteRecord(offset, f"last record fails its checksum; "
                                               f"{zeros_after} zero bytes follow it", "checksum")
            raise JournalCorruptError(path, offset, expected_seq, "checksum",
                                      f"crc32 {actual:#010x} != stored {crc:#010x}")
        if expected_seq is not None and seq != expected_seq:
            raise JournalCorruptError(path, offset, expected_seq, "sequence",
                                      f"record seq {seq}, expected {expected_seq}")
        payload = view[offset + RECORD_HEADER_SIZE:record_end]
        if check_chain:
            computed = chain_hash(prev_hash, view[offset + 8:offset + 28], payload)
            if computed != stored_hash:
                raise JournalCorruptError(path, offset, seq, "chain",
                                          "hash does not chain from the previous record")
        yield Record(seq, ts_ns, kind, bytes(payload), stored_hash, path, base_offset + offset)
        prev_hash = stored_hash
        expected_seq = seq + 1
        offset = record_end


#: How many seqs past a bad record ``_good_record_after`` looks for: a bad block of that
#: many records is still told from a torn tail.
GOOD_AFTER_SEQS = 4096


def _good_record_after(view: memoryview, start: int, expected_seq: int | None) -> bool:
    """Whether a record with a later seq and a valid checksum starts after ``start``.

    Any of the next ``GOOD_AFTER_SEQS`` seqs: a damaged block may cover
    several records, and only a good one after it shows that what looks like
    a torn tail is damage with acknowledged records behind it. One pass over
    the bytes (numpy, at each of the 8 alignments) finds every place whose 8
    bytes read as such a seq; only those are checked, so a torn tail of
    megabytes costs milliseconds.
    """
    if expected_seq is None:
        return False
    data = view.obj if isinstance(view.obj, bytes) else bytes(view)
    end = len(data)
    low, high = expected_seq + 1, expected_seq + GOOD_AFTER_SEQS
    for base in range(start + 8, min(start + 16, end)):   # the seq field of a record at >= start
        count = (end - base) // 8
        if count <= 0:
            break
        seqs = np.frombuffer(data, dtype="<u8", count=count, offset=base)
        for index in np.flatnonzero((seqs >= low) & (seqs <= high)):
            offset = base + 8 * int(index) - 8
            length, crc = struct.unpack_from("<II", data, offset)
            record_end = offset + RECORD_HEADER_SIZE + length
            if record_end <= end and crc == zlib.crc32(view[offset + 8:record_end],
                                                       zlib.crc32(view[offset:offset + 4])):
                return True
    return False


class TornTail(NamedTuple):
    """A record cut short at the end of the journal (dropped by readers)."""

    path: Path
    offset: int
    dropped_bytes: int
    detail: str
    #: what it would be called were it not at the end: ``length`` (cut short),
    #: ``checksum`` (whole, failing its CRC) or ``header`` (a segment without its header)
    problem: str = "length"


# ---------------------------------------------------------------- reader
class JournalReader:
    """Iterate the records of a journal, oldest first, checking each one.

    A torn last record is dropped (and described in ``torn``); a bad record
    anywhere else raises ``JournalCorruptError``. Reading a journal that is
    being written is safe: the record being appended looks torn and is left
    for the next read.

    Parameters
    ----------
    data_dir : str or PathLike
        The journal's directory.
    check_chain : bool
        Recompute the hash chain while reading (on by default; off is faster
        when only ``verify`` is trusted to do it).

    Examples
    --------
    >>> for record in JournalReader("data/journal"):      # doctest: +SKIP
    ...     print(record.seq, record.decode())
    """

    def __init__(self, data_dir: str | os.PathLike, *, check_chain: bool = True):
        self.data_dir = Path(data_dir)
        self.check_chain = check_chain
        self.torn: TornTail | None = None
        self.next_seq: int | None = None     # after reading to the end: see records()

    def __iter__(self) -> Iterator[Record]:
        return self.records()

    def records(self, start_seq: int = 1, *, start_ns: int | None = None,
                end_ns: int | None = None) -> Iterator[Record]:
        """Records with ``seq >= start_seq`` and ``start_ns <= ts_ns < end_ns``.

        Segments that end before ``start_seq`` are skipped unread, but then
        the chain is only checked from the first segment read. Read to the
        end, ``next_seq`` is the seq after the journal's last record (None for
        an empty journal).
        """
        self.torn = None
        self.next_seq = None
        segments = list_segments(self.data_dir)
        if start_seq > 1:
            # The last segment whose first record is <= start_seq holds it.
            firsts = [int(p.stem) for p in segments]
            keep = max([i for i, first in enumerate(firsts) if first <= start_seq], default=0)
            segments = segments[keep:]
        expected, prev_hash = None, None
        index = -1
        while index + 1 < len(segments):
            index += 1
            path = segments[index]
            if expected is not None and int(path.stem) > expected \
                    and (self.data_dir / segment_name(expected)).exists():
                # Listed while a writer rotated: a directory listing is not a snapshot,
                # and can hold a segment made during it but not one made before that
                # (seen on ext4 with small segments). The segment the journal goes on in
                # is there now: read on from a fresh listing, rather than report a hole
                # in the sequence that is not in the journal. (Up to the segment listed
                # last, not past it: reading on behind a writer could go on for ever.)
                last_listed = int(segments[-1].stem)
                fresh = [p for p in list_segments(self.data_dir)
                         if expected <= int(p.stem) <= last_listed]
                if fresh and int(fresh[0].stem) == expected:
                    segments, index, path = fresh, 0, fresh[0]
            # Before the header is read: a misnamed file is reported as that, whatever
            # its header (torn, zeros, another seq) would otherwise make of it.
            check_zero_padded(path, expected if expected is not None else int(path.stem))
            data = _read_segment(path)
            last_segment = index == len(segments) - 1
            try:
                header = parse_segment_header(path, data)
            except JournalCorruptError as exc:
                if (last_segment and expected is not None and int(path.stem) != expected
                        and (len(data) < FILE_HEADER_SIZE or data.count(0) == len(data))):
                    # A crash while rotating leaves the segment named for the
                    # seq after the last record; any other name is a file
                    # that is not this journal's (left in the directory).
                    raise JournalCorruptError(
                        path, 0, expected, "name",
                        f"a file without a whole segment header, named for seq "
                        f"{int(path.stem)}, follows a segment that ends at seq {expected - 1}: "
                        f"not a segment started at a crash (that one would be "
                        f"{segment_name(expected)}); remove it if it is not the journal's"
                    ) from None
                if last_segment and len(data) < FILE_HEADER_SIZE:
                    self.torn = TornTail(path, 0, len(data), "segment header incomplete",
                                         "header")
                    self.next_seq = expected
                    return
                if last_segment and data.count(0) == len(data):
                    # A power loss while rotating: the file's size reached the
                    # disk, its header did not. No record in it can have been
                    # acknowledged: the header is synced before any record.
                    self.torn = TornTail(path, 0, len(data), "segment header never written "
                                                             "(all zeros)", "header")
                    self.next_seq = expected
                    return
                # The header cannot say which seq the segment starts at, but
                # the previous segment (or the file's name) does.
                seq = expected if expected is not None else int(path.stem)
                raise JournalCorruptError(path, 0, seq, exc.problem, exc.detail) from None
            check_segment_name(path, header, expected if expected is not None else header.first_seq)
            if expected is not None and header.first_seq != expected:
                raise JournalCorruptError(path, 0, expected, "sequence",
                                          f"segment starts at {header.first_seq}, expected {expected}")
            if prev_hash is not None and header.prev_hash != prev_hash:
                raise JournalCorruptError(path, 0, expected, "chain",
                                          "segment does not chain from the previous one")
            expected = header.first_seq
            prev_hash = header.prev_hash
            try:
                for record in scan_records(path, data, expected, prev_hash, check_chain=self.check_chain):
                    expected, prev_hash = record.seq + 1, record.hash
                    if record.seq < start_seq:
                        continue
                    if start_ns is not None and record.ts_ns < start_ns:
                        continue
                    if end_ns is not None and record.ts_ns >= end_ns:
                        continue
                    yield record
            except IncompleteRecord as torn:
                if not last_segment:
                    # Another segment follows, so no crash can explain it:
                    # a whole record failing its checksum is damage to it.
                    detail = (f"{torn}, and another segment follows: damage, not a torn tail"
                              if torn.problem == "checksum" else
                              f"segment is cut short before the next one: {torn}")
                    raise JournalCorruptError(path, torn.offset, expected, torn.problem,
                                              detail) from None
                self.torn = TornTail(path, torn.offset, len(data) - torn.offset, str(torn),
                                     torn.problem)
                self.next_seq = expected
                return
        self.next_seq = expected


def check_zero_padded(path: Path, seq: int | None) -> None:
    """Raise ``JournalCorruptError`` (problem ``name``, at ``seq``) unless the segment's file
    name is ``segment_name`` of the seq it gives: 20 zero-padded digits.

    ``4711.krj`` names the segment of seq 4711 to a person but not to the writer,
    which would start another file beside it, nor to tools that sort or match
    names; verify reported it as a missing segment (or, last, not at all).

    Parameters
    ----------
    path : Path
        A file ``is_segment_name`` accepts.
    seq : int or None
        The seq the reader was at, for the report.
    """
    proper = path.with_name(segment_name(int(path.stem)))
    if path.name == proper.name:
        return
    raise _misnamed(path, seq, proper,
                    "a misnamed segment file: segment names are the first seq in 20 "
                    "zero-padded digits, and this one is not",
                    f"rename it to {proper.name} if its header's first seq is {int(path.stem)}")


def check_segment_name(path: Path, header, seq: int) -> None:
    """Raise ``JournalCorruptError`` (problem ``name``, at ``seq``) unless the segment's file
    name is its header's first seq, zero-padded (``check_zero_padded``).

    A reader starting from a seq picks its segment by name (``JournalReader``,
    ``gateways.tail``): a renamed one would make it start past the records
    it was asked for, without a word.
    """
    check_zero_padded(path, seq)
    if int(path.stem) != header.first_seq:
        proper = path.with_name(segment_name(header.first_seq))
        raise _misnamed(path, seq, proper,
                        f"the file is named for seq {int(path.stem)} but its header says its "
                        f"first record is seq {header.first_seq} (renamed?)",
                        f"its name must be {proper.name}")


def _misnamed(path: Path, seq: int | None, proper: Path, problem: str,
              fix: str) -> JournalCorruptError:
    """The error (problem ``name``) for segment file ``path``, which should be ``proper``:
    ``problem`` says how it is wrong, ``fix`` what to do when no file has that name (one
    that has may be the original, of which this file is a copy)."""
    advice = (f"{proper.name} exists too: this file may be a copy of it, to be removed, "
              f"not renamed over it" if proper.exists() else fix)
    return JournalCorruptError(path, 0, seq, "name", f"{problem}; {advice}")


def _read_segment(path: Path) -> bytes:
    """A segment's bytes; an ``OSError`` always names the file (a failed ``read``, EIO say,
    does not by itself)."""
    try:
        return path.read_bytes()
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


class VerifyProblem(NamedTuple):
    """The first place where a journal fails verification."""

    path: Path
    offset: int
    seq: int | None
    problem: str
    detail: str


class VerifyResult(NamedTuple):
    """Outcome of :func:`verify`.

    ``ok`` is false when ``problem`` is set; a torn tail alone keeps ``ok``
    true (it is what a crash leaves, and the writer repairs it).
    """

    ok: bool
    records: int
    first_seq: int | None
    last_seq: int | None
    segments: int
    problem: VerifyProblem | None
    torn: TornTail | None
    last_hash: bytes
    #: the seq a writer under ``none`` had written through, when the journal ends before
    #: it (0 otherwise): a power loss may explain it, and so may records cut off since
    unsynced_mark: int = 0
    #: where the records' timestamps go back (the wall clock was stepped back), or None
    clock_back: ClockBack | None = None


class ClockBack(NamedTuple):
    """Where a journal's timestamps go back: records are stamped with the wall clock, and a
    clock stepped back (not slewed) stamps later records with earlier times.

    Not a break (the chain and the sequence are intact, and replay follows the
    sequence, not the times), but a time range then selects records from both
    sides of the step, and a reader of the times should know.
    """

    steps: int          # records stamped earlier than the record before them
    largest_ns: int     # the largest step back
    at_seq: int         # the record stamped ``largest_ns`` before its predecessor


def written_mark(data_dir: str | os.PathLike) -> tuple[int, bool]:
    """The seq the writer left in ``durable.seq`` (0: none), and whether a sync made it
    durable (``always``, ``group``, a sealed ``none``) or it only follows the writes."""
    try:
        word = (Path(data_dir) / DURABLE_NAME).read_bytes()[:8]
    except FileNotFoundError:
        return 0, False
    word = int.from_bytes(word, sys.byteorder) if len(word) == 8 else 0
    return word & ~DurableMark.SYNCED, bool(word & DurableMark.SYNCED)


def missing_note(mark: int, end: int) -> str:
    """What to say of a journal ending at ``end`` below the seq ``mark`` a syncing writer
    made durable: records that were acknowledged are gone."""
    return (f"the journal ends at seq {end}, but seq {mark} was made durable: {mark - end} "
            f"records are missing")


def unsynced_note(mark: int, end: int) -> str:
    """What to say of a journal ending at ``end`` below the seq ``mark`` a writer under
    ``none`` had written through."""
    return (f"the journal ends at seq {end}, but its writer (fsync none) had written through "
            f"seq {mark}: {mark - end} records are gone, as a power loss before they reached "
            f"the disk leaves it; after a kill -9 or a clean stop nothing is lost, so anything "
            f"else took them (a segment truncated, emptied or deleted)")


class Anchor(NamedTuple):
    """A record's chain hash kept outside the journal (an end-of-day report's ``seq:hash``),
    which :func:`verify` holds the journal to.

    The chain alone shows an edit only to a checker that can tell the
    edited chain from the original: whoever rewrites every record after the
    edit (or appends forged records, or cuts records off the end) leaves a
    chain that is consistent again. An anchor pins the history up to its
    record: a journal rewritten at or before it no longer reaches its hash.
    """

    seq: int
    hash: bytes

    @classmethod
    def parse(cls, text: str) -> "Anchor":
        """``SEQ:HASH`` (the hash in hex, as ``verify`` prints a chain head) -> Anchor.

        Raises
        ------
        ValueError
            ``text`` is not of that form (the message says how).
        """
        seq, sep, digest = text.strip().partition(":")
        if not sep or not seq.isdigit() or int(seq) < 1:
            raise ValueError(f"{text!r}: an anchor is SEQ:HASH, the record's seq (1 or more) "
                             f"and its chain hash in hex, e.g. 897:5f0c...")
        try:
            value = bytes.fromhex(digest)
        except ValueError:
            value = b""
        if len(value) != HASH_SIZE:
            raise ValueError(f"{text!r}: the hash must be {HASH_SIZE * 2} hex digits "
                             f"(a chain hash as verify prints it)")
        return cls(int(seq), value)


def verify(data_dir: str | os.PathLike, anchors: Iterable[Anchor] = ()) -> VerifyResult:
    """Check every record's checksum, sequence and hash chain, and the anchors given.

    Parameters
    ----------
    data_dir : str or PathLike
        The journal's directory.
    anchors : iterable of Anchor
        Chain hashes kept outside the journal (see :class:`Anchor`): the
        record of each anchor's seq must be in the journal and have that
        hash, or verification fails with the problem ``anchor`` (at the
        record, or at the journal's start or end when it does not hold the
        record: archived, or cut off the end).

    Returns
    -------
    VerifyResult
        The number of good records and the first record where the checksum,
        the sequence or the chain breaks (``problem``), if any. A segment
        that cannot be read (a directory or a dangling symlink in its place,
        an I/O error, no permission) is the problem ``unreadable``, with the
        operating system's reason as its detail.

    Raises
    ------
    ValueError
        Two anchors at one seq with different hashes.
    """
    # The mark first: a live writer moves it on while the segments are read,
    # past what was read, and records it reached later are no loss.
    mark, synced = written_mark(data_dir)
    pinned: dict[int, bytes] = {}
    for anchor in sorted(anchors):
        if pinned.get(anchor.seq, anchor.hash) != anchor.hash:
            raise ValueError(f"two anchors at seq {anchor.seq} with different hashes")
        pinned[anchor.seq] = anchor.hash
    matched = 0  # the last anchor the journal reached with its hash
    end_path, end_offset = None, 0  # where the last record read ends
    reader = JournalReader(data_dir, check_chain=True)
    count, first, last, last_hash = 0, None, None, GENESIS_HASH
    problem = None
    prev_ts, back_steps, back_largest, back_seq = None, 0, 0, 0
    try:
        for record in reader:
            if first is None and pinned and min(pinned) < record.seq:
                # Before the first record read: archived, or deleted from the front.
                problem = VerifyProblem(record.path, record.offset, record.seq, "anchor",
                                        f"the journal begins at seq {record.seq}, after the "
                                        f"anchored record {min(pinned)}: it cannot be checked "
                                        f"(its segment was archived or deleted)")
                break
            expected_hash = pinned.get(record.seq)
            if expected_hash is not None:
                if record.hash != expected_hash:
                    since = (f"between seq {matched + 1} (the anchor at seq {matched} "
                             f"matched) and seq {record.seq}" if matched
                             else f"at or before seq {record.seq}")
                    problem = VerifyProblem(
                        record.path, record.offset, record.seq, "anchor",
                        f"record {record.seq} has the chain hash {record.hash.hex()}, not "
                        f"the anchored {expected_hash.hex()}: the journal was rewritten "
                        f"{since} (the chain is consistent again after the edit)")
                    break
                matched = record.seq
            count += 1
            end_path, end_offset = record.path, record.offset + RECORD_HEADER_SIZE + len(record.payload)
            first = record.seq if first is None else first
            last, last_hash = record.seq, record.hash
            if prev_ts is not None and record.ts_ns < prev_ts:
                back_steps += 1
                if prev_ts - record.ts_ns > back_largest:
                    back_largest, back_seq = prev_ts - record.ts_ns, record.seq
            prev_ts = record.ts_ns
    except JournalCorruptError as exc:
        problem = VerifyProblem(exc.path, exc.offset, exc.seq, exc.problem, exc.detail)
    except OSError as exc:
        # On a failing disk is when verify is run: what cannot be read is
        # its finding, not a crash of the checker.
        path = Path(exc.filename) if exc.filename is not None else Path(data_dir)
        seq = last + 1 if last is not None else (int(path.stem) if path.stem.isdigit() else None)
        problem = VerifyProblem(path, 0, seq, "unreadable", exc.strerror or str(exc))
    unsynced = 0
    torn = reader.torn
    if problem is None:
        end = last or 0
        if synced and mark > end and torn is not None:
            # What looks like a torn tail is a record that was made durable: a crash tears
            # only the record being written, so this one was damaged or edited since (an
            # edited last record whose CRC was not recomputed reads so). Reported where it
            # is, as what it is, not as records gone from the end.
            problem = VerifyProblem(
                torn.path, torn.offset, end + 1, torn.problem,
                f"{torn.detail}, but seq {mark} was made durable ({DURABLE_NAME}): not a "
                f"torn tail (a crash tears only a record not yet durable) but damage or an "
                f"edit after it was written; {mark - end} durable records from here on are "
                f"unreadable")
            torn = None
        elif synced and mark > end:  # records made durable are gone (see JournalWriter's open check)
            problem = VerifyProblem(Path(data_dir) / DURABLE_NAME, 0, end + 1, "missing",
                                    missing_note(mark, end))
        elif mark > end:
            unsynced = mark
    if problem is None and pinned and max(pinned) > (last or 0):
        end = last or 0
        # (Where the next record would be: the end of the last segment read.)
        where, at = ((torn.path, torn.offset) if torn else
                     (end_path, end_offset) if end_path is not None else (Path(data_dir), 0))
        problem = VerifyProblem(where, at, end + 1, "anchor",
                                f"the journal ends at seq {end}, before the anchored record "
                                f"{max(pinned)}: records were removed from its end"
                                + (" (or damaged: see the torn tail)" if torn else ""))
    try:
        segments = len(list_segments(data_dir))
    except OSError:  # the directory itself cannot be listed: reported above
        segments = 0
    clock_back = ClockBack(back_steps, back_largest, back_seq) if back_steps else None
    return VerifyResult(problem is None, count, first, last, segments,
                        problem, torn, last_hash, unsynced, clock_back)


def clock_back_note(back: ClockBack) -> str:
    """What ``verify`` says of a journal whose timestamps go back."""
    return (f"timestamps go back {back.steps} time(s), by up to "
            f"{back.largest_ns // 10**9}.{back.largest_ns % 10**9 // 1000:06d} s "
            f"(seq {back.at_seq}): the wall clock was stepped back. Not a break (replay "
            f"follows the sequence), but a time range (export --start/--end) selects "
            f"records from both sides of a step")


# ---------------------------------------------------------------- writer
class _Segment:
    __slots__ = ("path", "fd", "first_seq", "size")

    def __init__(self, path: Path, fd: int, first_seq: int, size: int):
        self.path, self.fd, self.first_seq, self.size = path, fd, first_seq, size


class JournalWriter:
    """Append records to a journal, durable according to an fsync policy.

    On open the writer finds the end of the journal, truncates a torn last
    record (a crash leftover) and continues the sequence and the hash chain.
    It refuses to open a journal with a bad record before its end.

    Policies:

    ``always``
        ``append`` returns after the record is written and ``fdatasync``-ed;
        the record is durable when the caller sends its ack. The default.
    ``group``
        ``append`` writes and returns at once; a committer thread syncs every
        ``group_commit_us`` microseconds (counted from the first record not
        yet synced) and then marks everything written before the sync
        durable. Hold an ack until :meth:`wait_durable` or the callback of
        :meth:`call_when_durable` says its record is durable.
    ``none``
        Written, never synced: records survive a crash of the process (they
        are in the OS page cache once ``append`` returns) but not of the
        machine. ``durable_seq`` follows ``last_seq``.

    Parameters
    ----------
    data_dir : str or PathLike
        Directory of the segment files (created if missing).
    fsync : {"always", "group", "none"}
        The policy above.
    group_commit_us : int
        Group commit window for ``group``.
    rotate_bytes : int
        A new segment starts once the current one reaches this size.
    buffered : bool
        Keep appended records in memory until :meth:`flush`, which writes
        them with one ``write`` (and, under ``always``, one ``fdatasync``).
        The engine appends everything one loop wake-up produces, then
        flushes, then sends the acknowledgements: one system call per batch
        instead of one per record. A record is neither written nor durable
        before the flush (``last_seq`` counts it, ``durable_seq`` does not).
    on_sync : callable, optional
        Called with the seconds each ``fdatasync`` of records took (the
        engine's ``kronos_journal_sync_seconds``), from the thread that
        synced: the appender's under ``always``, the committer's under
        ``group``. It must be quick and thread-safe. Appends that do not
        sync never call it.
    on_failure : callable, optional
        Called once with the ``JournalFailedError`` when the journal fails
        (an ``fdatasync`` of records fails, a short write cannot be undone,
        or a segment rotation fails at an append and again at the flush),
        from the thread that found it: the appender's, or the committer's
        under ``group``. The engine stops on it. Without one the
        failure is logged.

    Raises
    ------
    JournalCorruptError
        If a record before the end of the journal is bad.

    Notes
    -----
    One thread appends (the event loop); the committer thread only syncs.

    A write cut short (a full disk) is undone, the file truncated back to its
    last whole record, and raises ``OSError``: the records stay buffered and
    the next :meth:`flush` (or append) writes them whole. A failed
    ``fdatasync`` is final (see ``JournalFailedError``): from then on
    :meth:`flush`, :meth:`sync` and :meth:`call_when_durable` raise it,
    :meth:`wait_durable` raises it for a record not yet durable, and nothing
    more becomes durable. A buffered ``append`` raises for neither: a segment
    rotation it cannot do is left to the flush.
    """

    # Slots, not an instance dict: on Python 3.11 an instance with more than 30
    # attributes has its dict built for good, and then no call of one of its
    # methods is specialised by the interpreter, about 240 instructions more each;
    # and the compiled appends (three or four per order) read and write the slots
    # they use in place, at their offsets. The ``__dict__`` slot stays empty (and
    # the calls specialised) unless something sets an attribute that is not
    # listed, as a test does to fail one writer's sync.
    __slots__ = ("data_dir", "_dir_created", "_lock_fd", "_dir_fd", "_next_file",
                 "_no_next_file", "fsync", "group_commit_us", "rotate_bytes", "buffered",
                 "on_sync", "on_failure", "_failure", "_out", "_out_seq", "_encoder", "_lock",
                 "_cond", "_sync_lock", "_retired", "_unsynced", "_waiters", "_waiter_order",
                 "_pending_since", "_closed", "_committer_stopping", "repaired",
                 "_rotation_failing", "_failure_watchers", "_spare_fds", "_durable_seq",
                 "_written_seq", "_last_seq", "_last_hash", "_durable_mark", "_committer",
                 "_segment", "__dict__")

    def __init__(self, data_dir: str | os.PathLike, *, fsync: FsyncPolicy = "always",
                 group_commit_us: int = 1000, rotate_bytes: int = 64 << 20,
                 buffered: bool = False, on_sync: Callable[[float], None] | None = None,
                 on_failure: Callable[[JournalFailedError], None] | None = None):
        if fsync not in ("always", "group", "none"):
            raise ValueError(f"fsync policy must be always, group or none, not {fsync!r}")
        # An integer, as the compiled appends compare it in C (a float failed each append).
        rotate_bytes = operator.index(rotate_bytes)
        if group_commit_us <= 0 or rotate_bytes <= FILE_HEADER_SIZE + RECORD_HEADER_SIZE:
            raise ValueError("group_commit_us and rotate_bytes must be positive")
        self.data_dir = Path(data_dir)
        self._dir_created = not self.data_dir.exists()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, a read-only or virtual file system
            raise JournalError(f"cannot make the journal directory {self.data_dir}: "
                               f"{exc.strerror or exc}") from None
        # Before anything is read or repaired: a second writer's "torn tail"
        # may be the first one's record being written.
        self._lock_fd = _lock(self.data_dir)
        # Held for the writer's life: syncing a new segment's directory entry
        # then needs no descriptor (see SPARE_FDS).
        try:
            self._dir_fd = os.open(self.data_dir, os.O_RDONLY)
        except OSError as exc:
            os.close(self._lock_fd)
            raise JournalError(f"cannot open the journal directory {self.data_dir}: "
                               f"{exc.strerror or exc}") from None
        self._next_file: int | None = None   # the next segment's file, nameless (see below)
        self._no_next_file = False           # naming one failed: the spare descriptors only
        self.fsync = fsync
        self.group_commit_us = group_commit_us
        self.rotate_bytes = rotate_bytes
        self.buffered = buffered
        self.on_sync = on_sync
        self.on_failure = on_failure
        self._failure: JournalFailedError | None = None
        self._out = bytearray()          # buffered records not yet written
        self._out_seq = 0                # last seq in ``_out``
        # msgspec's bytes, written in C for the engine's records (one buffer: the
        # writer appends from one thread, as the appends' unlocked state assumes).
        self._encoder = FrameEncoder(msgspec.msgpack.Encoder().encode)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # Serialises fdatasync rounds: a round closes the retired files it
        # synced, which must not happen under another round's feet.
        self._sync_lock = threading.Lock()
        self._retired: list[_Segment] = []
        self._unsynced: list[Path] = []  # segments closed under "none" without a sync (seal)
        self._waiters: list[tuple[int, int, Callable[[], None]]] = []
        self._waiter_order = 0
        self._pending_since: float | None = None
        self._closed = False
        self._committer_stopping = False
        self.repaired: TornTail | None = None
        self._rotation_failing = False   # a rotation failed; logged once until one succeeds
        self._failure_watchers: set[Callable[[JournalFailedError], None]] = set()
        self._spare_fds: list[int] = []
        try:
            self._open()
            keep_identity(self.data_dir)
            self._durable_seq = self._written_seq = self._last_seq
            # What is on disk at open is what the journal holds: recovery replays it.
            self._durable_mark = DurableMark(self.data_dir, create=True)
            self._take_spare_fds()
            self._prepare_next_file()
        except OSError as exc:  # a full disk, a read-only file system
            self._release_fds()
            raise JournalError(f"cannot open the journal {self.data_dir}: "
                               f"{exc.strerror or exc}") from exc
        except BaseException:
            self._release_fds()
            raise
        self._durable_mark.mark_synced(fsync != "none")
        self._durable_mark.seq = self._last_seq
        self._committer: threading.Thread | None = None
        if fsync == "group":
            self._committer = threading.Thread(target=self._commit_loop, name="journal-commit",
                                               daemon=True)
            self._committer.start()

    # ------------------------------------------------------------ state
    @property
    def last_seq(self) -> int:
        """Sequence number of the last record written (0: empty journal)."""
        return self._last_seq

    @property
    def durable_seq(self) -> int:
        """Every record up to this one is durable under the policy."""
        return self._durable_seq

    @property
    def last_hash(self) -> bytes:
        """Chain hash of the last record written."""
        return self._last_hash

    @property
    def failure(self) -> str | None:
        """Why the journal failed (see ``JournalFailedError``), or None while it works."""
        return None if self._failure is None else str(self._failure)

    def fail(self, cause: OSError, what: str) -> JournalFailedError:
        """Fail stop on the owner's word: a write the owner cannot wait to retry.

        A short write leaves the journal usable (its records stay buffered
        for the next flush); an engine that acts on each command before its
        wake-up is written cannot wait, so it fails the journal here: the
        same end as a failed ``fdatasync``. Returns the error to raise.
        """
        return self._fail(cause, what)

    def _fail(self, cause: OSError, what: str) -> JournalFailedError:
        """Fail stop: record the first failure, report it once; returns the error to raise."""
        with self._lock:
            first = self._failure is None
            if first:
                self._failure = JournalFailedError(
                    f"journal failed: {what}: {cause}; records after seq {self._durable_seq} "
                    f"may not be durable, so none can be acknowledged: restart the engine "
                    f"on what is on disk")
                self._failure.__cause__ = cause
        if first:
            with self._lock:
                watchers = list(self._failure_watchers)
            for watcher in watchers:
                watcher(self._failed_error())
            if self.on_failure is None:
                log.error("%s", self._failure)
            else:
                try:
                    self.on_failure(self._failure)
                except Exception:  # the failure stands whatever the callback does
                    log.exception("journal failure callback failed")
        return self._failed_error()

    def _failed_error(self) -> JournalFailedError:
        # A fresh exception per raise: re-raising one instance keeps growing its traceback.
        error = JournalFailedError(*self._failure.args)
        error.__cause__ = self._failure.__cause__
        return error

    # ------------------------------------------------------------ open / rotate
    def _check_durable_kept(self, end_seq: int, torn: TornTail | None = None) -> None:
        """Refuse a journal that ends before the seq its ``durable.seq`` says was durable.

        Before any repair: a torn tail is a record being written at a crash,
        never one made durable. Records missing below the mark were made
        durable (and acknowledged, and published by gateways): the segment
        was truncated, emptied or deleted since. Starting on what is left
        would lose those orders and give their seqs to other records. Only a
        mark a syncing writer set counts: under ``none`` the mark follows the
        writes, and a power cut may take records below it as that policy allows.
        """
        mark, synced = written_mark(self.data_dir)
        if mark > end_seq and not synced:
            log.warning("journal %s: %s", self.data_dir, unsynced_note(mark, end_seq))
        elif mark > end_seq:
            # (A torn tail at or below the mark is a durable record damaged since: no crash
            # tears one. Said as what it is, where it is; verify reports it so too.)
            how = (f"seq {end_seq + 1} is there but fails its checks at {torn.path.name} @ "
                   f"{torn.offset} ({torn.detail}): damaged or edited since it was written"
                   if torn is not None else "a segment truncated, emptied or deleted")
            raise JournalError(
                f"journal {self.data_dir} ends at seq {end_seq}, but seq {mark} was made durable "
                f"({DURABLE_NAME}): {mark - end_seq} records acknowledged as durable are "
                f"missing ({how}); restore the journal from a copy, or remove {DURABLE_NAME} "
                f"to start on what is there, those orders lost")

    def _open(self) -> None:
        segments = list_segments(self.data_dir)
        if not segments:
            self._check_durable_kept(0)
            # Said aloud: a journal directory that vanished (an unmounted volume,
            # a typo in the path) looks the same, and loses every order before.
            log.warning("journal: a new journal begins in %s (%s): nothing from before is "
                        "recovered", self.data_dir,
                        "directory created" if self._dir_created else "no segment in it")
            self._last_seq, self._last_hash = 0, GENESIS_HASH
            self._segment = self._new_segment(1, GENESIS_HASH)
            return
        reader = JournalReader(self.data_dir)
        last = None
        for last in reader:
            pass
        torn = reader.torn
        path = segments[-1]
        self._check_durable_kept(last.seq if last is not None else int(path.stem) - 1, torn)
        if torn is not None and torn.offset == 0:
            # A segment whose header never made it to disk (a crash while
            # rotating): start it again under the same name.
            path.unlink()
            self._sync_dir()
            self.repaired = torn
            log.warning("journal: removed segment %s with a torn header", path.name)
            self._last_seq = int(path.stem) - 1
            if last is not None:
                self._last_hash = last.hash
            elif len(segments) > 1:  # the previous segment holds no record
                self._last_hash = parse_segment_header(segments[-2], segments[-2].read_bytes()).prev_hash
            else:
                self._last_hash = GENESIS_HASH
            self._segment = self._new_segment(self._last_seq + 1, self._last_hash)
            return
        if torn is not None:
            with open(path, "r+b") as handle:
                handle.truncate(torn.offset)
                handle.flush()
                os.fsync(handle.fileno())
            self.repaired = torn
            log.warning("journal: truncated torn record at %s @ %d (%d bytes: %s)",
                        path.name, torn.offset, torn.dropped_bytes, torn.detail)
        header = parse_segment_header(path, path.read_bytes()[:FILE_HEADER_SIZE])
        if last is not None:
            self._last_seq, self._last_hash = last.seq, last.hash
        else:
            self._last_seq, self._last_hash = header.first_seq - 1, header.prev_hash
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._segment = _Segment(path, fd, header.first_seq, os.fstat(fd).st_size)
        if self.fsync != "none":
            # An engine killed inside its group window (or between a write and
            # its fdatasync) left records written but perhaps not on disk: they
            # count as durable from here on (gateways publish them), so make
            # them so before the durable mark says it. Every segment, not only
            # the last: an engine that ran under "none" rotated without
            # syncing (a clean file's fdatasync costs next to nothing).
            for earlier in segments[:-1]:
                earlier_fd = os.open(earlier, os.O_RDONLY)
                try:
                    os.fdatasync(earlier_fd)
                finally:
                    os.close(earlier_fd)
            os.fdatasync(fd)
            self._sync_dir()

    #: The process may run out of descriptors (a flood of connections, say), and the
    #: journal must not stop for that. A rotation needs one, for the new segment (the
    #: directory's is held for good). Out of them, it uses the file opened ahead for
    #: it (``_prepare_next_file``); failing that, these, kept spare and closed just
    #: before the file is created (another thread may take one first, hence two).
    SPARE_FDS = 2

    def _take_spare_fds(self) -> None:
        while len(self._spare_fds) < self.SPARE_FDS:
            try:
                self._spare_fds.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:  # none to spare now: taken again after the next rotation
                return

    def _release_spare_fds(self) -> None:
        while self._spare_fds:
            os.close(self._spare_fds.pop())

    def _release_fds(self) -> None:
        """Close what the writer holds besides its segments (open failed, or close)."""
        self._release_spare_fds()
        if self._next_file is not None:
            os.close(self._next_file)   # (a nameless file: it goes with its descriptor)
            self._next_file = None
        os.close(self._dir_fd)
        os.close(self._lock_fd)  # the next writer may start

    def _sync_dir(self) -> None:
        os.fsync(self._dir_fd)

    def _prepare_next_file(self) -> None:
        """Hold a file for a segment, opened ahead and nameless (``O_TMPFILE``): a rotation
        that finds no descriptor left writes its header there and links it under its name
        (``_create_segment``), with no race for a freed descriptor. Best effort: without
        a descriptor now, or on a file system without ``O_TMPFILE``, the spare ones are
        the fallback."""
        if self._next_file is not None or self._no_next_file or not hasattr(os, "O_TMPFILE"):
            return
        try:
            self._next_file = os.open(self.data_dir, os.O_TMPFILE | os.O_WRONLY, 0o644)
        except OSError:
            self._next_file = None

    def _new_segment(self, first_seq: int, prev_hash: bytes) -> _Segment:
        try:
            segment = self._create_segment(first_seq, prev_hash)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE) or \
                    (self._next_file is None and not self._spare_fds):
                raise
            reason = os.strerror(exc.errno)
        else:
            self._take_spare_fds()  # (fewer could be taken before: top them up)
            self._prepare_next_file()
            return segment
        if self._next_file is not None:
            log.warning("journal: the process is out of file descriptors (%s); the segment "
                        "after seq %d is the file opened ahead for it", reason, first_seq - 1)
            try:
                segment = self._create_segment(first_seq, prev_hash, ahead=True)
            except OSError as exc:
                # (No /proc to link through, a sandbox refusing linkat): the spare
                # descriptors, and no more files opened ahead.
                log.warning("journal: cannot name the file opened ahead (%s); the spare "
                            "descriptors are used instead, from now on", exc)
                self._no_next_file = True
            else:
                self._prepare_next_file()
                return segment
        log.warning("journal: the process is out of file descriptors (%s); the segment after "
                    "seq %d is opened on the ones kept spare for it", reason, first_seq - 1)
        self._release_spare_fds()
        try:
            return self._create_segment(first_seq, prev_hash)
        finally:
            self._take_spare_fds()
            self._prepare_next_file()

    def _create_segment(self, first_seq: int, prev_hash: bytes, *,
                        ahead: bool = False) -> _Segment:
        """Start segment ``first_seq``: a new file, or (``ahead``) the nameless one opened
        ahead for it (``_prepare_next_file``), which needs no new descriptor and gets its
        name once its header is in it."""
        path = self.data_dir / segment_name(first_seq)
        header = _pack_file_header(first_seq, prev_hash)
        if ahead:
            fd, self._next_file, named = self._next_file, None, False
        else:
            fd, named = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND,
                                0o644), True
        try:
            if os.write(fd, header) != len(header):
                raise OSError(f"short write of {path.name}'s header")
            if self.fsync != "none":
                # The header and the directory entry must be durable before any
                # record in the file can be.
                os.fsync(fd)
            if not named:
                # (linkat with AT_SYMLINK_FOLLOW, which a dir fd makes os.link use:
                # plain link() would link the /proc entry itself.) EEXIST, as O_EXCL.
                os.link(f"/proc/self/fd/{fd}", path.name, dst_dir_fd=self._dir_fd)
                named = True
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
            if self.fsync != "none":
                self._sync_dir()
        except OSError:
            # Not a segment (no whole header): gone, so that the next attempt
            # can create it (O_EXCL) and no reader meets it.
            os.close(fd)
            if named:
                path.unlink(missing_ok=True)
            raise
        return _Segment(path, fd, first_seq, len(header))

    def _rotate(self) -> None:
        old = self._segment
        if self.fsync != "none":
            # The old file's tail is durable before the new file exists: a
            # power loss in between must leave the new file to be dropped
            # (no header), not a torn tail in a segment that is not the last,
            # which readers cannot tell from damage.
            self._datasync(old.fd)
        new = self._new_segment(self._last_seq + 1, self._last_hash)
        with self._lock:
            self._segment = new
            if self.fsync == "group":
                # The committer may be syncing it right now: it closes it,
                # and marks its records durable.
                self._retired.append(old)
                old = None
        if old is not None:
            os.close(old.fd)
            if self.fsync == "none":
                self._unsynced.append(old.path)

    # ------------------------------------------------------------ append
    # append(kind, payload, *, ts_ns=None), append_msg(kind, msg, *, ts_ns=None),
    # append_parts(kind, head, payload) and append_as(kind, cls, values, *, ts_ns=None): one
    # record (a bytes-like body, a msgspec struct as msgpack, two bytes back to back, or a
    # struct given by its type and field values, not made), sequenced and framed into the
    # flush buffer when buffered, else written and synced per the policy; each returns the
    # record's seq. In C (ext/journalframe.pyx, which says why), set below the class.

    def _rotate_now(self) -> None:
        """Write what is buffered (it belongs to the segment it was sequenced in) and start
        the next segment.

        Buffered (the engine's per-message path), a disk that refuses either
        is not the appending handler's problem: an exception would unwind it
        with its order half-handled. The records go on in the current
        segment, past ``rotate_bytes``, and :meth:`flush`, where the disk's
        failures are dealt with, tries the rotation again (see there); the
        appends until then do not. Unbuffered, the caller is told at once.
        """
        if self._rotation_failing:
            return  # the flush tries again
        try:
            self._write_out()
            self._rotate()
        except JournalFailedError:
            if not self.buffered:
                raise
            # _fail reported it (on_failure stops the engine); the flush raises it.
        except OSError as exc:
            if not self.buffered:
                raise
            log.warning("journal: cannot start a new segment yet (%s); records go on in %s "
                        "until the flush tries again", exc, self._segment.path.name)
            self._rotation_failing = True

    def _retry_rotation(self) -> None:
        """The rotation an append could not do, tried again by the flush; fails the journal
        if the disk refuses it again.

        Going on in one segment without bound would hide a disk that refuses
        new files until it refuses the records too; failing stop here is the
        same end as a failed ``fdatasync``, with every order handled whole.
        """
        try:
            self._rotate()
        except OSError as exc:
            raise self._fail(exc, f"cannot start the segment after "
                                  f"{self._segment.path.name}") from exc
        self._rotation_failing = False

    def _write(self, data) -> None:
        size = len(data)
        segment = self._segment
        written = os.write(segment.fd, data)
        if written != size:
            # A full disk or a file size limit: never leave part of a batch in
            # the file, or the retry would land after it and the good records
            # would sit behind a corrupt one. Cut the file back to its last
            # whole record; the batch stays buffered for the next flush.
            try:
                os.ftruncate(segment.fd, segment.size)
            except OSError as exc:
                # The fragment stays (a torn tail on restart); appending after it would not.
                raise self._fail(exc, f"cannot undo a short write ({written} of {size} bytes) "
                                      f"to {segment.path.name}") from exc
            raise OSError(f"short journal write ({written} of {size} bytes) to "
                          f"{segment.path.name}, undone (the disk is full, or a file size "
                          f"limit was reached); the records stay buffered")
        segment.size += size
        self._written_seq = self._last_seq if not self._out else self._out_seq

    def _write_out(self) -> int:
        """Write the buffered records (no sync); returns the last seq written, 0 if none."""
        if self._failure is not None:
            raise self._failed_error()
        if not self._out:
            return 0
        self._write(self._out)
        self._out.clear()
        return self._out_seq

    def _written(self, seq: int) -> None:
        """Records up to ``seq`` are written: make them durable per the policy."""
        if self.fsync == "always":
            self._datasync(self._segment.fd)
            self._mark_durable(seq)
        elif self.fsync == "none":
            self._mark_durable(seq)
        else:
            with self._cond:
                if self._pending_since is None:
                    self._pending_since = time.monotonic()
                    self._cond.notify()

    def flush(self) -> int:
        """Write the buffered records with one ``write`` and apply the policy; returns ``last_seq``.

        Under ``always`` the records are durable on return; under ``group``
        the committer syncs them within ``group_commit_us`` (see
        :meth:`call_when_durable`). A no-op when nothing is buffered.

        Raises
        ------
        OSError
            The write failed or was cut short (a full disk): the file is as
            before and the records stay buffered, for the next flush.
        JournalFailedError
            The journal has failed (see the class notes), or failed now: a
            segment rotation that an append could not do failed here too.
        """
        seq = self._write_out()
        if self._rotation_failing:
            # The batch is written whole (a short write raised above and is
            # retried by the next flush, as any other): now the rotation.
            self._retry_rotation()
        if seq:
            if os.fstat(self._segment.fd).st_nlink == 0:
                # Deleted under the writer (the journal directory removed while the
                # engine runs): the records would go to a file no restart can
                # find, each acknowledged order lost with it.
                raise self._fail(OSError(errno.ENOENT, "No such file or directory"),
                                 f"segment {self._segment.path} was deleted while in use")
            self._written(seq)
        return self._last_seq

    # ------------------------------------------------------------ durability
    def _datasync(self, fd: int) -> None:
        """``fdatasync`` records to disk, timed for ``on_sync`` when there is one."""
        start = time.perf_counter()
        try:
            os.fdatasync(fd)
        except OSError as exc:
            raise self._fail(exc, "fdatasync of records") from exc
        if self.on_sync is not None:
            self.on_sync(time.perf_counter() - start)

    def _mark_durable(self, seq: int) -> None:
        self._durable_seq = seq
        self._durable_mark.seq = seq
        if self._waiters:
            ready = []
            with self._lock:
                while self._waiters and self._waiters[0][0] <= seq:
                    ready.append(heapq.heappop(self._waiters)[2])
            for callback in ready:
                try:
                    callback()
                except Exception:  # a waiter's bug must not stop the committer
                    log.exception("journal durable callback failed")

    def call_when_durable(self, seq: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once record ``seq`` is durable.

        Called at once if it already is; otherwise from the committer thread
        (use ``loop.call_soon_threadsafe`` inside it to get back to a loop).
        Raises ``JournalFailedError`` once the journal has failed: the
        callback would never be called.
        """
        with self._lock:
            if self._failure is not None:
                raise self._failed_error()
            if seq > self._durable_seq:
                self._waiter_order += 1
                heapq.heappush(self._waiters, (seq, self._waiter_order, callback))
                return
        callback()

    async def wait_durable(self, seq: int) -> None:
        """Wait (on the running asyncio loop) until record ``seq`` is durable.

        Raises
        ------
        JournalFailedError
            The journal failed before the record was durable (at once, if it
            had already failed): it never will be.
        """
        if seq <= self._durable_seq:
            return
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def settle(error: JournalFailedError | None = None) -> None:
            def apply() -> None:
                if not future.done():
                    if error is None:
                        future.set_result(None)
                    else:
                        future.set_exception(error)
            try:
                loop.call_soon_threadsafe(apply)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        with self._lock:
            self._failure_watchers.add(settle)
        try:
            self.call_when_durable(seq, settle)
            await future
        finally:
            with self._lock:
                self._failure_watchers.discard(settle)

    def sync(self) -> int:
        """Make everything appended so far durable now; returns ``durable_seq``."""
        self._write_out()
        if self.fsync == "group":
            with self._cond:
                target = self._written_seq
                self._pending_since = None
                segments = self._retired + [self._segment]
                self._retired = []
            self._sync_segments(segments, target)
        else:
            self._datasync(self._segment.fd)
            self._mark_durable(self._written_seq)
        return self._durable_seq

    def seal(self) -> int:
        """Make everything appended durable for a graceful stop, whatever the policy, and
        say so in ``durable.seq``; returns ``durable_seq``.

        Under ``none`` the mark follows the writes and proves nothing, so a
        journal cut short after a clean stop (its last segment deleted, its
        last records damaged) read as a crash's torn tail, and recovery went
        on without the lost records. Sealed, the segments this writer closed
        without a sync are synced too and the mark carries ``SYNCED``:
        recovery and ``journal verify`` then require the journal to reach it.
        An append after the seal takes the proof away again.
        """
        seq = self.sync()
        if self.fsync == "none":
            for path in self._unsynced:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue  # archived while the engine ran (journal.md allows it)
                try:
                    self._datasync(fd)
                finally:
                    os.close(fd)
            self._unsynced = []
            self._sync_dir()  # (the segments' entries: not synced under "none")
            self._durable_mark.seal(seq)
        return seq

    def _sync_segments(self, segments: list[_Segment], target: int) -> None:
        with self._sync_lock:
            for segment in segments:
                self._datasync(segment.fd)
            for segment in segments[:-1]:
                os.close(segment.fd)
            if target > self._durable_seq:
                self._mark_durable(target)

    def _commit_loop(self) -> None:
        window = self.group_commit_us / 1e6
        while True:
            with self._cond:
                while self._pending_since is None and not self._closed \
                        and not self._committer_stopping:
                    self._cond.wait()
                if self._committer_stopping or self._pending_since is None:
                    return
                # Waiting on the condition, not sleeping: stop_group_commit
                # must not wait out a long window before its caller can sync.
                deadline = self._pending_since + window
                while not self._committer_stopping and (delay := deadline - time.monotonic()) > 0:
                    self._cond.wait(delay)
                if self._committer_stopping:
                    return
                # Everything written up to now rides in this group.
                target = self._written_seq
                self._pending_since = None
                segments = self._retired + [self._segment]
                self._retired = []
            try:
                self._sync_segments(segments, target)
            except JournalFailedError:
                return  # reported by _fail; nothing can become durable any more
            except OSError as exc:  # closing a synced retired segment
                self._fail(exc, "group commit")
                return

    # ------------------------------------------------------------ shutdown
    def stop_group_commit(self) -> None:
        """Stop the committer thread (``group``); a no-op under the other policies.

        The policy stays ``group``, but from now on records become durable
        only when :meth:`sync` (or :meth:`switch_to_always`, :meth:`close`)
        is called, and durable callbacks run on that caller's thread. For
        shutdown: the engine syncs and releases the held replies itself, on
        its loop, so that none is released behind its back by the committer
        once it has checked that all are out (see ``EngineService.stop``).
        Returns after a group commit in progress has finished.
        """
        if self._committer is None:
            return
        with self._cond:
            self._committer_stopping = True
            self._cond.notify_all()
        self._committer.join()
        self._committer = None

    def switch_to_always(self) -> int:
        """Sync what is written, then apply the ``always`` policy from now on; returns ``durable_seq``.

        Every later :meth:`flush` (and unbuffered append) is durable when it
        returns, so whoever holds acknowledgements for durability can send
        them at once (the pipeline releases a flush's replies synchronously
        under any policy but ``group``). Stops the committer under ``group``;
        a caller switching from ``group`` must first let the replies of
        records already durable go out, or later ones could overtake them.
        """
        self.stop_group_commit()
        durable = self.sync()
        self.fsync = "always"
        return durable

    # ------------------------------------------------------------ close
    def close(self) -> None:
        """Sync (unless the policy is ``none``), stop the committer and close the file.

        A failed journal is only closed: nothing more is written or synced.
        A last flush or sync the disk refuses raises (``OSError`` or
        ``JournalFailedError``), after the committer is stopped and the files
        are closed all the same.
        """
        if self._closed:
            return
        try:
            if self._failure is None:
                self.flush()
                if self.fsync != "none":
                    self.sync()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            if self._committer is not None:
                self._committer.join()
            for segment in self._retired:
                os.close(segment.fd)
            os.close(self._segment.fd)
            self._durable_mark.close()
            self._release_fds()

    def __enter__(self) -> "JournalWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


journalframe.configure_writer(JournalWriter, _Segment, JournalError, MAX_PAYLOAD, FILE_HEADER_SIZE)
JournalWriter.append = journalframe.append
JournalWriter.append_msg = journalframe.append_msg
JournalWriter.append_parts = journalframe.append_parts
JournalWriter.append_as = journalframe.append_as
