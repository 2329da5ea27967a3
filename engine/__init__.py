"""Kronos Exec service layer: ZeroMQ intake, pipeline, order state machine, journal, client."""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("kronos-exec")
except PackageNotFoundError:  # pragma: no cover - running from a tree without install
    __version__ = "0.0.0+unknown"
