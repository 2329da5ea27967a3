"""Pure-Python reference of ``ext/journalframe.pyx``'s appends: ``JournalWriter.append``,
``append_msg`` and their ``_append`` as they were written in Python, which the tests hold
the compiled ones to (the same journal files, byte for byte)."""
from __future__ import annotations

import time

from engine.journal import FILE_HEADER_SIZE, MAX_PAYLOAD, RECORD_HEADER_SIZE, JournalError, \
    JournalWriter
from ext.journalframe import frame_record


class ReferenceWriter(JournalWriter):
    """A :class:`JournalWriter` whose appends are the Python ones."""

    __slots__ = ()

    def append(self, kind: int, payload, *, ts_ns: int | None = None) -> int:
        """Append one record; returns its sequence number."""
        return self._append(kind, bytes(payload), ts_ns)

    def append_msg(self, kind: int, msg: object, *, ts_ns: int | None = None) -> int:
        """Append a msgspec struct (or any msgpack-able value) as one record."""
        return self._append(kind, self._encoder.encode(msg), ts_ns)

    def _append(self, kind: int, payload: bytes, ts_ns: int | None) -> int:
        if self._closed:
            raise JournalError("journal is closed")
        payload_len = len(payload)
        if payload_len > MAX_PAYLOAD:
            raise ValueError(f"payload of {payload_len} bytes exceeds {MAX_PAYLOAD}")
        pending = self._segment.size + len(self._out)
        if pending + RECORD_HEADER_SIZE + payload_len > self.rotate_bytes and \
                pending > FILE_HEADER_SIZE:
            self._rotate_now()
        seq = self._last_seq + 1
        self._last_hash = frame_record(self._out, self._last_hash, seq,
                                       time.time_ns() if ts_ns is None else ts_ns, kind, payload)
        self._last_seq = self._out_seq = seq
        if not self.buffered:
            self._write_out()
            self._written(seq)
        return seq
