"""Fill publishers: deliver the engine's event stream to the rest of the platform.

The last stage of the pipeline. The engine journals every event; each
gateway follows the journal on its own thread from its own cursor and
delivers what it reads (ZeroMQ PUB, NATS JetStream, PostgreSQL), at least
once and in order, keyed by the journal ``seq``. The service builds them
from the ``[[gateways]]`` tables of its configuration::

    gateways = gateways.from_config(config.gateways, config.journal.dir, "data/journal/gateways")
    for gateway in gateways:
        gateway.start()
    ...
    for gateway in gateways:
        gateway.stop()

See ``docs/gateways.md``.
"""
from __future__ import annotations

import os
from typing import Any

from engine.journal import JournalReader
from gateways.base import Gateway, GatewayMetrics
from gateways.config import (
    GatewayConfig, GatewayConfigError, NatsConfig, PostgresConfig, ZmqConfig, parse_gateway_configs,
)
from gateways.events import GatewayEvent, Normalizer

__all__ = ["Gateway", "GatewayConfig", "GatewayConfigError", "GatewayEvent", "GatewayMetrics",
           "Normalizer", "build", "from_config", "parse_gateway_configs"]


def build(config: GatewayConfig, source: JournalReader, data_dir: str | os.PathLike) -> Gateway:
    """The gateway for one checked config, following ``source``.

    The destination's client library is imported here, so an engine with
    only a ZeroMQ gateway never imports psycopg or nats.
    """
    match config:
        case ZmqConfig():
            from gateways.zmq_pub import ZmqGateway
            return ZmqGateway(config, source, data_dir)
        case NatsConfig():
            from gateways.nats_js import NatsGateway
            return NatsGateway(config, source, data_dir)
        case PostgresConfig():
            from gateways.postgres import PostgresGateway
            return PostgresGateway(config, source, data_dir)
    raise GatewayConfigError(f"no gateway for {type(config).__name__}")


def from_config(tables: list[dict[str, Any]], journal_dir: str | os.PathLike,
                data_dir: str | os.PathLike) -> list[Gateway]:
    """Check the ``[[gateways]]`` tables and build the enabled gateways (not started).

    Parameters
    ----------
    tables : list of dict
        ``Config.gateways``: the parsed TOML tables.
    journal_dir : str or PathLike
        The engine's journal directory; each gateway is handed a
        ``JournalReader`` of it.
    data_dir : str or PathLike
        Where gateways keep their cursors (``<data_dir>/<name>/``).

    Returns
    -------
    list of Gateway
        In file order; call ``start()`` on each, ``stop()`` at shutdown.

    Raises
    ------
    GatewayConfigError
        Naming the table and key at fault.
    """
    configs = parse_gateway_configs(tables)
    return [build(config, JournalReader(journal_dir), data_dir) for config in configs if config.enabled]
