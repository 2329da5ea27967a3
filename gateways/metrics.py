"""Prometheus metrics of the gateways: what each delivered, how far behind it is, whether it is up.

Gateways are the last stage of the pipeline and run beside the engine, so
their health is watched on their own: a gateway with ``metrics_port`` set
serves ``/metrics`` and ``/healthz`` from its own process (the engine's
endpoint shows the engine). The figures come from the gateway's counters
(:class:`gateways.base.GatewayMetrics`) and, for the lag, from the journal
itself, read at scrape time. :class:`GatewayCollector` can also be
registered in any other registry (the engine's, over the gateways it
started: their counters are shared with it).

Metrics (labels ``gateway``, the name, and ``type``):

=========================================== ======= ==================================================
``kronos_gateway_delivered_total``          counter events delivered (a re-delivery counts again)
``kronos_gateway_batches_total``            counter batches delivered
``kronos_gateway_records_read_total``       counter journal records read (events, commands, ...)
``kronos_gateway_retries_total``            counter failed attempts, each followed by a back-off
``kronos_gateway_undecodable_total``        counter event records that did not decode (skipped)
``kronos_gateway_dropped_total``            counter events the destination cannot store (logged, left out)
``kronos_gateway_up``                       gauge   1 while the destination is open, else 0
``kronos_gateway_cursor_seq``               gauge   last journal seq delivered (NaN: not known yet)
``kronos_gateway_journal_seq``              gauge   last journal seq written by the engine
``kronos_gateway_lag_records``              gauge   journal seq minus cursor (NaN: cursor not known)
``kronos_gateway_lag_seconds``              gauge   journal time of the head minus that of the cursor
``kronos_gateway_last_delivery_timestamp_seconds`` gauge when the last batch arrived (0: never)
=========================================== ======= ==================================================
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from engine.journal import JournalError, JournalReader, first_kept_seq
from engine.metrics import MetricsServer
from gateways.tail import JournalGapError, JournalTail

if TYPE_CHECKING:
    from gateways.base import Gateway

_LABELS = ["gateway", "type"]


class JournalHead:
    """The newest record of a live journal: its ``seq`` and ``ts_ns``.

    Follows the journal incrementally (each :meth:`refresh` reads only what
    was written since the previous one) without the hash-chain check: the
    gateway's own tail checks every record it delivers; this one only
    counts.

    Parameters
    ----------
    journal_dir : str or PathLike
    """

    def __init__(self, journal_dir) -> None:
        self.journal_dir = journal_dir
        self._tail = JournalTail(JournalReader(journal_dir, check_chain=False))
        self.seq = 0
        self.ts_ns = 0

    def refresh(self) -> None:
        """Read up to the end of the journal as it is now."""
        tail = self._tail
        try:
            while records := tail.read(65_536):
                last = records[-1]
                self.seq, self.ts_ns = last.seq, last.ts_ns
        except JournalGapError:
            # Old segments were removed before this follower read them: it
            # only wants the end, so it starts again at the oldest segment.
            first = first_kept_seq(self.journal_dir)
            if first is not None:
                tail.seek(first - 1)

    def close(self) -> None:
        """Close the segment file held open."""
        self._tail.close()


class GatewayCollector(Collector):
    """Collects the metrics of some gateways (module docstring) at each scrape.

    Parameters
    ----------
    gateways : iterable of Gateway
        Started or not; gateways under process isolation report the
        counters their child shares.
    """

    def __init__(self, gateways: Iterable["Gateway"]):
        self.gateways = list(gateways)
        self._heads: dict[str, JournalHead] = {}
        self._lock = threading.Lock()  # scrapes may come on several server threads

    def _head(self, gateway: "Gateway") -> tuple[int, int] | None:
        journal_dir = str(gateway.source.data_dir)
        head = self._heads.get(journal_dir)
        if head is None:
            head = self._heads[journal_dir] = JournalHead(journal_dir)
        try:
            head.refresh()
        except (JournalError, OSError):
            return None  # the gateway itself reports what is wrong with the journal
        return head.seq, head.ts_ns

    def collect(self) -> Iterator[Metric]:
        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(f"kronos_gateway_{name}", doc, labels=_LABELS)

        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"kronos_gateway_{name}", doc, labels=_LABELS)

        delivered = counter("delivered", "Events delivered (a re-delivery after a failure counts again)")
        batches = counter("batches", "Batches delivered")
        records = counter("records_read", "Journal records read (events and everything else)")
        retries = counter("retries", "Failed attempts (open or deliver), each followed by a back-off")
        undecodable = counter("undecodable", "Event records that did not decode (skipped)")
        dropped = counter("dropped", "Events the destination cannot store (logged, left out)")
        up = gauge("up", "1 while the destination is open")
        cursor = gauge("cursor_seq", "Last journal seq delivered")
        journal = gauge("journal_seq", "Last journal seq the engine wrote")
        lag = gauge("lag_records", "Journal seq minus cursor: records not yet read past")
        lag_s = gauge("lag_seconds", "Journal time of the newest record minus that of the cursor")
        last = gauge("last_delivery_timestamp_seconds", "When the last batch arrived (0: never)")
        with self._lock:
            for gateway in self.gateways:
                labels = [gateway.name, gateway.type]
                m = gateway.metrics
                delivered.add_metric(labels, m.delivered)
                batches.add_metric(labels, m.batches)
                records.add_metric(labels, m.records_read)
                retries.add_metric(labels, m.failures)
                undecodable.add_metric(labels, m.undecodable)
                dropped.add_metric(labels, m.dropped)
                up.add_metric(labels, 1 if m.connected else 0)
                # Not read yet from where it is stored (destination down since the
                # start): unknown, not 0, which would count the whole journal as lag.
                known = m.cursor_known
                cursor.add_metric(labels, m.cursor if known else float("nan"))
                last.add_metric(labels, m.last_delivery_ns / 1e9)
                head = self._head(gateway)
                if head is not None and not known:
                    journal.add_metric(labels, head[0])
                    lag.add_metric(labels, float("nan"))
                    lag_s.add_metric(labels, float("nan"))
                elif head is not None:
                    head_seq, head_ts = head
                    # The head is read after the counters: a cursor past it
                    # means records arrived in between, so no lag.
                    behind = max(0, head_seq - m.cursor)
                    journal.add_metric(labels, max(head_seq, m.cursor))
                    lag.add_metric(labels, behind)
                    if not behind:
                        lag_s.add_metric(labels, 0.0)
                    elif m.cursor_ts_ns:
                        lag_s.add_metric(labels, max(0, head_ts - m.cursor_ts_ns) / 1e9)
                    else:
                        # No cursor record (cursor 0, nothing delivered yet): not the
                        # head's age since 1970.
                        lag_s.add_metric(labels, float("nan"))
        yield from (delivered, batches, records, retries, undecodable, dropped, up, cursor, journal, lag,
                    lag_s, last)

    def close(self) -> None:
        """Close the journal files the lag is read from."""
        for head in self._heads.values():
            head.close()


class GatewayMetricsRegistry:
    """A registry holding one :class:`GatewayCollector`, in the shape ``MetricsServer`` serves."""

    def __init__(self, gateways: Iterable["Gateway"]):
        self.registry = CollectorRegistry()
        self.collector = GatewayCollector(gateways)
        self.registry.register(self.collector)

    def scrape(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


def serve_metrics(gateways: list["Gateway"], host: str, port: int) -> MetricsServer:
    """Start ``/metrics`` and ``/healthz`` for ``gateways`` on ``host:port`` (0: a free port).

    ``/healthz`` answers 200 while every destination is open, else 503
    naming the gateway and its last error.
    """
    registry = GatewayMetricsRegistry(gateways)

    def health() -> tuple[bool, str]:
        down = [f"{g.name}: {g.metrics.last_error or 'not connected'}"
                for g in gateways if not g.metrics.connected]
        return (not down, "; ".join(down) or "ok")

    return MetricsServer(registry, host, port, health=health).start()
