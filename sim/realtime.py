"""The simulated venues in real time, on the asyncio event loop: the engine's default venues.

Role in the pipeline: the engine routes child orders to venues; with no
outside venue configured, these are they. ``RealtimeVenues`` runs the same
``sim.market.Market`` as the backtester (same books, fees, latency models,
background flow), but its simulated clock follows the wall clock: a pacing
task on the running loop (uvloop or asyncio) advances the market to "now"
every ``tick`` (and at once when an order is submitted), so a child order
reaches its venue after the venue's latency and its reports come back after
another latency draw, in real time.

The API the engine and the router use::

    venues = RealtimeVenues(load_config())
    await venues.start()
    child = venues.submit("NEXA", "AAA", Side.BUY, 100, price=5001,
                          tif=TimeInForce.IOC, on_report=handle)   # or read venues.reports
    venues.cancel(child); venues.replace(child, price, qty)
    venues.bbo("NEXA", "AAA"); venues.depth("NEXA", "AAA", 5); venues.nbbo("AAA")
    venues.venue_table("AAA")      # per venue: fees, measured latency, quote, open
    await venues.stop()

Reports are ``ext.simloop.Report`` objects (ticks, lots, half-tick prices,
fee units). Callbacks run on the event loop, inside the pacing task: they
should be quick (hand work to a queue). Reports of orders submitted without a
callback go to the ``reports`` queue.

Timing: the pacer wakes when the next message (an order reaching its venue,
a report coming back) is due, and otherwise every ``tick`` seconds to catch
the background flow up; between wake-ups every event is still processed in
simulated-time order. The event loop's timers have a resolution of one
millisecond (``MIN_WAIT_S``), so a report reaches its callback up to that
long after its simulated time: venue latency as the engine sees it is
quantised to the millisecond. An order submitted wakes the pacer at once.
"""
from __future__ import annotations

import asyncio
from functools import partial

from engine.aio import cancel_and_wait, log_if_it_dies
from ext.book import OrderBook
from ext.types import OrdType, TimeInForce
from sim.clock import WallClock, parse_duration
from sim.config import ConfigError, SimConfig, load_config
from sim.market import Market

#: Shortest wait between market updates: the event loop's timer resolution.
MIN_WAIT_S = 0.001


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def start_at_problem(config: SimConfig, start_at: str | None,
                     duration: str | None = None) -> str | None:
    """Why the venues cannot start at ``start_at`` on this market; None when they can.

    The market is built at ``session.start`` less ``session.warmup`` and its
    clock only moves forward: a start before that would leave a frozen market
    with empty books, and one inside the warmup would cut it short, so the
    start may not precede ``session.start``. Without a ``duration`` the
    background flow stops at ``session.end``: a start at or after it would
    leave the books frozen.

    Parameters
    ----------
    config : SimConfig
        The simulator's configuration (its ``[session]``).
    start_at : str or None
        Time of day ``"HH:MM:SS"`` (None: ``session.start``, always fine).
    duration : str, optional
        The venues' session length from ``start_at`` (the flow then runs to its end).

    Returns
    -------
    str or None
        A one-line message naming the session bound, e.g. ``'09:00:00' is
        before the simulator's session.start 10:00:00: ...``.

    Raises
    ------
    ValueError
        If ``start_at`` is not a time of day.
    """
    if not start_at:
        return None
    session = config.session
    start = session.at(start_at)
    if start < session.start_ns:
        return (f"{start_at!r} is before the simulator's session.start {session.start}: its "
                f"market is built from then (less the {session.warmup} warmup) and cannot start "
                f"earlier; use {session.start} or later, or an earlier session.start")
    if not duration and start >= session.end_ns:
        return (f"{start_at!r} is at or after the simulator's session.end {session.end}, when "
                f"its background flow stops (the books would stay frozen); set a duration "
                f"(the flow then runs to start_at + duration) or a later session.end")
    return None


class RealtimeVenues:
    """Simulated venues paced by the wall clock.

    Parameters
    ----------
    config : SimConfig, str, Path or None
        Configuration (None: the embedded default).
    speed : float, optional
        Simulated seconds per real second (1.0: real time).
    tick : float, optional
        Longest wall-clock wait between market updates, in seconds.
    duration : str, optional
        How long the venues' session lasts, from ``start_at``: at its end
        every venue closes (resting DAY orders expire, new ones are refused
        ``VENUE_CLOSED``) and the background flow stops; a venue whose own
        hours end earlier closes then. Default: the venues keep their
        trading hours and the background flow runs to ``session.end``.
    start_at : str, optional
        Simulated time of day the session starts at (default ``session.start``):
        not before ``session.start``, and before ``session.end`` unless a
        ``duration`` is given (see :func:`start_at_problem`).
    book_class : type, optional
        Order book class (``OrderBook``).

    Raises
    ------
    sim.config.ConfigError
        If the market cannot start at ``start_at`` (the message says why).
    """

    def __init__(self, config=None, *, speed: float = 1.0, tick: float = 0.001,
                 duration: str | None = None, start_at: str | None = None,
                 book_class=OrderBook) -> None:
        cfg = config if isinstance(config, SimConfig) else load_config(config)
        self.config = cfg
        problem = start_at_problem(cfg, start_at, duration)
        if problem is not None:
            # run_until cannot rewind: refuse rather than map the wall clock
            # onto a time the market has already passed.
            raise ConfigError(f"start_at {problem}")
        start = cfg.session.at(start_at) if start_at else cfg.session.start_ns
        end = start + parse_duration(duration) if duration else cfg.session.end_ns
        self.market = Market(cfg, book_class=book_class, end_ns=end)
        #: When the last venue closes (simulated ns): no venue trades after it.
        self.close_ns = max(venue.close_ns for venue in self.market.venues)
        if duration:
            self._close_venues_at(end)
            self.close_ns = min(self.close_ns, end)
        # Warm the books up (in simulated time, instantly) before going live.
        self.market.run_until(start)
        self.start_ns, self.end_ns = start, end
        self.speed, self.tick = speed, tick
        self.clock: WallClock | None = None
        self.reports: asyncio.Queue = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._waiter: asyncio.Future | None = None
        self.venues = self.market.venues
        self._loop = self.market.loop

    def _close_venues_at(self, end: int) -> None:
        """End every venue's trading hours at ``end`` (simulated ns), if they run longer.

        The market's loop already holds each venue's open and close; a close
        at ``end`` is added in front (it expires resting DAY orders like the
        venue's own close). A venue that would only open at or after ``end``
        must stay closed: its queued opening is undone by a timer right
        behind it (same timestamp, queued later, so it runs after).
        """
        loop = self.market.loop
        for venue in self.market.venues:
            if venue.close_ns <= end:
                continue
            # Hours (0, 1): closed from now on, and nothing more is queued.
            stay_closed = partial(loop.set_session, venue.index, 0, 1)
            if venue.open_ns < end:
                loop.set_session(venue.index, venue.open_ns, end)
            elif venue.open_ns > loop.now:
                self.market.set_timer(venue.open_ns, stay_closed)
            else:
                stay_closed()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start pacing the market on the running event loop."""
        if self._task is not None:
            raise RuntimeError("already started")
        self.clock = WallClock(self.start_ns, self.speed)
        self._task = log_if_it_dies(asyncio.get_running_loop().create_task(
            self._pace(), name="sim-venues"), "realtime venues: the clock")

    async def stop(self) -> None:
        """Stop pacing (orders in flight stay where they are).

        A pacing task that had died of an error was logged when it died, and
        is not raised: the caller's own stop (an engine's: its intake,
        journal, gateways) goes on.
        """
        if self._task is not None:
            task, self._task = self._task, None
            await cancel_and_wait(task)

    async def __aenter__(self) -> "RealtimeVenues":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        """Whether the pacing task is alive (the venues' clock runs; they may be closed)."""
        return self._task is not None and not self._task.done()

    def open_count(self) -> int:
        """How many venues are in their trading hours now.

        Reads the market as the pacer last advanced it (at most ``tick``
        behind) and never advances it, so other threads (``/healthz``, the
        metrics scrape) may call it.
        """
        is_open = self.market.loop.is_open
        return sum(1 for venue in self.venues if is_open(venue.index))

    @property
    def session_over(self) -> bool:
        """Whether the last venue has closed (``close_ns``): none opens again."""
        return self.market.now >= self.close_ns

    def now(self) -> int:
        """Simulated time now (ns since the epoch)."""
        return self.clock.now() if self.clock is not None else self.market.now

    def catch_up(self) -> None:
        """Advance the market to the wall-clock time now (the pacing task does this too).

        Does nothing when called from inside a report callback: the market is
        already being advanced, and the caller's order goes out at its time.
        """
        # (The loop's own fields, not Market's properties: this runs per child sent.)
        loop = self._loop
        if self.clock is not None and not loop.busy:
            target = self.clock.now()
            if target > loop.now:
                self.market.run_until(target)

    def _kick(self) -> None:
        # Wake the pacer now: a new message may be due before its next tick.
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.catch_up()
            # Wake for messages (reports to the engine's orders) when they are
            # due, but catch the background flow up once a tick: waking per
            # flow event (tens of thousands a second, and with a tick below
            # the loop's 1 ms timer resolution every wait was zero) kept a
            # core busy on pacing alone. Simulated time stays exact either
            # way: run_until processes every event in order.
            nxt = self.market.loop.next_message_due()
            delay = self.tick if nxt is None else min(self.tick, self.clock.wall_delay(nxt))
            # Never below the loop's timer resolution: a shorter wait is no
            # wait, and polling until a report is due kept a core busy under
            # load (stolen from the client and the gateways on 2 cores). A
            # report may so come up to 1 ms after its simulated time.
            delay = max(delay, MIN_WAIT_S)
            # A bare future and a timer handle: no task per wake-up.
            self._waiter = loop.create_future()
            handle = loop.call_later(delay, _resolve, self._waiter)
            try:
                await self._waiter
            finally:
                handle.cancel()

    # ------------------------------------------------------------ order entry

    def submit(self, venue, symbol, side: int, qty: int, price: int = 0,
               ord_type: int = OrdType.LIMIT, tif: int = TimeInForce.DAY,
               post_only: bool = False, account: int = 1000, stp: int = -1,
               on_report=None, min_qty: int = 0) -> int:
        """Send a child order now; reports come back after the venue's latency.

        Parameters are those of ``sim.market.Market.submit``; ``on_report``
        None puts the reports on ``self.reports``.

        Returns
        -------
        int
            Child order id.
        """
        self.catch_up()
        # Straight to the loop (Market.submit is only this call): one Python frame less
        # per child order.
        child = self._loop.submit(self.market.book_index(venue, symbol), side, qty, price,
                                  ord_type, tif, post_only, account, stp,
                                  on_report or self.reports.put_nowait, min_qty)
        self._kick()
        return child

    def cancel(self, child_id: int) -> None:
        """Ask the venue to cancel a child order."""
        self.catch_up()
        self.market.cancel(child_id)
        self._kick()

    def replace(self, child_id: int, price: int, qty: int) -> None:
        """Ask the venue to change a child order's limit (ticks) and total quantity (lots)."""
        self.catch_up()
        self.market.replace(child_id, price, qty)
        self._kick()

    # ------------------------------------------------------------ market data for the router

    def bbo(self, venue, symbol):
        """``(bid_px, bid_qty, ask_px, ask_qty)`` of a venue now; zeros for a dark pool."""
        self.catch_up()
        return self.market.bbo(venue, symbol)

    def depth(self, venue, symbol, n: int = 10):
        """L2 ``(bids, asks)`` of a venue now; empty for a dark pool."""
        self.catch_up()
        return self.market.depth(venue, symbol, n)

    def nbbo(self, symbol):
        """Best bid and ask over the open lit venues (ticks)."""
        self.catch_up()
        return self.market.nbbo(symbol)

    def latency(self, venue):
        """Measured round trip ``(ewma_ns, mean_ns, count)`` of a venue."""
        return self.market.latency(venue)

    def fee_rates(self, venue, symbol):
        """``(maker_per_lot, taker_per_lot, maker_cbps, taker_cbps)`` in fee units."""
        return self.market.fee_rates(venue, symbol)

    def venue_table(self, symbol) -> list[dict]:
        """One dict per venue: what a router weighs (quote, fees, latency, hours).

        Keys: ``venue``, ``index``, ``dark``, ``open``, ``bid_px``, ``bid_qty``,
        ``ask_px``, ``ask_qty``, ``maker_per_lot``, ``taker_per_lot``,
        ``maker_cbps``, ``taker_cbps`` (fee units), ``latency_us`` (measured
        EWMA round trip, or twice the model's typical one-way value until
        measured: a round trip too).
        """
        self.catch_up()
        rows = []
        for v in self.market.venues:
            bid_px, bid_qty, ask_px, ask_qty = self.market.bbo(v.index, symbol)
            mpl, tpl, mcb, tcb = self.market.fee_rates(v.index, symbol)
            ewma, _, n = self.market.latency(v.index)
            rows.append({"venue": v.name, "index": v.index, "dark": v.dark,
                         "open": self.market.is_open(v.index), "bid_px": bid_px,
                         "bid_qty": bid_qty, "ask_px": ask_px, "ask_qty": ask_qty,
                         "maker_per_lot": mpl, "taker_per_lot": tpl, "maker_cbps": mcb,
                         "taker_cbps": tcb,
                         "latency_us": ewma / 1000 if n else 2 * v.latency_us})
        return rows
