"""Cython core of Kronos Exec: order book, pre-trade risk and router.

There is deliberately no pure-Python fallback (two implementations drift);
the pure-Python reference models used to check this code live in ``tests/``.
"""
try:
    from ext import types as _types  # noqa: F401  (probe that the build exists)
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "Kronos Exec's Cython extensions are not built. Run `make build` "
        "(or `pip install -e .`) from the project root."
    ) from exc
