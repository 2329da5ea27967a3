"""The engine's in-memory trade history: the answer to ``TradeHistoryRequest``.

Every fill is kept per account, in time order, up to a bound per account
(``[history] max_fills_per_account``): an engine that trades all day must
not grow without limit, and the full record of the day is in the journal
and in the PostgreSQL trade store that the ``postgres`` gateway keeps
(docs/gateways.md). A query that reaches back past what is still held is
answered with what is held and says so (``complete = false``, with the
time from which the answer is complete), never silently short.

A query is a binary search on the fills' times, not a scan of the
account's history: it runs on the engine's loop, between orders.
"""
from __future__ import annotations

import bisect
from typing import NamedTuple

from engine.messages import TradeFill


def _time(fill: TradeFill) -> int:
    return fill.transact_time


class HistoryAnswer(NamedTuple):
    """Fills of one query, and whether they are all the fills of the range."""

    fills: list[TradeFill]
    #: False when fills of the range were dropped from memory (the bound)
    complete: bool
    #: the answer is complete from this time on (ns); 0 when it is complete
    complete_from_ns: int


class _Account:
    __slots__ = ("fills", "dropped_through_ns")

    def __init__(self) -> None:
        self.fills: list[TradeFill] = []
        #: transact_time of the latest fill dropped from memory (0: none dropped)
        self.dropped_through_ns = 0


class TradeHistory:
    """Fills per account, in time order, at most ``max_fills_per_account`` each.

    Parameters
    ----------
    max_fills_per_account : int
        Fills kept per account; the oldest go first. Trimming happens in
        chunks of a quarter of the bound, so an append stays O(1) amortised.
    """

    def __init__(self, max_fills_per_account: int = 1_000_000):
        if max_fills_per_account < 1:
            raise ValueError("max_fills_per_account must be at least 1")
        self.max_fills_per_account = max_fills_per_account
        self._slack = max(1, max_fills_per_account // 4)
        self._accounts: dict[str, _Account] = {}

    def add(self, account: str, fill: TradeFill) -> None:
        """Record one fill of ``account`` (fills arrive in time order)."""
        entry = self._accounts.get(account)
        if entry is None:
            entry = self._accounts[account] = _Account()
        fills = entry.fills
        if fills and fill.transact_time < fills[-1].transact_time:
            # The wall clock stepped back: keep the list sorted for the search.
            bisect.insort_right(fills, fill, key=_time)
        else:
            fills.append(fill)
        if len(fills) > self.max_fills_per_account + self._slack:
            drop = len(fills) - self.max_fills_per_account
            entry.dropped_through_ns = max(entry.dropped_through_ns, fills[drop - 1].transact_time)
            del fills[:drop]

    def query(self, account: str, start_ns: int, end_ns: int,
              symbol: str | None = None) -> HistoryAnswer:
        """Fills of ``account`` with ``start_ns <= transact_time < end_ns`` (and ``symbol``)."""
        entry = self._accounts.get(account)
        if entry is None:
            return HistoryAnswer([], True, 0)
        fills = entry.fills
        lo = bisect.bisect_left(fills, start_ns, key=_time)
        hi = bisect.bisect_left(fills, end_ns, lo=lo, key=_time)
        found = fills[lo:hi] if symbol is None else [f for f in fills[lo:hi] if f.symbol == symbol]
        if entry.dropped_through_ns and start_ns <= entry.dropped_through_ns:
            return HistoryAnswer(found, False, entry.dropped_through_ns + 1)
        return HistoryAnswer(found, True, 0)

    def count(self, account: str) -> int:
        """Fills of ``account`` held in memory."""
        entry = self._accounts.get(account)
        return len(entry.fills) if entry is not None else 0
