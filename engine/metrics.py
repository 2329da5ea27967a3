"""Operational telemetry: Prometheus metrics, ``/healthz`` and JSON-lines logs.

Every stage of the pipeline reports here: intake counts what arrives and
what it rejects, the pipeline counts fills and times each stage, the journal
times its syncs. The service serves the registry over HTTP; the one
:class:`Metrics` object is passed down to the components, which never reach
for a global.
"""
from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from bisect import bisect_left
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable, Iterator, TextIO

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

_log = logging.getLogger(__name__)

#: Seconds the metrics endpoint waits on a connection (for its request, or for it to take
#: the answer) before closing it. A scrape or a probe takes milliseconds; without a bound,
#: a connection that sends nothing held one of the endpoint's threads and a descriptor
#: (shared with the intake's client connections) for the engine's life.
REQUEST_TIMEOUT_S = 10.0

#: The ``path`` labels of ``kronos_replaces_total``: a replace amended where the children
#: rest, or one that took them down and routed the order again.
REPLACE_PATHS = ("in_place", "routed_again")

# Latency buckets from 1 µs to ~1 s: the engine's stages are microseconds,
# its worst cases (an fsync on a busy disk) milliseconds.
LATENCY_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
                   1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0)


class LoopCounter:
    """One counter series that only the event loop's thread moves: a plain number, no lock.

    ``prometheus_client``'s own values take a lock on every increment (about
    0.5 µs each, several per order) so that any thread may move them. The
    per-message counters are only ever moved by the loop, so they are plain
    attributes, and the scrape (another thread) reads them as they are:
    reading a number is atomic under the GIL.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: float = 1) -> None:
        """Add ``amount``; a counter only goes up (negative: ``ValueError``, as in
        ``prometheus_client``)."""
        if amount < 0:
            raise ValueError(f"a counter only goes up, not by {amount}")
        self.value += amount


class LoopHistogram:
    """One histogram series that only the event loop's thread moves (see :class:`LoopCounter`).

    An observation is one ``bisect`` and two additions; the scrape turns the
    per-bucket counts into Prometheus's cumulative ``le`` buckets.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        """Count one observation (a bucket holds the values up to and including its bound)."""
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount


class LoopFamily:
    """A labelled family of :class:`LoopCounter` or :class:`LoopHistogram` series.

    Registered with a ``CollectorRegistry`` like any ``prometheus_client``
    collector and scraped the same way, under the same names a ``Counter``
    or ``Histogram`` would have (``<name>_total``; ``_bucket``, ``_count``,
    ``_sum``), without the ``_created`` series.

    Parameters
    ----------
    name, documentation : str
        As for ``prometheus_client.Counter``.
    labelnames : sequence of str
        Label names; a family without labels is used directly (``inc``,
        ``observe``, ``value``).
    buckets : sequence of float, optional
        Upper bounds: the family is a histogram; without them, a counter.
    registry : CollectorRegistry, optional
        Where to register.
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = (), *,
                 buckets: tuple[float, ...] | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.name, self.documentation = name, documentation
        self.labelnames = tuple(labelnames)
        self.buckets = tuple(sorted(buckets)) if buckets is not None else None
        self._series: dict[tuple[str, ...], LoopCounter | LoopHistogram] = {}
        if not self.labelnames:
            self._unlabelled = self.labels()
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> LoopCounter | LoopHistogram:
        """The series of these label values (made on first use; keep it to skip the lookup)."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        key = tuple(str(v) for v in values)
        series = self._series.get(key)
        if series is None:
            series = LoopHistogram(self.buckets) if self.buckets is not None else LoopCounter()
            self._series[key] = series
        return series

    def inc(self, amount: float = 1) -> None:
        """Increment the family's only series (a counter without labels)."""
        self._unlabelled.inc(amount)

    def observe(self, amount: float) -> None:
        """Observe into the family's only series (a histogram without labels)."""
        self._unlabelled.observe(amount)

    @property
    def value(self) -> float:
        """The count of a counter without labels."""
        return self._unlabelled.value

    def describe(self) -> list[Metric]:
        """The family's name for the registry's duplicate check (no samples)."""
        if self.buckets is None:
            return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        """The family's samples now (called by the registry on each scrape)."""
        series = list(self._series.items())  # the loop may add a series meanwhile
        if self.buckets is None:
            family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
            for key, counter in series:
                family.add_metric(list(key), counter.value)
            yield family
            return
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        bounds = [floatToGoString(b) for b in self.buckets] + ["+Inf"]
        for key, hist in series:
            counts, total_sum = list(hist.counts), hist.sum
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, counts):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric(list(key), buckets, total_sum)
        yield family


class Metrics:
    """The engine's metrics, in a registry of their own.

    Parameters
    ----------
    registry : CollectorRegistry, optional
        Where to register; a fresh one by default, so that tests and several
        engines in one process do not collide.

    The per-message metrics (``messages_in``, ``orders_in``, ``rejects``,
    ``fills``, ``overfills``, ``replaces``, ``stage_latency``) are :class:`LoopFamily` series: only the
    event loop's thread may move them. The others are ``prometheus_client``
    metrics, safe from any thread (the journal's committer times its syncs).

    Attributes
    ----------
    messages_in : LoopFamily
        Requests decoded, by ``type``.
    orders_in : LoopFamily
        Orders received, each order of a bulk counted (unlabelled: a label
        per account or symbol would grow without bound).
    rejects : LoopFamily
        Rejects sent, by ``reason`` (the RejectReason name) and ``stage``
        (``intake``, ``risk``, ``book``, ...).
    fills : LoopFamily
        Fills reported to clients.
    overfills : LoopFamily
        Fills that took a child past the quantity sent to its venue, by
        ``venue``: that venue's fault (booked in full all the same), for
        monitoring to alert on.
    replaces : LoopFamily
        Replaces done (``REPLACED`` reports), by ``path``: ``in_place`` (a
        lower qty at the same price, the resting children amended where they
        keep their queue places) or ``routed_again`` (children taken down).
    stage_latency : LoopFamily
        Seconds spent per pipeline ``stage`` (a histogram).
    sessions : Gauge
        Sessions currently known to intake.
    send_dropped : Counter
        Outbound messages not delivered on their connection: the peer was
        gone, or so slow that its backlog passed ``resend_ring_size``; they
        stay in the resend ring.
    journal_sync : Histogram
        Seconds per ``fdatasync`` of journal records (fed by the journal's
        ``on_sync``: per flushed batch under ``always``, per group commit
        under ``group``; under ``none`` only the syncs at shutdown).
    venues_open : Gauge
        Venues in their trading hours now (read from the venues at each
        scrape: the service sets its function).
    orders_held : Gauge
        Orders in the engine's order table, done ones included (read at each
        scrape); new orders are refused at ``[orders] max_orders``.
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # process_open_fds / process_max_fds (a connection flood), resident memory, CPU.
        ProcessCollector(registry=r)
        self.messages_in = LoopFamily("kronos_messages_in", "Requests decoded, by type",
                                      ("type",), registry=r)
        self.orders_in = LoopFamily("kronos_orders_in",
                                    "Orders received (bulk orders counted one by one)", registry=r)
        self.rejects = LoopFamily("kronos_rejects", "Rejects sent, by reason and stage",
                                  ("reason", "stage"), registry=r)
        self.fills = LoopFamily("kronos_fills", "Fills reported to clients", registry=r)
        self.overfills = LoopFamily("kronos_overfills", "Fills that took a child past the "
                                    "quantity sent to its venue (the venue's fault; booked in "
                                    "full), by venue",
                                    ("venue",), registry=r)
        self.replaces = LoopFamily("kronos_replaces", "Replaces done, by path: in_place "
                                   "(resting children amended) or routed_again", ("path",),
                                   registry=r)
        self.stage_latency = LoopFamily("kronos_stage_latency_seconds",
                                        "Time spent per pipeline stage", ("stage",),
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.sessions = Gauge("kronos_sessions", "Sessions known to intake", registry=r)
        self.send_dropped = Counter("kronos_send_dropped",
                                    "Outbound messages not delivered on their connection",
                                    registry=r)
        self.journal_sync = Histogram("kronos_journal_sync_seconds", "Journal fsync duration",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.venues_open = Gauge("kronos_venues_open", "Venues in their trading hours now",
                                 registry=r)
        self.orders_held = Gauge("kronos_orders_held",
                                 "Orders in the order table, done ones included", registry=r)

    def serve_at_zero(self, venues: Iterable[str]) -> None:
        """Make the series of ``kronos_overfills_total`` (one per venue) and
        ``kronos_replaces_total`` (one per path) now, at 0.

        A series served only from its first increment is taken by Prometheus's
        ``increase()`` and ``rate()`` for one that was always at that value: the
        first overfill of a venue after a start (the one to alert on) moved no
        rate-based alert, and an absent series reads like a broken scrape.
        """
        for venue in venues:
            self.overfills.labels(venue)
        for path in REPLACE_PATHS:
            self.replaces.labels(path)

    def observe_stage(self, stage: str, start_ns: int, end_ns: int | None = None) -> None:
        """Record that ``stage`` took from ``start_ns`` to ``end_ns`` (``perf_counter_ns``)."""
        end_ns = time.perf_counter_ns() if end_ns is None else end_ns
        self.stage_latency.labels(stage).observe((end_ns - start_ns) / 1e9)

    def scrape(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


class MetricsServer:
    """HTTP endpoint serving ``/metrics`` and ``/healthz`` from a thread.

    Parameters
    ----------
    metrics : Metrics
        What ``/metrics`` shows.
    host, port : str, int
        Where to listen; port 0 picks a free port (see ``port`` after start).
    health : callable, optional
        Returns ``(ok, detail)``; ``/healthz`` answers 200 or 503 with the
        detail. Defaults to always healthy.

    A connection whose request does not come (or whose peer does not take the
    answer) within ``REQUEST_TIMEOUT_S`` is closed; its errors are logged
    (``_ThreadingHTTPServer.handle_error``).

    Raises
    ------
    OSError
        If ``host:port`` cannot be bound (the socket is bound here, before
        :meth:`start`).
    """

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 0,
                 health: Callable[[], tuple[bool, str]] | None = None):
        self.metrics = metrics
        self.health = health or (lambda: (True, "ok"))
        server = self

        class _Handler(BaseHTTPRequestHandler):
            # (StreamRequestHandler sets it on the connection; http.server closes a
            # connection whose request does not come within it.)
            timeout = REQUEST_TIMEOUT_S

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, server.metrics.scrape(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    try:
                        ok, detail = server.health()
                    except Exception as exc:  # a broken check is an unhealthy engine
                        ok, detail = False, f"health check failed: {exc}"
                    self._reply(200 if ok else 503, detail.encode() + b"\n", "text/plain; charset=utf-8")
                else:
                    self._reply(404, b"not found\n", "text/plain; charset=utf-8")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass    # a probe that gave up waiting: not worth a traceback

            def log_message(self, *args) -> None:  # scrapes every few seconds are not news
                pass

        # ThreadingHTTPServer binds IPv4 only: an IPv6 literal ("::1", "::")
        # passed the configuration's check and then could never be bound.
        http_server = _ThreadingHTTPServer6 if ":" in host else _ThreadingHTTPServer
        self._httpd = http_server((host, port), _Handler)
        self._httpd.daemon_threads = True
        self.host, self.port = self._httpd.server_address[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http",
                                        daemon=True)

    def start(self) -> "MetricsServer":
        """Start serving; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (also when it was bound but never started)."""
        if self._thread.is_alive():
            # shutdown() waits for serve_forever to return: it would wait
            # forever on a server that never started serving.
            self._httpd.shutdown()
        self._httpd.server_close()


# ---------------------------------------------------------------- logs
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg`` and any ``extra`` fields.

    ``logging.info("order rejected", extra={"cl_ord_id": "a1", "reason": "OFF_TICK"})``
    becomes ``{"ts": ..., "level": "INFO", "logger": ..., "msg": "order rejected",
    "cl_ord_id": "a1", "reason": "OFF_TICK"}``.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class _ThreadingHTTPServer(ThreadingHTTPServer):
    """The metrics endpoint's HTTP server, whose connection errors go to the engine's log.

    ``socketserver`` prints an error of a connection's thread (a peer that reset the
    connection while it was read, a probe that gave up) with a traceback straight to
    stderr, around ``logging``: a JSON log (``[logging] json = true``) got a dozen lines
    that are not JSON for every connection a health check or a port scan reset.
    """

    def handle_error(self, request, client_address) -> None:
        """Log the error of the connection from ``client_address`` (its handler's thread)."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            # The peer's doing (reset, gone, silent): not the engine's fault, and any
            # client of the port can cause it at will, so not above DEBUG.
            _log.debug("metrics: connection from %s lost: %s",
                       client_address[0], error)
            return
        _log.exception("metrics: the request from %s failed", client_address[0])


class _ThreadingHTTPServer6(_ThreadingHTTPServer):
    """The metrics endpoint on an IPv6 address."""

    address_family = socket.AF_INET6


#: (level, json) of the last setup_logging to stderr: what gateway child processes repeat.
_stderr_logging: tuple[str, bool] | None = None


def logging_settings() -> tuple[str, bool] | None:
    """``(level, json)`` as :func:`setup_logging` last set them for stderr, or None.

    A gateway's child process is a fresh interpreter: it sets its own
    logging up the same way, so that ``[logging] json`` and ``level`` hold
    for its lines too (a log pipeline parsing JSON would drop them).
    """
    return _stderr_logging


def warn_whatever_the_level(logger: logging.Logger, text: str) -> None:
    """Log ``text`` as a warning, written even where the configured level hides warnings
    (a security exposure must not go unsaid): through the root logger's handlers, in the
    configured format (a JSON log stays JSON), or as plain text on stderr when logging is
    not set up."""
    if logger.isEnabledFor(logging.WARNING):
        logger.warning(text)
        return
    handlers = logging.getLogger().handlers
    if not handlers:
        print(text, file=sys.stderr, flush=True)
        return
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 0, text, None, None)
    for handler in handlers:
        handler.handle(record)


class SparseLog:
    """At most ``most`` lines per ``window_s`` for one kind of event that anyone may cause
    (a refused key, a bad resume, a key past its rate); the rest are counted, and the count
    is logged with the first line of the next window.

    Events a client can repeat at will must not flood the log, nor hide among
    thousands of copies of themselves.

    Parameters
    ----------
    logger : logging.Logger
    what : str
        The event's name, first in the count's line ("intake: refused CURVE handshakes").
    most : int
        Lines logged per window.
    window_s : float
        The window, seconds.
    """

    def __init__(self, logger: logging.Logger, what: str, most: int = 10,
                 window_s: float = 10.0):
        self.logger, self.what, self.most, self.window_s = logger, what, most, window_s
        self._window_start = -float("inf")
        self._logged = self._unlogged = 0

    def log(self, level: int, msg: str, *args) -> None:
        """Log ``msg % args`` at ``level``, or count it when the window has had its lines."""
        now = time.monotonic()
        if now - self._window_start >= self.window_s:
            if self._unlogged:
                # (Said with the next event after the window: none since, none said.)
                self.logger.log(level, "%s: %d more within %.0f s of the first logged, "
                                "not each logged", self.what, self._unlogged, self.window_s)
            self._window_start, self._logged, self._unlogged = now, 0, 0
        if self._logged < self.most:
            self._logged += 1
            self.logger.log(level, msg, *args)
        else:
            self._unlogged += 1


def setup_logging(level: str = "INFO", *, json: bool = True, stream: TextIO | None = None) -> None:
    """Configure the root logger: JSON lines (or plain text) to ``stream`` (stderr)."""
    global _stderr_logging
    if stream is None:
        _stderr_logging = (level, json)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Python warnings (a library's DeprecationWarning, a ResourceWarning)
    # go through the same handler, as WARNING lines of logger py.warnings,
    # not as plain text on stderr in the middle of a JSON log.
    logging.captureWarnings(True)
    if stream is None:
        # So does an exception nothing handles (an engine bug), in the main thread or
        # another: Python's own hooks print its traceback as plain text on stderr, and
        # under json = true the one record saying why the engine died was unparseable.
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(kind: type[BaseException], error: BaseException, trace) -> None:
    """``sys.excepthook``: an exception that ends the program, logged (``CRITICAL``)."""
    if issubclass(kind, KeyboardInterrupt):  # (a Ctrl-C outside the engine's handlers)
        sys.__excepthook__(kind, error, trace)
        return
    logging.getLogger("engine").critical("uncaught exception: %s: %s", kind.__name__, error,
                                         exc_info=(kind, error, trace))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    """``threading.excepthook``: an exception that ends a thread, logged (``CRITICAL``)."""
    if args.exc_type is SystemExit:  # (as Python's own hook: a thread's quiet exit)
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("engine").critical(
        "uncaught exception in thread %s: %s: %s", name, args.exc_type.__name__,
        args.exc_value, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
