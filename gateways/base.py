"""The gateway base class: follow the journal, deliver batches, keep a cursor.

Gateways are the last stage of the pipeline: the engine writes every event
to its journal and is done with it; each gateway follows the journal on a
thread of its own and delivers what it reads to one destination. The engine
pays nothing beyond the journal write it does anyway, and a slow or absent
destination cannot hold it up: the journal *is* the queue between them,
bounded by nothing but disk, so nothing is dropped while a destination is
down and the gateway catches up from its cursor when it is back.

A subclass supplies four methods: :meth:`Gateway.open` and
:meth:`Gateway.close` (the destination connection), :meth:`Gateway.deliver`
(one batch, idempotent by ``seq``) and, if the destination can tell how far
it got, :meth:`Gateway.load_cursor`. The base class owns the loop:

1. open the destination and load the cursor (last journal seq delivered);
2. read up to ``batch_size`` records after it, normalise them into
   ``GatewayEvent`` structs, keep the configured types (at the journal's
   end, wait ``poll_interval_ms`` before reading again, so that events
   arriving one by one are delivered in batches);
3. deliver them; on success move the cursor, on failure close, back off
   (doubling up to ``backoff_max_ms``), reopen and resume from the cursor,
   so the failed batch is delivered again (at least once, in order).

A cursor counts in one journal's seqs: a journal made anew starts again at
seq 1. Each stored cursor therefore names its journal
(:func:`engine.journal.journal_identity`), and a gateway whose stored
cursor (file, table or stream) names another journal delivers nothing and
says so (:class:`ForeignCursorError`) instead of skipping the new journal's
records up to the old cursor.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import ClassVar, Iterable, Iterator, TypeVar

import orjson

from engine.busy import BusyFlag
from engine.children import die_with_parent, spawn_child
from engine.journal import DurableMark, JournalReader, first_kept_seq, journal_identity
from engine.metrics import logging_settings, setup_logging
from gateways.config import GatewayConfig
from gateways.events import GatewayEvent, Normalizer
from gateways.tail import JournalGapError, JournalTail

# A name of this module's, so that a test can count the calls.
_sched_yield = os.sched_yield

#: events a delivery handles between two of the gateway's steps (yield_to_engine)
YIELD_EVERY = 4

_T = TypeVar("_T")

log = logging.getLogger(__name__)


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception (the type alone if it has no message), for
    ``metrics.last_error``, ``/healthz`` and one-line log records."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class GatewayBindError(OSError):
    """A gateway could not bind one of its endpoints (a port already taken, an address not here).

    Raised by :meth:`Gateway.start` under either isolation (a child reports
    it to the engine, which raises it again), so that the engine can refuse
    to start with one line naming the gateway and the endpoint. An
    ``OSError``, as the failed bind was.

    Parameters
    ----------
    gateway : str
        The gateway's name.
    endpoint : str
        The endpoint as configured (``tcp://127.0.0.1:7101``, ``127.0.0.1:9471``).
    reason : str
        Why, as the system says it (``Address already in use``).
    errno : int, optional
        The bind's error number (``errno.EADDRINUSE``).
    """

    def __init__(self, gateway: str, endpoint: str, reason: str, errno: int | None = None):
        # OSError's, not super()'s: a subclass may derive from a library's
        # error as well (gateways.zmq_pub.ZmqBindError), whose __init__ takes other arguments.
        OSError.__init__(self, f"gateway {gateway}: cannot bind {endpoint}: {reason}")
        self.gateway, self.endpoint, self.reason = gateway, endpoint, reason
        self.errno, self.strerror = errno, reason

    def __str__(self) -> str:
        return self.args[0]  # the whole line, not OSError's "[Errno 98] <strerror>"


#: How often an idle gateway checks that its destination is still there (Gateway.check_alive).
ALIVE_CHECK_S = 1.0


class ForeignCursorError(Exception):
    """A gateway's stored cursor counts in the seqs of another journal than the one it follows.

    Resuming from it would skip the new journal's records up to the old
    cursor, and consumers that drop repeats by seq would drop the rest: the
    gateway delivers nothing until a person resolves it (the message says how).
    """


class CursorAheadError(ForeignCursorError):
    """A gateway's stored cursor is past the end of its journal: the journal lost records
    that were delivered (restored from an older copy, its ``durable.seq`` removed to start
    on what was left, a tail lost to a power cut under ``fsync = "none"``).

    Its next records take seqs the destination already holds: resumed from the
    cursor, the gateway would skip them without a word, and consumers would
    drop them as repeats. Like :class:`ForeignCursorError`, the gateway
    delivers nothing until a person resolves it.
    """


def message_id(journal: str | None, seq: int) -> str:
    """A de-duplication id for the event at ``seq`` of ``journal``: ``<journal>:<seq>``.

    The journal's identity keeps a new journal's seq 1 from being taken for
    a repeat of the old one's by a destination that de-duplicates by id
    (JetStream's ``Nats-Msg-Id``).
    """
    return f"{journal}:{seq}" if journal else str(seq)


def parse_message_id(value) -> tuple[int | None, str | None]:
    """``(seq, journal)`` of a :func:`message_id` (``journal`` ``None`` for a bare seq);
    ``(None, None)`` for anything else."""
    if not isinstance(value, str):
        return None, None
    journal, _, seq = value.rpartition(":")
    try:
        return int(seq), journal or None
    except ValueError:
        return None, None


class GatewayMetrics:
    """Counters of one gateway, written by its thread, readable from any thread.

    Attributes
    ----------
    delivered : int
        Events delivered (a re-delivery after a failure counts again).
    batches : int
        Successful ``deliver`` calls.
    records_read : int
        Journal records read (events and everything else).
    failures : int
        Failed attempts (open or deliver); each is followed by a back-off.
    cursor : int
        Last journal seq delivered (or read past).
    cursor_known : bool
        Whether ``cursor`` was read from where it is stored: not before the
        destination first opened (a destination down since the start has not
        told it yet, and 0 would claim the whole journal undelivered).
    connected : bool
        Whether the destination is open.
    last_error : str
        The latest failure, for ``/healthz`` and logs.
    undecodable : int
        Event records that did not decode (skipped, logged).
    last_delivery_ns : int
        When the last batch arrived (ns since the epoch), 0 before the first.
    cursor_ts_ns : int
        When the engine journaled the record at ``cursor`` (ns since the
        epoch): how far behind the journal's head the gateway is, in time.
    dropped : int
        Events the destination cannot take at all (a value its store
        refuses, e.g. a NUL in a text for PostgreSQL): logged as errors and
        left out, so that one of them does not stop the gateway for good.
    """

    __slots__ = ("delivered", "batches", "records_read", "failures", "cursor", "connected",
                 "last_error", "undecodable", "last_delivery_ns", "cursor_ts_ns", "dropped",
                 "cursor_known")

    def __init__(self) -> None:
        self.delivered = self.batches = self.records_read = self.failures = 0
        self.cursor = self.undecodable = self.last_delivery_ns = self.cursor_ts_ns = 0
        self.dropped = 0
        self.connected = self.cursor_known = False
        self.last_error = ""

    def snapshot(self) -> dict:
        """The counters as a dict."""
        return {name: getattr(self, name) for name in self.__slots__}


class Gateway:
    """Base of every gateway; see the module docstring for the loop.

    Parameters
    ----------
    config : GatewayConfig
        The gateway's checked ``[[gateways]]`` table.
    source : JournalReader
        The journal to follow, handed over by the service.
    data_dir : str or PathLike
        The engine's gateway data directory; this gateway keeps its files in
        ``<data_dir>/<name>/``.

    Attributes
    ----------
    name : str
    metrics : GatewayMetrics
    """

    type: ClassVar[str] = ""

    def __init__(self, config: GatewayConfig, source: JournalReader, data_dir: str | os.PathLike):
        self.config = config
        self.name = config.gateway_name
        self.source = source
        self.data_dir = Path(data_dir) / self.name
        self._metrics = GatewayMetrics()
        # Process isolation: the child's handle, the write end of its stop pipe
        # (closed to stop it: a closed one says it was told to stop), its counters.
        self._process = None
        self._stop_pipe = None
        #: a dead child whose start again failed: the next look tries again (revive)
        self._revive_pending = False
        self._shared = None
        self._shared_error = None
        # In the child: the shared counters (and last error text) this gateway
        # writes through to, and the text last written there.
        self._shared_out = None
        self._shared_error_out = None
        self._shared_error_text = ""
        self._metrics_server = None
        #: The port of the gateway's ``/metrics`` endpoint (``metrics_port``), once started.
        self.metrics_port: int | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._cursor: int | None = None          # in memory: the freshest truth once known
        #: The journal the cursor just loaded from storage counts in (``None``: the
        #: storage names none); set by :meth:`load_cursor`, checked by the loop.
        self.cursor_journal: str | None = None
        #: The identity of the journal followed (:func:`engine.journal.journal_identity`).
        self.journal_id: str | None = None
        self._cursor_stored: int | None = None
        self._cursor_stored_at = 0.0
        self._cursor_failing = False   # the last store failed (logged once)
        self._progress = threading.Condition()
        # The engine's busy flag beside the journal, once found (yield_to_engine).
        self._busy: BusyFlag | None = None
        self._busy_retry_at = 0.0
        # The journal's durable seq, once found (durable_seq).
        self._durable: DurableMark | None = None
        self._slice_s = config.cpu_slice_us / 1e6
        self._slice_start = 0.0

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start following the journal (thread or child process); returns once running.

        Connection failures are not raised here: the gateway retries with
        back-off and reports them in ``metrics``. A gateway that cannot
        start at all raises: :class:`GatewayBindError` for an endpoint it
        cannot bind (a port already taken).
        """
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Known from the first start on, and handed to every child started
        # again: read afresh after old segments were archived from the front,
        # it would be the identity of the oldest segment left, and the
        # gateway would refuse its own cursor as another journal's.
        self.journal_id = self.journal_id or journal_identity(self.source.data_dir)
        if self.config.isolation == "process":
            self._start_process()
            return
        if self.config.metrics_port is not None and self._metrics_server is None:
            from gateways.metrics import serve_metrics
            host, port = self.config.metrics_host, self.config.metrics_port
            try:
                self._metrics_server = serve_metrics([self], host, port)
            except OSError as exc:
                raise GatewayBindError(self.name, f"{host}:{port}", exc.strerror or str(exc),
                                       exc.errno) from exc
            self.metrics_port = self._metrics_server.port
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=f"gateway-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand, store the cursor, close the destination.

        Parameters
        ----------
        timeout : float
            Seconds to wait for the thread (or child process).
        """
        self._revive_pending = False  # stopped on purpose: nothing to start again
        if self._process is not None:
            self._stop_process(timeout)
            return
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("gateway %s: still busy %.1f s after stop", self.name, timeout)
            self._thread = None
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None

    # ------------------------------------------------------------ process isolation
    def public_info(self) -> dict:
        """Attributes the parent copies from a gateway started in a child (bound ports)."""
        return {"metrics_port": self.metrics_port}

    def _start_process(self) -> None:
        # spawn, not fork: the engine holds ZeroMQ contexts and an event loop
        # that a forked child must not inherit.
        context = multiprocessing.get_context("spawn")
        self._shared = context.RawArray("q", len(_SHARED_FIELDS))
        # The text of the last error, beside the counters: /healthz and the
        # engine's own view of the gateway need it, and a failing child
        # would otherwise only say so in its own log. No lock, like the
        # counters: a child killed mid-write must not hang the engine's
        # reads, and a read racing a write garbles one diagnostic at worst.
        self._shared_error = context.RawArray("c", _SHARED_ERROR_BYTES)
        # Stopped by closing a pipe, not by a multiprocessing Event: an
        # Event's five semaphores are the resource tracker's to clean up
        # when the engine is killed, and it says so in plain text on the
        # engine's log, breaking a JSON log. The child sees the pipe's end
        # at once, also when the engine dies.
        if self._stop_pipe is not None:
            self._stop_pipe.close()  # a dead child's, revived
        stop_end, self._stop_pipe = context.Pipe(duplex=False)
        parent_end, child_end = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_child_main, name=f"gateway-{self.name}", daemon=True,
            args=(self.config, str(self.source.data_dir), self.source.check_chain,
                  str(self.data_dir.parent), self._shared, stop_end, child_end,
                  os.getpid(), self._shared_error, logging_settings(), self.journal_id))
        spawn_child(self._process)
        child_end.close()
        stop_end.close()
        if not parent_end.poll(30):
            self._stop_process(1)
            raise RuntimeError(f"gateway {self.name}: child process did not start in 30 s")
        info = parent_end.recv()
        parent_end.close()
        if "error" in info:
            self._stop_process(5)
            if "bind" in info:  # the child's GatewayBindError, raised again here
                raise GatewayBindError(self.name, *info["bind"])
            raise RuntimeError(f"gateway {self.name} did not start: {info['error']}")
        for key, value in info.items():
            setattr(self, key, value)

    @property
    def died(self) -> bool:
        """Whether the child process ended without being stopped (see :meth:`revive`)."""
        process = self._process
        return self._revive_pending or process is not None and not process.is_alive() and \
            not self._stop_pipe.closed

    def revive(self) -> bool:
        """Start the child process again if it died without being stopped; whether it did.

        The OOM killer or a crash in native code ends a child with nothing
        said: deliveries stopped until the engine restarted. The new child
        resumes from the cursor (file or destination), so nothing is lost;
        events of the batch in hand are delivered again (at least once). The
        counters in ``metrics`` start again from 0 (Prometheus counters reset
        as after any restart). Blocks while the child starts (about a
        second): call it off the engine's loop. Raises as :meth:`start`.
        """
        if not self.died:
            return False
        process = self._process
        if process is not None:  # (None: dead already, and a start again failed)
            process.join(0)
            self._refresh()
            self._process = None
            log.error("gateway %s: its process died (exit code %s) with its cursor at seq %s; starting "
                      "it again from its cursor", self.name, process.exitcode,
                      self._metrics.cursor)
        # Until a start succeeds, the gateway stays dead and is tried again at
        # each look (a start that fails leaves no process to see dead).
        self._revive_pending = True
        self._start_process()
        self._revive_pending = False
        return True

    def _stop_process(self, timeout: float) -> None:
        self._stop_pipe.close()  # the child's end reads end-of-file: stop
        self._process.join(timeout)
        if self._process.is_alive():
            log.warning("gateway %s: child still busy %.1f s after stop; killing it", self.name, timeout)
            self._process.kill()  # (it ignores SIGTERM: see _child_main)
            self._process.join(5)
        self._refresh()
        self._process = None

    def _refresh(self) -> None:
        if self._shared is not None:
            for name, value in zip(_SHARED_FIELDS, self._shared):
                setattr(self._metrics, name, bool(value) if name in _SHARED_FLAGS else value)
        if self._shared_error is not None:
            self._metrics.last_error = self._shared_error.value.decode("utf-8", "replace")

    def _share_metrics(self) -> None:
        """In a child process: copy the counters (and a new last error) to the parent's shared memory."""
        shared = self._shared_out
        if shared is not None:
            metrics = self._metrics
            for i, name in enumerate(_SHARED_FIELDS):
                shared[i] = int(getattr(metrics, name))
            error = metrics.last_error
            if error != self._shared_error_text and self._shared_error_out is not None:
                # Only when it changed (a failure), not on every cursor move;
                # cut to the buffer on a character boundary, and without NULs
                # (the buffer's text ends at the first one).
                text = error.replace("\0", "\\0").encode("utf-8")[:_SHARED_ERROR_BYTES - 1]
                self._shared_error_out.value = text.decode("utf-8", "ignore").encode("utf-8")
                self._shared_error_text = error

    @property
    def metrics(self) -> GatewayMetrics:
        """The gateway's counters (copied from the child under process isolation)."""
        if self._process is not None:
            self._refresh()
        return self._metrics

    def wake(self) -> None:
        """Cut the idle sleep short (optional: the engine may call it after a journal write)."""
        self._wake.set()

    @property
    def running(self) -> bool:
        """Whether the gateway's thread (or child process) is alive."""
        if self._process is not None:
            return self._process.is_alive()
        return self._thread is not None and self._thread.is_alive()

    def yield_to_engine(self) -> None:
        """Give the CPU up after each ``cpu_slice_us`` of work, and wait while the engine
        handles client messages (at most ``yield_to_engine_ms``).

        Called between the steps of the loop (and by subclasses between
        parts of a delivery): a gateway's work that lands on an order in
        flight is what moves the engine's p99 on a small machine. The slice
        matters most: the kernel does not take a CPU from a task inside its
        time slice for a task that just woke (EEVDF, whatever the ``nice``),
        and an engine thread waiting for the CPU cannot raise its busy flag,
        so the gateway offers the CPU (``sched_yield``) itself. Without an
        engine (no flag beside the journal) the wait returns at once.
        """
        if self._slice_s:
            now = time.monotonic()
            if now - self._slice_start >= self._slice_s:
                # Give the CPU to whatever waits for it (the engine's threads,
                # which cannot raise their flag while they wait for a CPU).
                _sched_yield()
                self._slice_start = time.monotonic()
        limit = self.config.yield_to_engine_ms / 1000
        if not limit:
            return
        flag = self._busy
        if flag is None:
            now = time.monotonic()
            if now < self._busy_retry_at:
                return
            try:
                flag = self._busy = BusyFlag.in_journal(self.source.data_dir)
            except FileNotFoundError:
                self._busy_retry_at = now + 1.0  # no engine (yet): look again later
                return
        flag.wait_down(limit)

    def durable_seq(self) -> int | None:
        """The journal's durable seq: the loop delivers no record past it (None: the journal
        has no mark, as one written before marks were, and is read to its end).

        A record the engine wrote but has not synced can vanish with a power
        cut; delivered, it would be an event the engine never had, and its
        seq would go to another record that consumers drop as a repeat.
        """
        mark = self._durable
        if mark is None:
            try:
                mark = self._durable = DurableMark(self.source.data_dir)
            except FileNotFoundError:
                return None
        return mark.seq

    def paced(self, items: Iterable[_T]) -> Iterator[_T]:
        """``items`` one by one, taking a step (:meth:`yield_to_engine`) after each
        :data:`YIELD_EVERY` of them while more follow: a delivery's own work is sliced like
        the loop's, so a long batch does not hold the CPU while an engine thread waits."""
        for k, item in enumerate(items):
            if k and not k % YIELD_EVERY:
                self.yield_to_engine()
            yield item

    def wait_for(self, seq: int, timeout: float) -> bool:
        """Block until everything up to journal ``seq`` is delivered; whether it was in time."""
        deadline = time.monotonic() + timeout
        with self._progress:
            while self.metrics.cursor < seq:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._progress.wait(min(left, 0.01 if self._process is not None else 0.05))
        return True

    # ------------------------------------------------------------ subclass hooks
    def open(self) -> None:
        """Connect to the destination (raise on failure: the loop retries)."""

    def close(self) -> None:
        """Release the destination; called after a failure too, so be forgiving."""

    def deliver(self, events: list[GatewayEvent], through_seq: int) -> None:
        """Deliver one batch, in order; raise if it did not all arrive.

        Parameters
        ----------
        events : list of GatewayEvent
            In ``seq`` order; may hold events delivered before (after a
            failure), which the destination must absorb (idempotent by seq).
        through_seq : int
            The journal seq the batch covers up to (``>= events[-1].seq``):
            a destination that stores its cursor does so with the batch.
        """
        raise NotImplementedError

    def tick(self) -> None:
        """Called once per loop turn, busy or idle (heartbeats and the like)."""

    def check_alive(self) -> None:
        """Raise if the destination is gone; called while idle, every :data:`ALIVE_CHECK_S`.

        Without it a connection that died while nothing was delivered went
        unnoticed (``kronos_gateway_up`` 1, ``/healthz`` 200) until the next
        event failed. Default: nothing to check.
        """

    def load_cursor(self) -> int:
        """Last journal seq delivered, read on every (re)open.

        The default is the in-memory cursor, else the cursor file. A
        destination that knows how far it got overrides this.
        """
        if self._cursor is not None:
            return self._cursor
        state = self.read_cursor_file()
        self.cursor_journal = state.get("journal")
        return int(state.get("seq", 0))

    def cursor_state(self) -> dict:
        """Extra fields a subclass keeps in the cursor file."""
        return {}

    # ------------------------------------------------------------ cursor file
    @property
    def cursor_path(self) -> Path:
        """``<data_dir>/<name>/cursor.json``."""
        return self.data_dir / "cursor.json"

    def read_cursor_file(self) -> dict:
        """The cursor file's content, ``{}`` when there is none (or it is unreadable)."""
        try:
            state = orjson.loads(self.cursor_path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            # Starting over is safe (consumers drop repeats by seq); refusing
            # to start would stop the platform's event feed over a hint.
            log.warning("gateway %s: unreadable cursor file %s (%s); starting from its destination",
                        self.name, self.cursor_path, exc)
            return {}
        seq = state.get("seq", 0) if isinstance(state, dict) else None
        if type(seq) is not int or seq < 0:
            # (int() of it raised at every open, or cut 41.9 to 41): read as no file, as above
            log.warning("gateway %s: cursor file %s holds no seq as a whole number (%r); "
                        "starting from its destination", self.name, self.cursor_path,
                        seq if isinstance(state, dict) else state)
            return {}
        return state

    def _cursor_due(self, seq: int, force: bool) -> float | None:
        """The time now when storing cursor ``seq`` is due: a seq not stored yet, and
        ``cursor_interval_ms`` since the last store (or ``force``); else None. The one
        throttle of every kind of stored cursor (the file here, a destination's own)."""
        if seq == self._cursor_stored:
            return None
        now = time.monotonic()
        if not force and (now - self._cursor_stored_at) * 1000 < self.config.cursor_interval_ms:
            return None
        return now

    def store_cursor(self, seq: int, *, force: bool = False) -> None:
        """Write the cursor file, at most every ``cursor_interval_ms`` unless forced.

        Written to a temporary file and renamed, so it is the old or the new
        cursor, never half of one. Not fsynced: a lost cursor means events
        are delivered again, which consumers absorb.
        """
        now = self._cursor_due(seq, force)
        if now is None:
            return
        tmp = self.cursor_path.with_suffix(".tmp")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(orjson.dumps({"seq": seq, "journal": self.journal_id,
                                          **self.cursor_state()}))
            os.replace(tmp, self.cursor_path)
        except OSError as exc:
            # A full disk: not the destination's failure, and no reason to
            # stop delivering (raised, the loop backed off after every batch).
            # The stored cursor only lags: a restart delivers again from it.
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self._cursor_stored_at = now  # tried again after cursor_interval_ms
            if not self._cursor_failing:
                self._cursor_failing = True
                log.warning("gateway %s: cannot store the cursor file %s (%s); delivery goes "
                            "on, and a restart would deliver again from seq %s", self.name,
                            self.cursor_path, exc.strerror or exc, self._cursor_stored)
            return
        if self._cursor_failing:
            self._cursor_failing = False
            log.warning("gateway %s: cursor file %s stored again", self.name, self.cursor_path)
        self._cursor_stored, self._cursor_stored_at = seq, now

    # ------------------------------------------------------------ the loop
    def run(self) -> None:
        """The journal-following loop; :meth:`start` runs it on a thread."""
        config = self.config
        tail = JournalTail(self.source)
        normalizer = Normalizer(config.events, journal=self.source)
        backoff = config.backoff_initial_ms / 1000
        poll = config.poll_interval_ms / 1000
        alive_check_at = time.monotonic() + ALIVE_CHECK_S
        opened = False
        # The journal's end as this run found it (the writer sets the mark to its end
        # when it opens), then the last record this run has read: no stored cursor may
        # be past it (_check_not_ahead). (Not the durable seq now: the journal grows
        # past a cursor it lost soon after the engine starts.)
        known_end = self.durable_seq()
        try:
            while not self._stop.is_set():
                try:
                    if not opened:
                        self.journal_id = self.journal_id or journal_identity(self.source.data_dir)
                        self.open()
                        opened = True
                        self.cursor_journal = None
                        cursor = self.load_cursor()
                        self._check_journal(cursor)
                        self._check_not_ahead(cursor, known_end)
                        if cursor == 0:
                            cursor = self._first_start()
                        self._cursor = cursor
                        self._metrics.connected = True
                        self._set_cursor(self._cursor, self._seek(tail, self._cursor))
                    self.tick()
                    self.yield_to_engine()
                    records = tail.read(config.batch_size, self.durable_seq())
                    if records and known_end is not None:
                        known_end = max(known_end, records[-1].seq)
                    if not records:
                        self.store_cursor(self._cursor)
                        now = time.monotonic()
                        if now >= alive_check_at:
                            self.check_alive()
                            alive_check_at = now + ALIVE_CHECK_S
                        self._wake.wait(poll)
                        self._wake.clear()
                        continue
                    self._metrics.records_read += len(records)
                    self.yield_to_engine()
                    events = normalizer.normalize(records)
                    self._metrics.undecodable = normalizer.undecodable
                    through = records[-1].seq
                    if events:
                        self.yield_to_engine()
                        self.deliver(events, through)
                        self._metrics.delivered += len(events)
                        self._metrics.batches += 1
                        self._metrics.last_delivery_ns = time.time_ns()
                    self._cursor = through
                    self._set_cursor(through, records[-1].ts_ns)
                    self.store_cursor(through)
                    backoff = config.backoff_initial_ms / 1000
                    if len(records) < config.batch_size:
                        # Read to the end: let the next events gather for an
                        # interval instead of delivering them one by one.
                        self._wake.wait(poll)
                        self._wake.clear()
                except Exception as exc:  # noqa: BLE001 - any failure: back off and resume from the cursor
                    self._metrics.failures += 1
                    self._metrics.last_error = describe(exc)
                    # Another journal's cursor waits for a person, not for a
                    # destination to come back: an error, at every retry.
                    log.log(logging.ERROR if isinstance(exc, ForeignCursorError) else
                            logging.WARNING, "gateway %s: %s; retrying in %.2f s", self.name,
                            self._metrics.last_error, backoff)
                    if opened:
                        self._safe_close()
                        opened = False
                    self._metrics.connected = False
                    self._share_metrics()
                    tail.close()
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, config.backoff_max_ms / 1000)
        finally:
            tail.close()
            if self._cursor is not None:
                try:
                    self.store_cursor(self._cursor, force=True)
                except OSError as exc:
                    log.warning("gateway %s: cursor not stored at stop: %s", self.name, exc)
            if opened:
                self._safe_close()
            self._metrics.connected = False
            self._share_metrics()

    def _check_journal(self, cursor: int) -> None:
        """Refuse a stored cursor that counts in another journal's seqs."""
        if cursor and self.cursor_journal is not None and self.journal_id is not None \
                and self.cursor_journal != self.journal_id:
            # Nothing of this journal is delivered: its lag is the whole of it
            # (docs/gateways.md), not unknown (NaN), which no lag alert fires on.
            self._set_cursor(0)
            raise ForeignCursorError(
                f"its stored cursor (seq {cursor}) belongs to journal {self.cursor_journal}, "
                f"not to {self.journal_id} in {self.source.data_dir}: the journal was made anew "
                f"(its seqs start again at 1), or another engine's journal delivers to the same "
                f"destination. Give each journal its own destination (or clear the old one's "
                f"events and cursor) and remove {self.cursor_where()}")

    def _check_not_ahead(self, cursor: int, durable: int | None) -> None:
        """Refuse a stored cursor past ``durable``: the journal's durable end when this run
        of the gateway began, or the last record it has read since (:class:`CursorAheadError`).

        A gateway delivers nothing past the durable seq, and the writer sets the
        mark to the journal's end when it opens, so a cursor beyond it means the
        journal lost records that were delivered. The end is the one the run
        began with (the engine starts its gateways before it takes orders): the
        journal grows past the cursor soon after, and the refusal must hold.
        Records this run read (a batch the destination stored but did not
        acknowledge, say) may be behind a reopened destination's cursor.
        """
        if durable is None or cursor <= durable:
            return
        raise CursorAheadError(
            f"its stored cursor (seq {cursor}) is past the end of journal {self.journal_id} in "
            f"{self.source.data_dir} (seq {durable} as this gateway found it): the journal lost "
            f"records that were delivered (restored from an older copy, its durable.seq removed, "
            f"or a tail lost under fsync = \"none\"), and its next records take seqs the "
            f"destination already holds, which consumers would drop as repeats. Give the "
            f"journal a new destination, or remove this one's events past seq {durable} and set "
            f"its stored cursor ({self.cursor_where()}) back to {durable}")

    def cursor_where(self) -> str:
        """Where the stored cursor is, for :class:`ForeignCursorError`'s message."""
        return str(self.cursor_path)

    @staticmethod
    def _seek(tail: JournalTail, cursor: int) -> int:
        """Position ``tail`` after ``cursor``; returns the cursor record's ``ts_ns`` (0: not read).

        The cursor record itself is read on the way (the tail scans up to it
        anyway), so the lag in time is known before the first delivery.
        """
        if cursor == 0:
            tail.seek(0)
            return 0
        tail.seek(cursor - 1)
        try:
            records = tail.read(1)
        except JournalGapError:
            # The cursor record itself was archived (its segment ended there): it
            # was delivered, and only its time is lost; the next one is what counts.
            records = []
        if records and records[0].seq == cursor:
            return records[0].ts_ns
        tail.seek(cursor)
        return 0

    def _first_start(self) -> int:
        """Where a gateway with no stored cursor starts: after seq 0, or, on a journal whose
        first segments were archived, before its first record still there when
        ``start_after_archived`` says so (else :class:`JournalGapError`, naming the key)."""
        first = self.first_journal_seq()
        if first is None or first <= 1:
            return 0
        if not self.config.start_after_archived:
            raise JournalGapError(
                f"it has delivered nothing yet (no stored cursor), and journal "
                f"{self.source.data_dir} starts at seq {first}: seqs 1 to {first - 1} were "
                f"archived. Put those segments back to deliver them, or set "
                f"start_after_archived = true in its [[gateways]] table to start at seq {first}")
        log.warning("gateway %s: no stored cursor, and journal seqs 1 to %d were archived: "
                    "starting at seq %d (start_after_archived); those seqs are not delivered",
                    self.name, first - 1, first)
        return first - 1

    def first_journal_seq(self) -> int | None:
        """The seq of the journal's first record still in its directory (None: no segment),
        above 1 once the first segments were archived."""
        return first_kept_seq(self.source.data_dir)

    def _set_cursor(self, seq: int, ts_ns: int = 0) -> None:
        with self._progress:
            self._metrics.cursor = seq
            self._metrics.cursor_known = True
            if ts_ns:
                self._metrics.cursor_ts_ns = ts_ns
            self._progress.notify_all()
        self._share_metrics()

    def _safe_close(self) -> None:
        try:
            self.close()
        except Exception as exc:  # noqa: BLE001 - closing a broken connection may fail too
            log.debug("gateway %s: close failed: %s", self.name, exc)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} cursor={self._metrics.cursor}>"


_SHARED_FIELDS = ("cursor", "delivered", "batches", "records_read", "failures", "connected",
                  "undecodable", "last_delivery_ns", "cursor_ts_ns", "dropped", "cursor_known")
#: The shared fields that are booleans (shared as 0 or 1).
_SHARED_FLAGS = ("connected", "cursor_known")
#: Room for ``metrics.last_error`` shared by a gateway's child (UTF-8, longer text is cut).
_SHARED_ERROR_BYTES = 1024
#: How often a gateway's child checks that the engine that started it is still there: the
#: fallback where the kernel cannot kill it with the engine (:func:`engine.children.die_with_parent`).
PARENT_CHECK_S = 1.0
def _child_main(config, journal_dir, check_chain, data_dir, shared, stop, conn, parent,
                shared_error=None, log_settings=None, journal_id=None) -> None:
    """A gateway's child process: run it on a thread; its counters go to ``shared``
    and the text of its last error to ``shared_error``.

    The gateway thread writes its counters through to the shared array as
    it moves (no polling thread, which would wake the process hundreds of
    times a second for nothing). The child dies with the engine (``parent``,
    the engine's pid): the kernel kills it when the engine's process ends
    (:func:`engine.children.die_with_parent`), and where it cannot, the child checks every
    :data:`PARENT_CHECK_S` and stops, instead of following a journal nobody
    writes while holding the ports a restarted engine needs. It lowers its
    CPU priority by the configured ``nice`` before starting the gateway
    (every thread it starts inherits it).
    """
    if not die_with_parent(parent):
        return  # the engine died while this child was starting: nobody to serve
    # The engine stops its gateways: a SIGINT or SIGTERM sent to the whole
    # process group (Ctrl-C in a shell, systemd's default KillMode) is the
    # engine's to act on, and so is a SIGHUP (the engine reloads its keys;
    # its default action would end the child). Killed by one, the child would
    # deliver again what its cursor file had not caught up with; ignoring it,
    # the child waits for the engine's stop and stores its cursor. (A dead
    # engine still ends it: the pipe's end-of-file, and the kernel's SIGKILL
    # above.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    import msgspec

    from gateways import build

    if log_settings is not None:  # the engine's [logging]: its level, JSON lines or text
        setup_logging(log_settings[0], json=log_settings[1])
    else:
        logging.basicConfig(level=logging.INFO,
                            format=f"%(asctime)s gateway[{config.gateway_name}] "
                                   f"%(levelname)s %(message)s")
    if config.nice:
        try:
            os.nice(config.nice)
        except OSError as exc:  # not allowed here: run at the engine's priority
            logging.getLogger(__name__).warning("gateway %s: nice(%d) failed: %s",
                                                config.gateway_name, config.nice, exc)
    if config.sched_policy == "idle":
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (OSError, AttributeError) as exc:  # not Linux: nice alone
            logging.getLogger(__name__).warning("gateway %s: SCHED_IDLE failed: %s",
                                                config.gateway_name, exc)
    gateway = build(msgspec.structs.replace(config, isolation="thread"),
                    JournalReader(journal_dir, check_chain=check_chain), data_dir)
    gateway._shared_out, gateway._shared_error_out = shared, shared_error
    gateway.journal_id = journal_id  # (the engine's, from its first start: see start)
    try:
        gateway.start()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        error = {"error": describe(exc)}
        if isinstance(exc, GatewayBindError):
            error["bind"] = (exc.endpoint, exc.reason, exc.errno)
        conn.send(error)
        return
    conn.send(gateway.public_info())
    conn.close()
    try:
        # ``stop``: the read end of a pipe the engine closes to stop this
        # child (its end reads end-of-file then, and when the engine dies).
        while not stop.poll(PARENT_CHECK_S):
            if os.getppid() != parent:
                break
        if os.getppid() != parent:
            log.warning("gateway %s: the engine (pid %d) is gone; stopping", gateway.name, parent)
    finally:
        gateway.stop()
        gateway._share_metrics()
