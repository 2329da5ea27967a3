"""A flag the engine raises while it handles a burst of client messages, for co-located work to yield to.

Gateways run beside the engine, usually on the same machine, and whatever
runs at the same moment as the engine slows it: on a small machine a
gateway's burst of work landing on an order in flight is what moves the
engine's p99 (docs/gateways.md, measured). Scheduling priority does not
help (``nice`` and ``SCHED_IDLE`` were both measured); what helps is not
running at those moments. So intake raises this flag for each wake-up that
handles client messages (from the first read to the replies handed to
ZeroMQ), and a gateway checks it between steps of its work and waits while
it is up, for at most a bounded time, so that it never stalls behind a
busy engine.

The flag is one byte of a small file in the journal directory
(``engine.busy``), mapped into memory by both sides: raising or checking it
is a memory access, no system call. An engine killed while the flag is up
leaves it up; gateways then only run at their bounded pace (each wait ends
after ``yield_to_engine_ms``) until the restarted engine clears it.
"""
from __future__ import annotations

import mmap
import os
import time
from pathlib import Path

#: the flag's file, in the journal directory (readers ignore it: it is no segment)
FLAG_FILE = "engine.busy"
_SIZE = 8
#: how long a waiting gateway sleeps between looks at the flag
_STEP_S = 50e-6


class BusyFlag:
    """One shared byte: up while the engine handles client messages.

    Parameters
    ----------
    path : str or PathLike
        The flag's file (``<journal dir>/engine.busy``).
    create : bool
        The engine creates (and clears) it; a gateway opens an existing one.

    Raises
    ------
    FileNotFoundError
        Opening (``create=False``) a flag the engine has not made yet.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = False):
        self.path = Path(path)
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        fd = os.open(self.path, flags, 0o644)
        try:
            if create or os.fstat(fd).st_size < _SIZE:
                # Written, not ftruncate'd: a sparse page the disk cannot give
                # would kill the process with SIGBUS at the first store into
                # the mapping; a write fails with ENOSPC instead.
                os.pwrite(fd, bytes(_SIZE), 0)
            self._map = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)  # the mapping keeps the file
        if create:
            self._map[0] = 0

    @classmethod
    def in_journal(cls, journal_dir: str | os.PathLike, *, create: bool = False) -> "BusyFlag":
        """The flag of the engine whose journal is ``journal_dir``."""
        return cls(Path(journal_dir) / FLAG_FILE, create=create)

    def raise_(self) -> None:
        """Up: the engine is handling client messages."""
        self._map[0] = 1

    def lower(self) -> None:
        """Down: the engine is waiting for work."""
        self._map[0] = 0

    @property
    def up(self) -> bool:
        """Whether the engine is handling client messages now."""
        return self._map[0] != 0

    def wait_down(self, max_wait_s: float) -> float:
        """Wait while the flag is up, at most ``max_wait_s``; returns the seconds waited."""
        if not self._map[0] or max_wait_s <= 0:
            return 0.0
        start = time.monotonic()
        deadline = start + max_wait_s
        while self._map[0]:
            now = time.monotonic()
            if now >= deadline:
                return now - start
            time.sleep(_STEP_S)
        return time.monotonic() - start

    def close(self) -> None:
        """Unmap (the file stays for the other side)."""
        self._map.close()
