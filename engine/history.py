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

With ``[history] store`` naming a ``postgres`` gateway, what memory dropped
is fetched from that gateway's trade store (off the loop, see
``Pipeline._history``), once the store is known to hold it: each trim
notes the journal position at that moment (every dropped fill was
journaled before it), and the store is used only when its gateway has
delivered past that position.
"""
from __future__ import annotations

import bisect
from typing import Callable, NamedTuple, Protocol

from engine.messages import TradeFill


def _time(fill: TradeFill) -> int:
    return fill.transact_time


class TradeStore(Protocol):
    """Where every fill is kept beyond memory (a ``postgres`` gateway's tables)."""

    def delivered_position(self) -> int:
        """The journal position up to which the store holds everything."""

    def fills(self, account: str, start_ns: int, end_ns: int,
              symbol: str | None) -> list[TradeFill]:
        """Fills of ``account`` in ``[start_ns, end_ns)``, oldest first (blocking I/O)."""


class GatewayTradeStore:
    """The trade store of a running ``postgres`` gateway (``[history] store``)."""

    def __init__(self, gateway):
        self.gateway = gateway

    def delivered_position(self) -> int:
        """The gateway's cursor: the last journal seq it delivered."""
        return self.gateway.metrics.cursor

    def fills(self, account: str, start_ns: int, end_ns: int,
              symbol: str | None) -> list[TradeFill]:
        """The gateway's ``trade_history`` (its own connection; blocking)."""
        return self.gateway.trade_history(account, start_ns, end_ns, symbol)


class HistoryAnswer(NamedTuple):
    """Fills of one query, and whether they are all the fills of the range."""

    fills: list[TradeFill]
    #: False when fills of the range were dropped from memory (the bound)
    complete: bool
    #: the answer is complete from this time on (ns); 0 when it is complete
    complete_from_ns: int
    #: a trade store that has delivered past this journal position holds every
    #: fill the answer is missing (0 when complete)
    store_position: int = 0


class _Account:
    __slots__ = ("fills", "dropped_through_ns", "dropped_position")

    def __init__(self) -> None:
        self.fills: list[TradeFill] = []
        #: transact_time of the latest fill dropped from memory (0: none dropped)
        self.dropped_through_ns = 0
        #: the journal position when the latest fills were dropped
        self.dropped_position = 0


class TradeHistory:
    """Fills per account, in time order, at most ``max_fills_per_account`` each.

    Parameters
    ----------
    max_fills_per_account : int
        Fills kept per account, at most; the oldest go first. An append
        that would pass the bound trims a quarter of it at once (down to
        three quarters), so an append stays O(1) amortised.
    position : callable, optional
        The journal's position now (its last seq); noted at each trim.
    max_fills_per_request : int
        Fills one answer holds, at most (:meth:`page`).
    """

    def __init__(self, max_fills_per_account: int = 1_000_000,
                 position: Callable[[], int] = lambda: 0, max_fills_per_request: int = 10_000):
        if max_fills_per_account < 1:
            raise ValueError("max_fills_per_account must be at least 1")
        if max_fills_per_request < 1:
            raise ValueError("max_fills_per_request must be at least 1")
        self.max_fills_per_account = max_fills_per_account
        self.max_fills_per_request = max_fills_per_request
        self._keep = max_fills_per_account - max_fills_per_account // 4  # after a trim
        self._position = position
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
        if len(fills) > self.max_fills_per_account:
            self._trim(entry)

    def _trim(self, entry: _Account) -> None:
        """Drop ``entry``'s oldest fills, down to three quarters of the bound."""
        fills = entry.fills
        drop = len(fills) - self._keep
        entry.dropped_through_ns = max(entry.dropped_through_ns, fills[drop - 1].transact_time)
        entry.dropped_position = self._position()
        del fills[:drop]

    def bound(self) -> None:
        """Trim every account held past the bound, as :meth:`add` would have.

        For a history taken up from a checkpoint written under a larger
        ``max_fills_per_account``: the configuration's bound holds from the
        start, not from each account's next fill on. (A replay of the whole
        journal, trimming as the fills came, can hold a few more or fewer of the
        oldest fills: both say where what they hold begins.)
        """
        for entry in self._accounts.values():
            if len(entry.fills) > self.max_fills_per_account:
                self._trim(entry)

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
            return HistoryAnswer(found, False, entry.dropped_through_ns + 1, entry.dropped_position)
        return HistoryAnswer(found, True, 0)

    def page(self, fills: list[TradeFill]) -> tuple[list[TradeFill], int]:
        """The first page of an answer's ``fills`` (in time order) and where the rest begins.

        At most ``max_fills_per_request`` fills, cut between two fill times, so
        that asking again from the time returned (``start_time``, inclusive) gets
        each fill once; 0 when nothing is left out. Should more fills than the bound
        share the first time, that time's fills are the page, whole: a page never
        splits one instant, and never stands still.
        """
        bound = self.max_fills_per_request
        if len(fills) <= bound:
            return fills, 0
        cut = fills[bound].transact_time
        end = bisect.bisect_left(fills, cut, key=_time)
        if end == 0:
            end = bisect.bisect_right(fills, cut, key=_time)
            if end == len(fills):
                return fills, 0
        return fills[:end], fills[end].transact_time

    @staticmethod
    def merge(older: list[TradeFill], held: list[TradeFill]) -> list[TradeFill]:
        """A store's fills before what memory holds, then memory's, in time order, each once."""
        known = {f.exec_id for f in held}
        return sorted([f for f in older if f.exec_id not in known] + held, key=_time)

    def count(self, account: str) -> int:
        """Fills of ``account`` held in memory."""
        entry = self._accounts.get(account)
        return len(entry.fills) if entry is not None else 0
