"""Operational telemetry: Prometheus metrics, ``/healthz`` and JSON-lines logs.

Every stage of the pipeline reports here: intake counts what arrives and
what it rejects, the pipeline counts fills and times each stage, the journal
times its syncs. The service serves the registry over HTTP; the one
:class:`Metrics` object is passed down to the components, which never reach
for a global.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, TextIO

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

# Latency buckets from 1 µs to ~1 s: the engine's stages are microseconds,
# its worst cases (an fsync on a busy disk) milliseconds.
LATENCY_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
                   1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    """The engine's metrics, in a registry of their own.

    Parameters
    ----------
    registry : CollectorRegistry, optional
        Where to register; a fresh one by default, so that tests and several
        engines in one process do not collide.

    Attributes
    ----------
    messages_in : Counter
        Requests decoded, by ``type``.
    orders_in : Counter
        Orders received, each order of a bulk counted (unlabelled: a label
        per account or symbol would grow without bound).
    rejects : Counter
        Rejects sent, by ``reason`` (the RejectReason name) and ``stage``
        (``intake``, ``risk``, ``book``, ...).
    fills : Counter
        Fills reported to clients.
    stage_latency : Histogram
        Seconds spent per pipeline ``stage``.
    sessions : Gauge
        Sessions currently known to intake.
    send_dropped : Counter
        Outbound messages ZeroMQ would not queue (peer gone or too slow);
        they stay in the resend ring.
    journal_sync : Histogram
        Seconds per journal fsync.
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages_in = Counter("kronos_messages_in", "Requests decoded, by type",
                                   ["type"], registry=r)
        self.orders_in = Counter("kronos_orders_in", "Orders received (bulk orders counted one by one)",
                                 registry=r)
        self.rejects = Counter("kronos_rejects", "Rejects sent, by reason and stage",
                               ["reason", "stage"], registry=r)
        self.fills = Counter("kronos_fills", "Fills reported to clients", registry=r)
        self.stage_latency = Histogram("kronos_stage_latency_seconds", "Time spent per pipeline stage",
                                       ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.sessions = Gauge("kronos_sessions", "Sessions known to intake", registry=r)
        self.send_dropped = Counter("kronos_send_dropped", "Outbound messages ZeroMQ did not queue",
                                    registry=r)
        self.journal_sync = Histogram("kronos_journal_sync_seconds", "Journal fsync duration",
                                      buckets=LATENCY_BUCKETS, registry=r)

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
    """

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 0,
                 health: Callable[[], tuple[bool, str]] | None = None):
        self.metrics = metrics
        self.health = health or (lambda: (True, "ok"))
        server = self

        class _Handler(BaseHTTPRequestHandler):
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
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # scrapes every few seconds are not news
                pass

        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        self.host, self.port = self._httpd.server_address[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http",
                                        daemon=True)

    def start(self) -> "MetricsServer":
        """Start serving; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
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


def setup_logging(level: str = "INFO", *, json: bool = True, stream: TextIO | None = None) -> None:
    """Configure the root logger: JSON lines (or plain text) to ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
