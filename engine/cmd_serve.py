"""``kronos-exec serve``: run the engine (on the embedded simulator unless configured otherwise)."""
from __future__ import annotations

import argparse

from engine import service


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--duration SECONDS``."""
    parser.add_argument("--config", help="TOML configuration (default: the embedded default)")
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds (default: until SIGINT/SIGTERM)")


def run(args: argparse.Namespace) -> int:
    """Start the service and serve until stopped."""
    config, path = service.load(args.config)
    return service.run(config, path, args.duration)
