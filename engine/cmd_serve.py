"""``kronos-exec serve``: run the engine (on the embedded simulator unless configured otherwise)."""
from __future__ import annotations

import argparse
import signal
import sys

#: What ``engine.service.run`` handles once its loop runs (stop, and reload the
#: keys): held until then, not left to their default action, which ends the process.
HELD_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--duration SECONDS``."""
    parser.add_argument("--config", help="TOML configuration (default: the embedded default)")
    parser.add_argument("--duration", type=_duration, default=None,
                        help="stop after this many seconds (default: until SIGINT/SIGTERM)")


def _duration(text: str) -> float:
    """A positive number of seconds (``inf``: until stopped). ``nan`` started the engine,
    then broke its loop's timer with the engine holding its journal and ports and deaf
    to SIGTERM; a negative one stopped it at once."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:   # (nan fails every comparison)
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of seconds")
    return value


def run(args: argparse.Namespace) -> int:
    """Start the service and serve until stopped.

    Exit codes: 2 for a configuration that cannot be used (the message
    names the key); 1 when the start fails: a journal that cannot be
    replayed (damaged, or holding orders the configuration cannot take;
    nothing is written to it), or an endpoint that cannot be bound. Each
    is one line on stderr, without a traceback.
    """
    # Before the engine's modules load (a third of a second): a SIGHUP sent
    # to reload the keys, or a stop, would otherwise kill the process as it starts.
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    from engine import service
    from engine.config import ConfigError
    from engine.intake import EndpointError
    from engine.journal import JournalError
    from engine.recovery import RecoveryError

    try:
        config, path = service.load(args.config)
    except (ConfigError, OSError) as exc:  # (OSError: a file that cannot be read)
        print(f"kronos-exec serve: {exc}", file=sys.stderr)
        return 2
    try:
        return service.run(config, path, args.duration)
    except (JournalError, RecoveryError) as exc:
        print(f"kronos-exec serve: cannot start on journal {config.journal.dir}: {exc}",
              file=sys.stderr)
        return 1
    except (ConfigError, EndpointError) as exc:
        print(f"kronos-exec serve: cannot start: {exc}", file=sys.stderr)
        return 1
