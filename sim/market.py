"""The simulated market: venues built from configuration around one event loop.

Role in the pipeline: this is the venue layer the engine uses when no outside
venue is configured, and what backtests execute against. A ``Market`` holds
one book per (venue, instrument), each venue with its fees, latency model,
trading hours and lit/dark kind, background flow (synthetic or replayed), and
the C event loop (``ext.simloop.MarketLoop``) that merges it all in time.

It speaks names (``"LITA"``, ``"AAA"``) and integers (ticks, lots, ns); the
loop speaks indices. Order entry (``submit``/``cancel``/``replace``) takes
effect after the venue's latency and answers with ``Report`` objects through
the ``on_report`` callback, after the latency back. What strategies read of
the books goes through ``Market.seen`` (``MarketView``): each venue's quotes,
depth and trades as they were its market-data latency ago.

The book class is a parameter: ``Market(config, book_class=ReferenceBook)``
runs the same market on the pure-Python reference book (for comparison and
benchmarks); the default is the Cython ``ext.book.OrderBook``.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from ext.book import OrderBook
from ext.instrument import Instrument
from ext.simloop import CHILD_ID_BASE, DEFAULT_ACCOUNT, Liquidity, MarketLoop, Report, ReportKind
from ext.types import OrdType, Side, TimeInForce
from sim.clock import at, parse_date, parse_duration
from sim.config import SimConfig, VenueConfig
from sim.fees import FEE_UNITS_PER_TICK_LOT, FeeSchedule
from sim.flow import FlowBook, SyntheticFlow
from sim.latency import LatencyModel

__all__ = ["Market", "MarketView", "VenueInfo", "Report", "ReportKind", "Liquidity",
           "CHILD_ID_BASE"]


def derive_seed(seed: int, *path: int) -> int:
    """A seed for one component, derived from the session seed and a path.

    Components get independent streams, so adding a venue does not change
    the draws of another.
    """
    return int(np.random.SeedSequence([int(seed), *path]).generate_state(1)[0])


@dataclass(frozen=True)
class VenueInfo:
    """What a router knows about a venue before it measures anything.

    Attributes
    ----------
    index : int
    name : str
    dark : bool
        Midpoint pool: no depth shown, fills at the lit NBBO mid.
    fees : FeeSchedule
        Published fees (decimal strings).
    latency_us : float
        The model's typical one-way latency (``Market.latency`` measures the
        real round trip).
    open_ns, close_ns : int
        Trading hours on the session date.
    market_data_latency_us : float
        The market-data model's typical delay (0: strategies see the books
        as they are).
    """

    index: int
    name: str
    dark: bool
    fees: FeeSchedule
    latency_us: float
    open_ns: int
    close_ns: int
    market_data_latency_us: float = 0.0


class Market:
    """Simulated venues for a set of instruments.

    Parameters
    ----------
    config : SimConfig
        Session, instruments, venues and flow (``sim.config.load_config``).
    book_class : type, optional
        Book per (venue, instrument); ``OrderBook`` or any class with its
        Python API (``tests.reference.book_reference.ReferenceBook``).
    flow : bool or object, optional
        True: synthetic background flow from ``config.flow`` (none when the
        configuration replays files, unless ``replay.flow``: then its lit
        quotes are pegged to the replayed mid). False: no flow (tests,
        replay). An object with ``next_chunk()``: that flow.
    record_tape : bool, optional
        Keep every trade and lit BBO change (``tape``), e.g. to write sample
        data.
    sample_interval : str or int, optional
        NBBO/volume sampling period (default ``session.sample_interval``).
    end_ns : int, optional
        End of the synthetic flow (default: session end).

    Attributes
    ----------
    seen : MarketView
        This market as strategies see it (``venues[].market_data_latency``);
        the methods of ``Market`` itself read the books as they are.

    Examples
    --------
    >>> from sim.config import load_config
    >>> m = Market(load_config())
    >>> m.run_until(m.session_start)          # doctest: +SKIP
    """

    def __init__(self, config: SimConfig, *, book_class=OrderBook, flow=True,
                 record_tape: bool = False, sample_interval=None, end_ns: int | None = None
                 ) -> None:
        self.config = config
        session = config.session
        date = parse_date(session.date)
        self.session_start = session.start_ns
        self.session_end = session.end_ns
        self.clock_start = session.clock_start_ns
        self.instruments: list[Instrument] = [ic.instrument() for ic in config.instruments]
        self.symbols = [i.symbol for i in self.instruments]
        self.venue_configs: list[VenueConfig] = list(config.venues)
        self.venue_names = [v.name for v in self.venue_configs]
        self._sym = {s: k for k, s in enumerate(self.symbols)}
        self._ven = {n: k for k, n in enumerate(self.venue_names)}
        ni = len(self.instruments)
        self.n_instruments = ni
        # Every (venue, instrument) pair by name and by index, to its book: a child
        # order's book in one dict lookup instead of three Python calls (book_index
        # runs once per child the engine sends).
        self._book_of_pair = {(venue, symbol): v * ni + k
                              for v, venue_name in enumerate(self.venue_names)
                              for k, symbol_name in enumerate(self.symbols)
                              for venue in (v, venue_name) for symbol in (k, symbol_name)}

        books, book_venue, book_instr, flow_books = [], [], [], []
        maker_pl, taker_pl, maker_cb, taker_cb = [], [], [], []
        self.venues: list[VenueInfo] = []
        for v, vc in enumerate(self.venue_configs):
            open_ns, close_ns = at(date, vc.hours[0]), at(date, vc.hours[1])
            self.venues.append(VenueInfo(v, vc.name, vc.dark, vc.fees, vc.latency.typical_us,
                                         open_ns, close_ns, vc.market_data_latency.typical_us))
            mcb, tcb = vc.fees.cbps()
            for i, inst in enumerate(self.instruments):
                books.append(book_class(f"{vc.name}:{inst.symbol}"))
                book_venue.append(v)
                book_instr.append(i)
                mpl, tpl = vc.fees.per_lot_units(inst)
                maker_pl.append(mpl)
                taker_pl.append(tpl)
                maker_cb.append(mcb)
                taker_cb.append(tcb)
                flow_books.append(FlowBook(i, vc.dark, open_ns, close_ns, vc.flow_scale))
        self.latency_models = [LatencyModel(vc.latency, derive_seed(session.seed, 1, v))
                               for v, vc in enumerate(self.venue_configs)]
        # None where there is none: the loop then reads that venue live (and
        # draws nothing), so a configuration without the key runs as before.
        self.market_data_latency_models = [
            None if vc.market_data_latency.is_zero
            else LatencyModel(vc.market_data_latency, derive_seed(session.seed, 3, v))
            for v, vc in enumerate(self.venue_configs)]
        self._fee_rates = list(zip(maker_pl, taker_pl, maker_cb, taker_cb))

        if flow is True:
            replay = config.replay
            flow = None if replay is not None and not replay.flow else SyntheticFlow(
                flow_books, list(config.instruments), config.flow, self.clock_start,
                self.session_end if end_ns is None else end_ns, derive_seed(session.seed, 2),
                pegged=replay is not None)
        elif flow is False:
            flow = None
        self.flow = flow
        sample_ns = parse_duration(sample_interval if sample_interval is not None
                                   else session.sample_interval)
        self.loop = MarketLoop(books, book_venue, book_instr, [vc.dark for vc in self.venue_configs],
                               maker_pl, taker_pl, maker_cb, taker_cb, self.latency_models,
                               flow=flow, start_ts=self.clock_start, sample_ns=sample_ns,
                               record_tape=record_tape,
                               md_latency=self.market_data_latency_models,
                               md_depth=[vc.market_data_depth for vc in self.venue_configs])
        for info in self.venues:
            self.loop.set_session(info.index, info.open_ns, info.close_ns)
        #: The market as strategies see it (``venues[].market_data_latency``).
        self.seen = MarketView(self)

    # ------------------------------------------------------------ names and indices

    def venue_index(self, venue) -> int:
        """Index of a venue given by name or index."""
        if isinstance(venue, str):
            try:
                return self._ven[venue]
            except KeyError:
                raise KeyError(f"no venue {venue!r}; venues: {', '.join(self.venue_names)}") from None
        return int(venue)

    def instrument_index(self, symbol) -> int:
        """Index of an instrument given by symbol or index."""
        if isinstance(symbol, str):
            try:
                return self._sym[symbol]
            except KeyError:
                raise KeyError(f"no instrument {symbol!r}") from None
        return int(symbol)

    def instrument(self, symbol) -> Instrument:
        """The ``Instrument`` of a symbol (or index)."""
        return self.instruments[self.instrument_index(symbol)]

    def book_index(self, venue, symbol) -> int:
        """Book index of (venue, instrument): ``venue * n_instruments + instrument``."""
        try:
            return self._book_of_pair[venue, symbol]
        except (KeyError, TypeError):  # (not a known pair: the slow path says why, or converts)
            pass
        return self.venue_index(venue) * self.n_instruments + self.instrument_index(symbol)

    def lit_venues(self) -> list[VenueInfo]:
        return [v for v in self.venues if not v.dark]

    def dark_venues(self) -> list[VenueInfo]:
        return [v for v in self.venues if v.dark]

    # ------------------------------------------------------------ time

    @property
    def now(self) -> int:
        """Current simulated time (ns since the epoch)."""
        return self.loop.now

    def run_until(self, ts: int) -> int:
        """Advance the market to ``ts``; returns the number of events processed."""
        return self.loop.run_until(int(ts))

    def set_timer(self, ts: int, callback) -> None:
        """Call ``callback()`` at simulated time ``ts``."""
        self.loop.set_timer(int(ts), callback)

    # ------------------------------------------------------------ order entry

    def submit(self, venue, symbol, side: int, qty: int, price: int = 0,
               ord_type: int = OrdType.LIMIT, tif: int = TimeInForce.DAY, post_only: bool = False,
               account: int = DEFAULT_ACCOUNT, stp: int = -1, on_report=None,
               min_qty: int = 0) -> int:
        """Send a child order; it reaches the venue after the venue's latency.

        Parameters
        ----------
        venue : str or int
        symbol : str or int
        side : Side
        qty : int
            Lots.
        price : int, optional
            Limit in ticks (ignored for MARKET). For a dark pool, the limit of
            the midpoint order; 0 is a pure peg.
        ord_type, tif : OrdType, TimeInForce, optional
        post_only : bool, optional
        account : int, optional
        stp : StpMode, optional
            -1: the venue's default (cancel newest).
        on_report : callable, optional
            Receives every ``Report`` for this order when it arrives.
        min_qty : int, optional
            Minimum quantity (lots) of an IOC order at a dark pool: unless at
            least this much fills at once, nothing does. 0: none. Refused on
            resting dark orders and on lit books (see ``SimLoop.submit``).

        Returns
        -------
        int
            Child order id.
        """
        return self.loop.submit(self.book_index(venue, symbol), side, qty, price, ord_type, tif,
                                post_only, account, stp, on_report, min_qty)

    def cancel(self, child_id: int) -> None:
        """Ask the venue to cancel a child order."""
        self.loop.cancel(child_id)

    def replace(self, child_id: int, price: int, qty: int) -> None:
        """Ask the venue to change a child order's limit (ticks) and total quantity (lots)."""
        self.loop.replace(child_id, price, qty)

    # ------------------------------------------------------------ market data

    def bbo(self, venue, symbol) -> tuple[int, int, int, int]:
        """``(bid_px, bid_qty, ask_px, ask_qty)`` in ticks/lots; zeros for a dark pool."""
        return self.loop.bbo(self.book_index(venue, symbol))

    def depth(self, venue, symbol, n: int = 10):
        """L2 ``(bids, asks)`` arrays (price, qty, count), best first; empty for a dark pool."""
        return self.loop.depth(self.book_index(venue, symbol), n)

    def nbbo(self, symbol) -> tuple[int, int]:
        """Best bid and ask over the open lit venues (ticks; 0 where empty)."""
        return self.loop.nbbo(self.instrument_index(symbol))

    def mid_x2(self, symbol) -> int:
        """NBBO mid in half-ticks; 0 when one-sided, locked or crossed."""
        return self.loop.mid2(self.instrument_index(symbol))

    def is_open(self, venue) -> bool:
        return self.loop.is_open(self.venue_index(venue))

    def latency(self, venue) -> tuple[float, float, int]:
        """Measured round trip to a venue: ``(ewma_ns, mean_ns, count)``."""
        return self.loop.latency(self.venue_index(venue))

    def fee_rates(self, venue, symbol) -> tuple[int, int, int, int]:
        """``(maker_per_lot, taker_per_lot, maker_cbps, taker_cbps)`` in fee units."""
        return self._fee_rates[self.book_index(venue, symbol)]

    def fee(self, venue, symbol, liquidity: int, price_x2: int, qty: int) -> int:
        """Fee in fee units for a fill (negative: rebate)."""
        return self.loop.fee(self.book_index(venue, symbol), liquidity, price_x2, qty)

    def fee_currency(self, units: int, symbol) -> Decimal:
        """Fee units of an instrument as currency."""
        inst = self.instrument(symbol)
        return (Decimal(int(units)) * Decimal(inst.tick_size) * Decimal(inst.lot_size)
                / FEE_UNITS_PER_TICK_LOT)

    def market_volume(self, symbol) -> tuple[int, int]:
        """Traded ``(qty, notional_x2)`` so far, all venues."""
        return self.loop.market_volume(self.instrument_index(symbol))

    def samples(self) -> dict[str, dict[str, np.ndarray]]:
        """Sampled NBBO and cumulative volume per symbol.

        Returns
        -------
        dict
            ``{symbol: {"ts", "bid", "ask", "cum_qty", "cum_notional_x2"}}``,
            int64 arrays (ticks, lots, half-tick x lots).
        """
        s = self.loop.samples()
        out = {}
        for i, sym in enumerate(self.symbols):
            out[sym] = {"ts": s[:, 0], "bid": s[:, 1 + 4 * i], "ask": s[:, 2 + 4 * i],
                        "cum_qty": s[:, 3 + 4 * i], "cum_notional_x2": s[:, 4 + 4 * i]}
        return out

    def tape(self):
        """Recorded ``(trades, quotes)`` (only with ``record_tape=True``)."""
        return self.loop.tape()

    @property
    def events_processed(self) -> int:
        """Background operations plus child-order messages processed so far."""
        return self.loop.n_bg_ops + self.loop.n_strategy_msgs

    def side_of(self, text: str) -> int:
        """``"buy"``/``"sell"`` as a ``Side``."""
        return int(Side.BUY) if text.lower() == "buy" else int(Side.SELL)


class MarketView:
    """A ``Market`` as a strategy sees it: each venue's books as they were its
    market-data latency ago (``venues[].market_data_latency``).

    ``bbo``, ``nbbo``, ``mid_x2``, ``depth`` and ``market_volume`` read what
    has reached the strategy; everything else (venues, fees, hours,
    measured latency, order entry, samples, tape) is the ``Market``'s own.
    A venue without market-data latency reads live, exactly as ``Market``
    does. Under latency ``depth`` shows at most the venue's
    ``market_data_depth`` levels per side (the ones recorded).

    Parameters
    ----------
    market : Market
        The market seen; also ``self.market``.
    """

    def __init__(self, market: Market) -> None:
        self.market = market
        self._loop = market.loop
        self._book = market.book_index
        self._instrument = market.instrument_index

    def __getattr__(self, name):
        # Only what this class does not define: the Market's own attributes.
        return getattr(self.market, name)

    def bbo(self, venue, symbol) -> tuple[int, int, int, int]:
        """``(bid_px, bid_qty, ask_px, ask_qty)`` as seen; zeros for a dark pool."""
        return self._loop.bbo(self._book(venue, symbol), True)

    def depth(self, venue, symbol, n: int = 10):
        """L2 ``(bids, asks)`` as seen (at most ``market_data_depth`` levels under latency)."""
        return self._loop.depth(self._book(venue, symbol), n, True)

    def market_volume(self, symbol) -> tuple[int, int]:
        """Traded ``(qty, notional_x2)`` so far, all venues, each venue's trades as seen."""
        return self._loop.market_volume(self._instrument(symbol), True)

    def nbbo(self, symbol) -> tuple[int, int]:
        """Best bid and ask over the open lit venues, each as seen."""
        return self._loop.nbbo(self._instrument(symbol), True)

    def mid_x2(self, symbol) -> int:
        """Seen NBBO mid in half-ticks; 0 when one-sided, locked or crossed."""
        return self._loop.mid2(self._instrument(symbol), True)
