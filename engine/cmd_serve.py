"""``kronos-exec serve``: run the engine (on the embedded simulator unless configured otherwise)."""
from __future__ import annotations

import argparse
import sys

from engine import service
from engine.journal import JournalCorruptError
from engine.recovery import RecoveryError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--duration SECONDS``."""
    parser.add_argument("--config", help="TOML configuration (default: the embedded default)")
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds (default: until SIGINT/SIGTERM)")


def run(args: argparse.Namespace) -> int:
    """Start the service and serve until stopped.

    A journal that cannot be replayed (damaged, or holding orders the
    configuration cannot take) stops the start with the reason and exit
    code 1; nothing is written to it.
    """
    config, path = service.load(args.config)
    try:
        return service.run(config, path, args.duration)
    except (JournalCorruptError, RecoveryError) as exc:
        print(f"kronos-exec serve: cannot start on journal {config.journal.dir}: {exc}",
              file=sys.stderr)
        return 1
