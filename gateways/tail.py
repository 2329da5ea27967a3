"""Follow a journal that is still being written, reading only what is new.

Gateways sit after the journal: the service hands each one a
``JournalReader`` and the gateway follows the journal from its own cursor.
``JournalReader.records(start_seq)`` reads a whole segment (up to 64 MiB) per
call, which is right for one pass but not for following a live journal a
few records at a time: a gateway polling every millisecond would re-read and
re-hash the current segment each time. :class:`JournalTail` keeps its place
(segment, byte offset, expected seq, chain hash) and reads from there.

It checks records with the journal's own public scanner
(``engine.journal.scan_records``: CRC, sequence and hash chain, torn-tail
rules), so a record the engine is still writing raises ``IncompleteRecord``
and is simply picked up on the next read; this module only adds the
bookkeeping of where it is.
"""
from __future__ import annotations

import bisect
import os
from pathlib import Path

from engine.journal import (
    FILE_HEADER_SIZE, RECORD_HEADER_SIZE, IncompleteRecord, JournalCorruptError, JournalError,
    JournalReader, Record, check_segment_name, list_segments, parse_segment_header, scan_records,
    segment_name,
)


class JournalGapError(JournalError):
    """Records the gateway still has to deliver are no longer in the journal."""


class JournalTail:
    """Incremental, checked reads of a live journal.

    Parameters
    ----------
    reader : JournalReader
        The journal to follow (its directory and chain-check setting).
    chunk_bytes : int
        Bytes read per system call; a record larger than this is read whole.
    mark_every : int
        Remember where every ``mark_every``-th record starts, so that
        :meth:`seek` back into history (a replay) scans from the nearest mark
        instead of the segment's start.

    Notes
    -----
    Not thread-safe: one tail per reading thread.
    """

    def __init__(self, reader: JournalReader, *, chunk_bytes: int = 1 << 20, mark_every: int = 4096):
        self.data_dir = Path(reader.data_dir)
        self._dir_name = str(self.data_dir)
        self.check_chain = reader.check_chain
        self.chunk_bytes = chunk_bytes
        self.mark_every = mark_every
        self._skip_through = 0
        self._path: Path | None = None
        self._fd = -1
        self._offset = 0
        self._size = 0                  # the open segment's size at the last fstat
        self._next_seq = 1
        self._prev_hash = b""
        # (next_seq, segment, offset, prev_hash): resumable points, oldest first.
        self._marks: list[tuple[int, Path, int, bytes]] = []
        self._since_mark = 0
        self._upto: int | None = None   # the read's bound (see read)
        self._at_bound = False

    # ------------------------------------------------------------ position
    @property
    def next_seq(self) -> int:
        """Sequence number the next record read will have at the earliest."""
        return max(self._next_seq, self._skip_through + 1)

    @property
    def last_read_seq(self) -> int:
        """Sequence number of the last record read (0 before any): after reading to the
        end of the journal, its last record."""
        return self._next_seq - 1

    def seek(self, after_seq: int) -> None:
        """Make the next :meth:`read` start at ``after_seq + 1``."""
        if after_seq < 0:
            raise ValueError(f"after_seq must be >= 0, not {after_seq}")
        self._skip_through = after_seq
        if self._path is not None and self._next_seq <= after_seq + 1:
            return  # forward from here: the records in between are skipped as read
        self._drop_position()
        self._next_seq = 1  # not known until repositioned; next_seq is then after_seq + 1

    def close(self) -> None:
        """Close the open segment file."""
        self._drop_position()

    def _drop_position(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._path = -1, None

    def _position(self) -> bool:
        """Find the segment (and the nearest mark) holding ``_skip_through + 1``."""
        segments = list_segments(self.data_dir)
        if not segments:
            return False
        target = self._skip_through + 1
        firsts = [int(p.stem) for p in segments]
        if firsts[0] > target:
            raise JournalGapError(
                f"journal {self.data_dir} starts at seq {firsts[0]} but seq {target} is still to be "
                f"delivered (segments removed from the front?)")
        index = bisect.bisect_right(firsts, target) - 1
        path = segments[index]
        with open(path, "rb") as handle:
            head = handle.read(FILE_HEADER_SIZE)
        if len(head) < FILE_HEADER_SIZE and index == len(segments) - 1:
            return False  # the writer is creating it; try again on the next read
        header = parse_segment_header(path, head)
        check_segment_name(path, header, target)
        offset, next_seq, prev_hash = FILE_HEADER_SIZE, header.first_seq, header.prev_hash
        at = bisect.bisect_right([mark[0] for mark in self._marks], target) - 1
        if at >= 0:
            mark_seq, mark_path, mark_offset, mark_hash = self._marks[at]
            if mark_path == path and mark_seq > next_seq:
                offset, next_seq, prev_hash = mark_offset, mark_seq, mark_hash
        self._fd = os.open(path, os.O_RDONLY)
        self._path, self._offset, self._next_seq, self._prev_hash = path, offset, next_seq, prev_hash
        return True

    def _mark(self) -> None:
        entry = (self._next_seq, self._path, self._offset, self._prev_hash)
        if not self._marks or self._marks[-1][0] < entry[0]:
            self._marks.append(entry)
            if len(self._marks) > 4096:  # bounded: the oldest history is the least replayed
                del self._marks[:1024]

    # ------------------------------------------------------------ reading
    def read(self, max_records: int, upto_seq: int | None = None) -> list[Record]:
        """Up to ``max_records`` records from the current position on, none past ``upto_seq``.

        Returns an empty list when nothing new is complete yet. ``upto_seq``
        (the journal's durable seq, for a gateway) leaves the records after
        it unread: the next read with a higher bound returns them.

        Raises
        ------
        JournalCorruptError
            A record fails its checks with good data after it.
        JournalGapError
            The records to read were removed from the journal.
        """
        out: list[Record] = []
        if upto_seq is not None and self.next_seq > upto_seq:
            return out
        if self._path is None and not self._position():
            return out
        self._upto, self._at_bound = upto_seq, False
        while len(out) < max_records:
            if self._read_chunk(out, max_records) and self._offset < self._size \
                    and not self._at_bound:
                continue  # more in this segment than one chunk
            if self._at_bound:
                break
            # At the end of what the segment held at the last fstat: one
            # more fstat per read would only find what the next poll finds.
            if not self._next_segment():
                break
        return out

    def _read_chunk(self, out: list[Record], limit: int) -> bool:
        """Scan one chunk from the current offset; whether the offset moved."""
        # The scanner starts after a segment header: give it the bytes from
        # one header length before our offset and ignore that prefix.
        start = self._offset - FILE_HEADER_SIZE
        # Only what is there: os.pread allocates the size asked for, and a
        # 1 MiB buffer per idle poll (mapped, faulted, unmapped) was most
        # of what following a quiet journal cost.
        self._size = size = os.fstat(self._fd).st_size
        if size <= self._offset:
            return False
        data = os.pread(self._fd, min(self.chunk_bytes, size - self._offset) + FILE_HEADER_SIZE, start)
        if len(data) <= FILE_HEADER_SIZE:
            return False
        moved = self._scan(data, start, out, limit)
        if not moved and not self._at_bound and size - start > len(data):
            # A record bigger than the chunk: read up to the end of the file.
            data = os.pread(self._fd, size - start, start)
            moved = self._scan(data, start, out, limit)
        return moved

    def _scan(self, data: bytes, start: int, out: list[Record], limit: int) -> bool:
        before = self._offset
        skip_through, upto = self._skip_through, self._upto
        try:
            for record in scan_records(self._path, data, self._next_seq, self._prev_hash,
                                       check_chain=self.check_chain, base_offset=start):
                if upto is not None and record.seq > upto:
                    self._at_bound = True  # left for a read with a higher bound
                    break
                self._offset = record.offset + RECORD_HEADER_SIZE + len(record.payload)
                self._next_seq, self._prev_hash = record.seq + 1, record.hash
                self._since_mark += 1
                if self._since_mark >= self.mark_every:
                    self._since_mark = 0
                    self._mark()
                if record.seq > skip_through:
                    out.append(record)
                    if len(out) >= limit:
                        break
        except IncompleteRecord:
            pass  # the record being written: it is complete on a later read
        except JournalCorruptError as exc:
            # The scanner's offsets are relative to the slice it was given.
            raise JournalCorruptError(exc.path, start + exc.offset, exc.seq, exc.problem,
                                      exc.detail) from None
        return self._offset != before

    def _next_segment(self) -> bool:
        """Move to the next segment once the writer has started it."""
        # Checked at the end of every read that reaches the end of the
        # segment (every poll of a live journal): a plain string and one
        # stat, no pathlib objects, until the segment is there.
        name = segment_name(self._next_seq)
        if not os.path.exists(os.path.join(self._dir_name, name)):
            return False
        path = self.data_dir / name
        if path == self._path:
            return False
        size = os.fstat(self._fd).st_size
        if size != self._offset:
            raise JournalCorruptError(self._path, self._offset, self._next_seq, "length",
                                      "segment is cut short before the next one")
        with open(path, "rb") as handle:
            head = handle.read(FILE_HEADER_SIZE)
        if len(head) < FILE_HEADER_SIZE:
            return False  # being created
        header = parse_segment_header(path, head)
        if header.prev_hash != self._prev_hash:
            raise JournalCorruptError(path, 0, self._next_seq, "chain",
                                      "segment does not chain from the previous one")
        os.close(self._fd)
        self._fd = os.open(path, os.O_RDONLY)
        self._path, self._offset = path, FILE_HEADER_SIZE
        return True
