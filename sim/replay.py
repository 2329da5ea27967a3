"""Historical replay: drive the simulated venues from recorded quotes and trades.

Role in the pipeline: instead of synthetic flow, a backtest can replay what a
market did. Files are CSV or Parquet (read with pyarrow) with these columns:

quotes (top of book per venue, one row per change)
    ``ts``       int64 ns since the epoch, or a timestamp column
    ``venue``    venue name (as in the configuration, or mapped by ``venue_map``)
    ``symbol``   instrument symbol
    ``bid_px``, ``bid_qty``, ``ask_px``, ``ask_qty``
                 decimal prices and quantities (strings are exact; numbers are
                 accepted and read through their shortest decimal form); an
                 empty value or 0 means that side is empty ("NaN", "NA",
                 "N/A", "null" are not empty: they are refused as not decimals)

depth (L2: price levels per venue, one row per level change)
    ``ts``, ``venue``, ``symbol`` as above
    ``side``     ``B``/``bid``/``buy`` or ``S``/``ask``/``sell``
    ``price``    decimal
    ``qty``      decimal: the level's new total size; 0 or empty removes it
    Rows with the same ``ts`` for the same book are one update, wherever
    they are in the file (a snapshot is such a group). A book is replayed
    from quotes or from depth, not both.

trades
    ``ts``, ``venue``, ``symbol`` as above
    ``price``, ``qty``  decimal
    ``side``     optional aggressor side: ``B``/``buy`` or ``S``/``sell``;
                 when empty the side is inferred from the replayed quote

A malformed row (an empty ``ts``, venue or symbol, a value that is not a
decimal on the instrument's grid, an unknown side, a trade without a price
or quantity) is refused with ``ReplayDataError`` naming the file, the row
(from 1, header not counted) and the column; so is a ``ts`` that is neither
an integer nor an ISO 8601 timestamp, or a column mixing the two. ``ts`` is
read as an integer and never through a float.
So is a quotes row whose bid is not below its ask, and a CSV row that does
not parse. Rows out of time order are sorted and rows outside the session
replayed at its start or not at all, as before, with one warning per file
(``ReplayFeed.from_config``). A venue outside its hours takes no order:
quotes and depth before its open are held and placed in its book when it
opens (the book it opens with), trades then and rows after its close are not
replayed, with one warning per file too.

Memory: the loaders stream a CSV in blocks (``CSV_BLOCK_SIZE``) and return
text columns as pyarrow arrays (``TextColumn``); the feed keeps only integer
arrays (a few tens of bytes a row) and reads them by index as it runs.

How the books follow the file. The replay keeps, per venue, instrument,
side and price level, its own orders (account ``REPLAY_ACCOUNT``). When a
level's size grows, an order for the difference joins the back of the
level; when it shrinks, the replay's newest orders there are reduced or
canceled (so anything that joined after them keeps its place); a level
that goes away is canceled. A quote is the one level per side at its
price: when the price moves the old level goes and the new one comes. Each
update applies its decreases before its increases, so a replayed bid never
meets a stale ask. A trade is replayed as an IOC taker at the trade price:
it fills the queue front first, so a strategy order that had priority over
the recorded liquidity is filled, and one behind it is not. Strategy child
orders are processed between rows in timestamp order, with their latency.

With ``[replay] flow = true`` the synthetic background flow runs as well
(liquidity providers quoting around the replayed NBBO mid, takers, dark
pool flow); its order ids and the replay's never meet (``REPLAY_ID_BASE``).

``record_sample`` writes such files from the simulator itself; the sample
shipped in ``sim/data/`` was made with it (``python -m sim.replay``).
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from itertools import repeat
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from ext.book import OP_ADD, OP_CANCEL, OP_REPLACE
from ext.types import OrdType, Side, StpMode, TimeInForce
from sim.clock import NS_PER_S, format_ts, parse_duration
from sim.config import ConfigError, SimConfig, load_config
from sim.fees import decimal_text, price_x2_to_decimal

REPLAY_ACCOUNT = 5
REPLAY_TAKER_ACCOUNT = 6
#: Replay order ids start above this (per book), clear of the synthetic
#: flow's ids (counted per book from 1) and below ``CHILD_ID_BASE``.
REPLAY_ID_BASE = 1 << 40
QUOTE_COLUMNS = ("ts", "venue", "symbol", "bid_px", "bid_qty", "ask_px", "ask_qty")
DEPTH_COLUMNS = ("ts", "venue", "symbol", "side", "price", "qty")
TRADE_COLUMNS = ("ts", "venue", "symbol", "price", "qty")
DATA_DIR = Path(__file__).resolve().parent / "data"
#: Bytes of a CSV parsed at a time (pyarrow's default): the file is streamed in
#: blocks of this size rather than read whole (``_read_csv``).
CSV_BLOCK_SIZE = 1 << 20
#: Events turned into Python tuples at a time while replaying: the feed keeps
#: arrays, and a chunk of tuples costs nothing next to the simulation.
_CHUNK = 4096

log = logging.getLogger(__name__)

BUY, SELL = int(Side.BUY), int(Side.SELL)


class ReplayDataError(ConfigError):
    """A replay file is unreadable, empty, outside the session or has a malformed row.

    The message names the file (when known), the row (counted from 1, the
    header not counted) and the column.
    """


# ---------------------------------------------------------------- loading

class TextColumn(Sequence):
    """A loaded text column: one ``str`` (or None where empty) per row, kept in pyarrow.

    The loaders used to return Python lists, about 60 bytes a cell before
    the text; this keeps pyarrow's buffers (the text and a 4-byte offset)
    and converts a cell only when it is read. ``ReplayFeed`` reads
    ``arrow`` directly, column at a time.

    Attributes
    ----------
    arrow : pyarrow.ChunkedArray
        The strings, null where the cell is empty.
    """

    __slots__ = ("arrow",)
    __hash__ = None             # compared by value, like the lists it replaces

    def __init__(self, arrow) -> None:
        import pyarrow as pa
        self.arrow = arrow if isinstance(arrow, pa.ChunkedArray) else pa.chunked_array([arrow])

    def __len__(self) -> int:
        return len(self.arrow)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return list(self)[k]
        return self.arrow[k].as_py()

    def __iter__(self):
        # A slice at a time: iterating a whole column never builds all its strings.
        for chunk in self.arrow.chunks:
            for start in range(0, len(chunk), 1 << 16):
                yield from chunk.slice(start, 1 << 16).to_pylist()

    def __eq__(self, other):
        if isinstance(other, TextColumn):
            return self.arrow.equals(other.arrow)
        if isinstance(other, (list, tuple)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return f"TextColumn({self[:5]}{'...' if len(self) > 5 else ''}, {len(self)} rows)"


def _columns(path: str | Path, columns: tuple[str, ...], decimal_columns: tuple[str, ...]):
    """``({"ts": int64 ns array, other column: TextColumn}, table)`` of a file that must have ``columns``."""
    table = _read(path, decimal_columns)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ReplayDataError(f"{path}: missing column(s) {', '.join(missing)}")
    if table.num_rows == 0:
        raise ReplayDataError(f"{path}: no data rows")
    out = {"ts": _ts_column(table, path)}
    for c in columns[1:]:
        out[c] = TextColumn(_text(table, c))
    return out, table


def _read(path: str | Path, decimal_columns: tuple[str, ...]):
    """A CSV or Parquet file as a pyarrow Table, decimal columns kept as text."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    p = Path(path)
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            table = pq.read_table(p)
        elif p.suffix.lower() in (".csv", ".txt") or p.name.endswith(".csv.gz"):
            # Prices stay strings: a CSV "100.10" read as a float would no
            # longer be the decimal that was written.
            types = {c: pa.string() for c in decimal_columns + ("venue", "symbol", "side")}
            # Only an empty cell is empty: pyarrow's default null strings
            # ("NaN", "NA", "N/A", "null", ...) would make a malformed price
            # an empty quote side, and the ticker NA no symbol at all.
            table = _read_csv(p, pacsv.ConvertOptions(
                column_types=types, strings_can_be_null=True, null_values=[""]))
        else:
            raise ReplayDataError(f"{p}: replay files are .csv or .parquet")
    except (pa.ArrowException, OSError) as exc:
        # Missing, unreadable, empty or not CSV/Parquet at all.
        raise ReplayDataError(f"{p}: {_csv_parse_row(p, exc)}{exc}") from exc
    return table


def _read_csv(path: Path, convert_options):
    """A CSV file as a pyarrow Table, streamed in blocks of ``CSV_BLOCK_SIZE`` bytes.

    ``read_csv`` parses blocks on every core at once and holds their buffers
    beside the table: about four times the table at its peak (417 MB for a
    2-million-row, 126 MB quotes file), where streaming holds the table and
    a block (225 MB). The table is the same: the streaming reader takes each
    column's type from the first block, and when every later block converts
    to it, it is the type ``read_csv``, which widens a column only for a
    value that does not convert, infers for the whole file. When a later
    block does not convert (a ``ts`` column of integers with a float or a
    timestamp further down) or a row does not parse, the file is read again
    by ``read_csv``, so that such a file yields the table or the error it
    always did (the error paths name rows from ``read_csv``'s messages).

    Parameters
    ----------
    path : Path
        The CSV file (compressed by extension, e.g. ``.csv.gz``, as ``read_csv``).
    convert_options : pyarrow.csv.ConvertOptions

    Returns
    -------
    pyarrow.Table

    Raises
    ------
    pyarrow.ArrowException, OSError
        As ``read_csv``.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    try:
        with pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_SIZE),
                            convert_options=convert_options) as reader:
            return pa.Table.from_batches(list(reader), schema=reader.schema)
    except pa.ArrowInvalid:
        pass
    return pacsv.read_csv(path, convert_options=convert_options)


def _csv_parse_row(path: Path, exc) -> str:
    """``"row N: "`` of the row a CSV parse error is about, or ``""``.

    pyarrow's message ("Expected 7 columns, got 5: <the row>") gives the
    row's number only when it parses on one thread; the file is parsed
    again so, on the error path only, to learn it.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    if not str(exc).startswith("CSV parse error") or "Row #" in str(exc):
        return ""
    rows = []

    def first_bad(row):
        rows.append(row.number)
        return "error"
    try:
        pacsv.read_csv(path, read_options=pacsv.ReadOptions(use_threads=False),
                       parse_options=pacsv.ParseOptions(invalid_row_handler=first_bad))
    except (pa.ArrowException, OSError):
        pass
    # pyarrow counts the header as row 1; ours start at the first data row.
    return f"row {rows[0] - 1}: " if rows and rows[0] else ""


def _ts_column(table, path) -> np.ndarray:
    """The ``ts`` column as int64 ns; never through a float (which would round it)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    if "ts" not in table.column_names:
        raise ReplayDataError(f"{path}: missing column 'ts'")
    col = table.column("ts")
    try:
        if pa.types.is_timestamp(col.type):
            col = pc.cast(col, pa.timestamp("ns")).cast(pa.int64())
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = _ts_from_text(col, path)
        elif pa.types.is_integer(col.type):
            col = pc.cast(col, pa.int64())          # a checked cast: no overflow
        else:
            raise ReplayDataError(f"{path}: {_first_float_ts(col, path)}column ts must be int64 "
                                  f"ns since the epoch or a timestamp, not {col.type}")
    except pa.ArrowException as exc:
        raise ReplayDataError(f"{path}: column ts: {exc}") from exc
    if col.null_count:
        # pyarrow hands a column with nulls to numpy as float64: refuse first.
        row = pc.index(pc.is_null(col), True).as_py()
        raise ReplayDataError(f"{path}: row {row + 1}, column ts: empty")
    return np.asarray(col.to_numpy(), dtype=np.int64)


def _first_float_ts(col, path) -> str:
    """``"row N: 'text' is a floating-point number; "`` for a ts column read as numbers, or ``""``.

    A CSV ``ts`` column is read as float64 once one cell has a point or an
    exponent: the column is read again as text (on the error path only) to
    name that cell. A Parquet column has one type for all its rows, so the
    first is named.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    if not pa.types.is_floating(col.type):
        return ""
    p = Path(path)
    if p.suffix.lower() in (".parquet", ".pq"):
        return f"row 1: {col[0].as_py()!r} is a floating-point number; "
    try:
        text = pacsv.read_csv(p, convert_options=pacsv.ConvertOptions(
            include_columns=["ts"], column_types={"ts": pa.string()})).column("ts")
    except (pa.ArrowException, OSError):
        return ""
    is_int = pc.fill_null(pc.match_substring_regex(text, _INT_TEXT), True)
    if pc.all(is_int).as_py():
        return ""
    k = pc.index(is_int, False).as_py()
    return f"row {k + 1}: {text[k].as_py()!r} is a floating-point number; "


#: An integer timestamp written as text (ns since the epoch).
_INT_TEXT = r"^\s*[+-]?[0-9]+\s*$"


def _ts_from_text(col, path):
    """A text ``ts`` column as int64 ns: all integers, or all ISO 8601 timestamps.

    pyarrow reads a CSV column as text once one cell is not an integer, and
    its block cast names neither the row nor the bad value; the first cell
    that does not parse (or that mixes the two forms) is found and named.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    is_int = pc.fill_null(pc.match_substring_regex(col, _INT_TEXT), False)
    texts = None
    n_int = pc.sum(is_int).as_py() or 0
    n_text = len(col) - col.null_count - n_int
    if n_int and n_text:
        texts = col.to_pylist()
        kinds = is_int.to_pylist()
        # The form most rows have is taken as meant; the first other row is named.
        ints = n_int >= n_text
        ref = next(k for k, t in enumerate(texts) if t is not None and kinds[k] == ints)
        k = next(k for k, t in enumerate(texts) if t is not None and kinds[k] != ints)
        if ints:
            problem = (f"{texts[k]!r} is not an integer (ns since the epoch, as in row "
                       f"{ref + 1})")
        else:
            problem = (f"{texts[k]!r} is an integer, but row {ref + 1} is ISO 8601 text "
                       f"({texts[ref]!r})")
        raise ReplayDataError(f"{path}: row {k + 1}, column ts: {problem}; a column is either "
                              "int64 ns since the epoch or ISO 8601 timestamps, not both")
    try:
        if n_int:
            return pc.cast(pc.utf8_trim_whitespace(col), pa.int64())
        # ISO 8601 text, e.g. "2026-01-05T10:00:00.000123456" (taken as UTC).
        return pc.cast(pc.cast(col, pa.timestamp("ns")), pa.int64())
    except pa.ArrowException:
        pass
    # The block cast failed: find the first cell that does on its own.
    target = pa.int64() if n_int else pa.timestamp("ns")
    for k, text in enumerate(col.to_pylist() if texts is None else texts):
        if text is None:
            continue
        try:
            pa.scalar(text.strip() if n_int else text).cast(target)
        except (pa.ArrowException, ValueError) as exc:
            what = ("is not an int64 of ns since the epoch" if n_int else
                    "is not an ISO 8601 timestamp such as 2026-01-05T10:00:00.000123456 "
                    "(UTC, no zone suffix)")
            raise ReplayDataError(f"{path}: row {k + 1}, column ts: {text!r} {what}") from exc
    raise ReplayDataError(f"{path}: column ts: cannot be read as timestamps")


def _text(table, name: str):
    """A column as decimal text (null where empty); numbers via their shortest repr.

    A float NaN or infinity stays text ("nan", "inf"), refused as not a
    decimal: only a missing value is empty. A column that is not text is
    converted once per distinct value, with Python's ``repr``/``str`` (what
    a recorded float means is its shortest decimal form, which pyarrow's own
    cast does not always write).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    col = table.column(name)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        col = col.cast(pa.string())
        empty = pc.fill_null(pc.equal(col, ""), False)
        if pc.any(empty).as_py():
            col = pc.if_else(empty, pa.scalar(None, pa.string()), col)
        return col
    distinct = pc.unique(col)
    floating = pa.types.is_floating(col.type)
    texts = [None if v is None else repr(float(v)) if floating else str(v)
             for v in distinct.to_pylist()]
    return pa.array(texts, pa.string()).take(pc.index_in(col, value_set=distinct))


def load_quotes(path: str | Path) -> dict[str, TextColumn | np.ndarray]:
    """Read a quotes file (columns in the module docstring).

    Returns
    -------
    dict
        ``ts`` (int64 array), ``venue``, ``symbol``, ``bid_px``, ``bid_qty``,
        ``ask_px``, ``ask_qty`` (``TextColumn``: decimal strings or None).

    Raises
    ------
    ReplayDataError
        On a missing, unreadable or empty file, a row that does not parse,
        a missing column or an empty ``ts``.
    """
    return _columns(path, QUOTE_COLUMNS, ("bid_px", "bid_qty", "ask_px", "ask_qty"))[0]


def load_depth(path: str | Path) -> dict[str, TextColumn | np.ndarray]:
    """Read an L2 depth file (columns in the module docstring).

    Returns
    -------
    dict
        ``ts`` (int64 array), ``venue``, ``symbol``, ``side``, ``price``,
        ``qty`` (``TextColumn``: text or None).

    Raises
    ------
    ReplayDataError
        On a missing, unreadable or empty file, a row that does not parse,
        a missing column or an empty ``ts``.
    """
    return _columns(path, DEPTH_COLUMNS, ("price", "qty"))[0]


def load_trades(path: str | Path) -> dict[str, TextColumn | np.ndarray]:
    """Read a trades file (columns in the module docstring); ``side`` may be absent."""
    import pyarrow as pa
    out, table = _columns(path, TRADE_COLUMNS, ("price", "qty"))
    out["side"] = TextColumn(_text(table, "side") if "side" in table.column_names
                             else pa.nulls(len(out["ts"]), pa.string()))
    return out


# ---------------------------------------------------------------- driving the market

class ReplayFeed:
    """Recorded quotes, depth and trades, applied to a ``Market`` in time order.

    Parameters
    ----------
    market : sim.market.Market
        Built with ``flow=False`` (replay configurations get that by default)
        or with pegged synthetic flow (``[replay] flow = true``).
    quotes, trades, depth : dict, optional
        As returned by ``load_quotes`` / ``load_trades`` / ``load_depth``.
    venue_map : dict, optional
        File venue name -> configured venue name.
    sources : dict, optional
        ``{"quotes": path, ...}``: the files the tables came from, for error
        messages.

    Raises
    ------
    ReplayDataError
        If a row names an unknown venue or symbol (or none), a price or
        quantity is not a decimal on the instrument's grid, a depth or trade
        side is unknown, a trade has no price or quantity, or a book is in
        both the quotes and the depth.
    """

    def __init__(self, market, quotes=None, trades=None, venue_map=None, depth=None, *,
                 sources: dict | None = None) -> None:
        self.market = market
        venue_map = dict(venue_map or {})
        sources = dict(sources or {})
        self._inst_cache: dict = {}
        # Each kind's rows as arrays (ts, book, then kind-specific integers),
        # checked a column at a time; the first bad row is named as before.
        q = d = t = None
        if quotes is not None:
            q = self._quote_rows(quotes, venue_map, sources.get("quotes"))
        if depth is not None:
            q_books = np.unique(q["book"]) if q is not None else np.zeros(0, np.int32)
            d = self._depth_rows(depth, venue_map, sources.get("depth"), q_books)
        if trades is not None:
            t = self._trade_rows(trades, venue_map, sources.get("trades"))
        self.n_quotes = 0 if q is None else len(q["ts"])
        self.n_depth = 0 if d is None else len(d["side"])
        self.n_trades = 0 if t is None else len(t["ts"])
        self._merge(q, d, t)
        self.pos = 0                    # events applied (a depth update is one event)
        self._buffer: list = []         # events as tuples, a chunk at a time (``_fill``)
        self._buffer_pos = 0
        self._filled = 0                # events put in a buffer so far
        self._next = [0, 0, 0]          # per kind: the first row not yet in the buffer
        self.next_id = [REPLAY_ID_BASE] * market.loop.n_books
        # Per (book, side): {price: the replay's orders there, oldest first}.
        self.levels: dict[tuple[int, int], dict[int, list[int]]] = {}
        # Per (book, side) of a venue not open yet: {price: lots} the file has
        # given it so far, placed in the book when the venue opens (a closed
        # venue takes no order, and a depth feed would not repeat the levels).
        self.held: dict[tuple[int, int], dict[int, int]] = {}
        #: Trades replayed while their venue was closed (not executed).
        self.n_closed_trades = 0
        #: Trades without a side whose price is inside the replayed spread (or
        #: with no replayed level to compare): their aggressor is unknown, so
        #: they are not replayed.
        self.n_unplaced_trades = 0
        #: Lots of replayed trades that found no liquidity at their price (the
        #: book replayed thinner than the print); not in the market's volume.
        self.unexecuted_trade_lots = 0
        self.trades_source = sources.get("trades")
        self._note_venue_hours(q, d, t, sources)

    def _note_venue_hours(self, q, d, t, sources: dict) -> None:
        """Log one warning per file with rows outside their venue's hours (``venues[].hours``).

        A closed venue takes no order: quotes and depth before its open are
        held and make the book it opens with; trades then, and every row
        after its close, are not replayed. Said, so that a venue's hours that
        do not cover the data are noticed.
        """
        m = self.market
        open_ns = np.array([v.open_ns for v in m.venues], np.int64)
        close_ns = np.array([v.close_ns for v in m.venues], np.int64)
        for kind, rows in (("quotes", q), ("depth", d), ("trades", t)):
            if rows is None or not len(rows["ts"]):
                continue
            venue = np.asarray(rows["book"], np.int64) // m.n_instruments
            ts = np.maximum(np.asarray(rows["ts"], np.int64), m.clock_start)
            before = int(np.count_nonzero(ts < open_ns[venue]))
            after = int(np.count_nonzero(ts >= close_ns[venue]))
            parts = []
            if before:
                parts.append(f"{before} {_rows(before)} before their venue's open "
                             + ("(trades not replayed)" if kind == "trades"
                                else "(held: the book it opens with)"))
            if after:
                parts.append(f"{after} {_rows(after)} at or after their venue's close "
                             "(not replayed)")
            if parts:
                source = sources.get(kind)
                log.warning("replay.%s: %s%s (venues[].hours)", kind,
                            f"{source}: " if source else "", "; ".join(parts))

    def _quote_rows(self, data, venue_map, source) -> dict:
        cols = _arrow_columns(data, QUOTE_COLUMNS)
        cell = _Cells("quotes", source, cols)
        books = self._books(cols, venue_map, cell, one_feed=True)
        first = _FirstError()
        units = [self._units(cols, column, books, self._px if "px" in column else self._qty,
                             first, rank, cell)
                 for rank, column in enumerate(("bid_px", "bid_qty", "ask_px", "ask_qty"))]
        bid_px, bid_qty, ask_px, ask_qty = units
        # A row is one venue's book at one instant: its bid cannot reach its ask
        # (replayed, the ask would trade the bid away by self-trade prevention).
        crossed = (bid_qty > 0) & (ask_qty > 0) & (bid_px > 0) & (bid_px >= ask_px)
        first.note(crossed, 4, lambda k: cell.error(
            k, "bid_px", f"bid {cell.text(k, 'bid_px')} is not below the ask "
            f"{cell.text(k, 'ask_px')} of the same row: a crossed or locked quote"))
        first.raise_it()
        return {"ts": cols["ts"], "book": books, "bid_px": bid_px, "bid_qty": bid_qty,
                "ask_px": ask_px, "ask_qty": ask_qty}

    def _depth_rows(self, data, venue_map, source, quote_books) -> dict:
        cols = _arrow_columns(data, DEPTH_COLUMNS)
        cell = _Cells("depth", source, cols)
        books = self._books(cols, venue_map, cell, one_feed=True)
        first = _FirstError()
        if len(quote_books):
            first.note(np.isin(books, quote_books), 0, lambda k: cell.error(
                k, "venue", f"{cell.text(k, 'venue')}/{cell.text(k, 'symbol')} is in both the "
                "quotes and the depth file"))
        codes, texts = _codes(cols["side"])
        side = np.array([_side(t) for t in texts], np.int8)[codes]
        first.note(side == 0, 1, lambda k: cell.error(
            k, "side", f"side {cell.text(k, 'side')!r} is not B/bid/buy or S/ask/sell"))
        price = self._units(cols, "price", books, self._px, first, 2, cell, True)
        qty = self._units(cols, "qty", books, self._qty, first, 3, cell)
        first.raise_it()
        return {"ts": cols["ts"], "book": books, "side": side, "price": price, "qty": qty}

    def _trade_rows(self, data, venue_map, source) -> dict:
        cols = _arrow_columns(data, TRADE_COLUMNS + ("side",))
        cell = _Cells("trades", source, cols)
        books = self._books(cols, venue_map, cell)
        first = _FirstError()
        codes, texts = _codes(cols["side"])
        # The aggressor, written B/buy or S/sell: not a depth side's bid/ask,
        # which in a trade could as well mean "at the bid" (a seller's trade).
        side = np.array([_trade_side(t) for t in texts], np.int8)
        # Empty is allowed (the side is inferred); anything else must be a side.
        unknown = np.array([s == 0 and t is not None and bool(t.strip())
                            for s, t in zip(side.tolist(), texts)], bool)
        side = side[codes]
        first.note(unknown[codes], 0, lambda k: cell.error(
            k, "side", f"side {cell.text(k, 'side')!r} is not B/buy or S/sell (or empty)"))
        qty = self._units(cols, "qty", books, self._qty, first, 1, cell)
        first.note(qty == 0, 2, lambda k: cell.error(k, "qty", "a trade needs a positive quantity"))
        price = self._units(cols, "price", books, self._px, first, 3, cell, True)
        first.raise_it()
        return {"ts": cols["ts"], "book": books, "price": price, "qty": qty, "side": side}

    def _merge(self, q, d, t) -> None:
        """Put the rows in the order they are applied, each kind's arrays permuted to it.

        A trade sorts before a quote or depth change with the same time:
        those show the book after the trade. Rows of one time otherwise keep
        their file order (quotes, then depth, then trades, as they were
        appended), a depth update being where its first row was. ``_kind``
        says which kind each event is; each kind's arrays are then read in
        order, so the feed keeps no per-row index.
        """
        empty = np.zeros(0, np.int64)
        # Depth rows of one (ts, book) are one update, wherever they are in
        # the file: group them (in file order within the group), and number
        # the groups by their first row.
        if d is not None and len(d["ts"]):
            n = len(d["ts"])
            by_key = _stable_order(d["ts"], d["book"])
            ts_s, book_s = d["ts"][by_key], d["book"][by_key]
            new = np.ones(n, bool)
            new[1:] = (ts_s[1:] != ts_s[:-1]) | (book_s[1:] != book_s[:-1])
            starts = np.flatnonzero(new)
            group_of = np.cumsum(new) - 1                   # per row of by_key
            appear = np.argsort(by_key[starts], kind="stable")
            rank = np.empty(len(starts), np.int64)
            rank[appear] = np.arange(len(starts))
            g_ts, g_book = ts_s[starts][appear], book_s[starts][appear]
            del ts_s, book_s, new
        else:
            g_ts, g_book = empty, np.zeros(0, np.int32)
        q_ts = q["ts"] if q is not None else empty
        t_ts = t["ts"] if t is not None else empty
        nq, ng, nt = len(q_ts), len(g_ts), len(t_ts)
        kind = np.concatenate([np.zeros(nq, np.int8), np.full(ng, 2, np.int8),
                               np.ones(nt, np.int8)])
        order = _stable_order(np.concatenate([q_ts, g_ts, t_ts]), (kind != 1).astype(np.int8))
        self._kind = kind[order]
        self.n_events = len(order)
        self._q = self._t = None
        if nq:
            perm = order[self._kind == 0]
            self._q = tuple(q[c][perm] for c in ("ts", "book", "bid_px", "bid_qty", "ask_px",
                                                 "ask_qty"))
        if nt:
            perm = order[self._kind == 1] - nq - ng
            self._t = tuple(t[c][perm] for c in ("ts", "book", "price", "qty", "side"))
        self._g = self._d = None
        if ng:
            g_perm = order[self._kind == 2] - nq
            position = np.empty(ng, np.int64)
            position[g_perm] = np.arange(ng)
            # Each depth row goes to its update's place in the event order.
            row_position = position[rank[group_of]]
            rows = by_key[np.argsort(row_position, kind="stable")]
            ends = np.cumsum(np.bincount(row_position, minlength=ng))
            self._g = (g_ts[g_perm], g_book[g_perm], ends)
            self._d = (d["side"][rows], d["price"][rows], d["qty"][rows])

    def nbytes(self) -> int:
        """Bytes the loaded rows take (the arrays the feed keeps until it has run)."""
        arrays = [self._kind]
        for part in (self._q, self._t, self._g, self._d):
            arrays.extend(part or ())
        return sum(a.nbytes for a in arrays)

    @classmethod
    def from_config(cls, config: SimConfig, market) -> "ReplayFeed":
        """The feed described by ``config.replay`` (paths relative to the config file).

        Raises
        ------
        ReplayDataError
            As the loaders (the message starting with the configuration key,
            ``replay.quotes``, ...) and the constructor; also when no row of
            a file falls in the session (from the clock start, warm-up
            included, to the session end): a wrong date or file.
        """
        rc = config.replay
        tables, sources = {}, {}
        for kind, load in (("quotes", load_quotes), ("trades", load_trades),
                           ("depth", load_depth)):
            if getattr(rc, kind):
                sources[kind] = config.resolve(getattr(rc, kind))
                try:
                    tables[kind] = load(sources[kind])
                except ReplayDataError as exc:
                    raise ReplayDataError(f"replay.{kind}: {exc}") from None
                _check_session(market, kind, tables[kind]["ts"], sources[kind])
                _note_order_and_session(market, kind, tables[kind]["ts"], sources[kind])
        return cls(market, tables.get("quotes"), tables.get("trades"), rc.venue_map,
                   tables.get("depth"), sources=sources)

    def _books(self, cols, venue_map, cell, one_feed: bool = False) -> np.ndarray:
        """The book index of every row (int32), each (venue, symbol) pair resolved once.

        ``one_feed`` (quotes, depth): two venues of the file may not reach one
        book (``venue_map`` naming one configured venue for both, or mapping
        a venue onto another the file also has): each row is the whole quote
        or level of its book, so two feeds would overwrite each other's in turn.
        """
        m = self.market
        feed_of: dict[int, str] = {}
        v_codes, venues = _codes(cols["venue"])
        s_codes, symbols = _codes(cols["symbol"])
        pair = v_codes.astype(np.int64) * max(len(symbols), 1) + s_codes
        pairs, first_row, inverse = np.unique(pair, return_index=True, return_inverse=True)
        lut = np.zeros(len(pairs), np.int32)
        # In the order the pairs first appear: the first bad row is the one named.
        for j in np.argsort(first_row, kind="stable").tolist():
            k = int(first_row[j])
            venue, symbol = venues[v_codes[k]], symbols[s_codes[k]]
            if venue is None or symbol is None:
                raise cell.error(k, "venue" if venue is None else "symbol", "empty")
            name = venue_map.get(venue, venue)
            try:
                b = m.book_index(name, symbol)
            except KeyError as exc:
                raise cell.error(k, "venue", f"{venue}/{symbol}: {exc.args[0]}") from None
            if m.venues[m.venue_index(name)].dark:
                raise cell.error(k, "venue", f"{venue} is a dark pool: replay drives lit "
                                 "venues only")
            if one_feed and feed_of.setdefault(b, venue) != venue:
                raise cell.error(k, "venue", f"{venue}/{symbol} and {feed_of[b]}/{symbol} both "
                                 f"replay {name}/{symbol} (replay.venue_map): one book follows "
                                 "one venue's quotes or depth")
            lut[j] = b
        return lut[inverse.reshape(-1)]

    def _units(self, cols, column, books, convert, first, rank, cell, *args) -> np.ndarray:
        """A price or quantity column as int64 ticks or lots, each distinct text converted once.

        ``convert`` is ``_px`` or ``_qty``, the exact decimal conversion of
        one cell: a recorded feed has few distinct prices and sizes, so
        converting those and spreading them with numpy is exact and costs
        no Python object per row. A bad cell is noted in ``first`` (the
        message is made again from the cell when it is the first one).
        """
        codes, texts = _codes(cols[column])
        out = np.zeros(len(codes), np.int64)
        ni = self.market.n_instruments
        inst_of = books % ni
        instruments = np.unique(inst_of).tolist()
        bad = None
        for i in instruments:
            rows = slice(None) if len(instruments) == 1 else np.flatnonzero(inst_of == i)
            inst = self.market.instruments[i]
            lut = np.zeros(len(texts), np.int64)
            lut_bad = np.zeros(len(texts), bool)
            for u in np.unique(codes[rows]).tolist():
                try:
                    lut[u] = convert(inst, texts[u], *args)
                except ValueError:
                    lut_bad[u] = True
            out[rows] = lut[codes[rows]]
            if lut_bad.any():
                if bad is None:
                    bad = np.zeros(len(codes), bool)
                bad[rows] = lut_bad[codes[rows]]
        if bad is not None:
            def error(k):
                # The cell's own conversion again: the message as it always was.
                cell(k, column, convert, self.market.instruments[int(books[k]) % ni], *args)
                raise AssertionError(f"row {k + 1}, column {column} converted on its own")
            first.note(bad, rank, error)
        return out

    def _px(self, inst, text, required: bool = False) -> int:
        """Ticks of a price; 0 when empty or zero (a quote's empty side) unless ``required``."""
        if text is None:
            if required:
                raise ValueError("empty")
            return 0
        key = (inst.symbol, "p", text)
        ticks = self._inst_cache.get(key)
        if ticks is None:
            # The value, not the text: "0", "0.00" and "0E-2" are all zero.
            ticks = 0 if _decimal(text) == 0 else inst.price_to_ticks(text)
            self._inst_cache[key] = ticks
        if ticks == 0 and required:
            raise ValueError(f"{text!r}: must be positive")
        return ticks

    def _qty(self, inst, text) -> int:
        if text is None:
            return 0
        key = (inst.symbol, "q", text)
        lots = self._inst_cache.get(key)
        if lots is None:
            lots = 0 if _decimal(text) == 0 else inst.qty_to_lots(text)
            self._inst_cache[key] = lots
        return lots

    # ------------------------------------------------------------ running

    @property
    def done(self) -> bool:
        return self.pos >= self.n_events

    def next_due(self) -> int | None:
        """Time of the next event not applied yet (None: none left)."""
        if self._buffer_pos == len(self._buffer):
            if self._filled >= self.n_events:
                return None
            self._buffer, self._buffer_pos = self._fill(), 0
        return self._buffer[self._buffer_pos][0]

    def run_until(self, ts: int) -> int:
        """Apply every row up to ``ts``, with the market's own events in between."""
        loop, n = self.market.loop, 0
        buffer, i = self._buffer, self._buffer_pos
        try:
            while True:
                if i == len(buffer):
                    if self._filled >= self.n_events:
                        break
                    buffer, i = self._fill(), 0
                row = buffer[i]
                if row[0] > ts:
                    break
                i += 1
                if self.held:
                    self._release_opened(row[0])
                loop.run_until(row[0])
                if row[1] == 0:
                    self._quote(row[2], row[3], row[4], row[5], row[6])
                elif row[1] == 2:
                    # One update: every depth row of this time and book.
                    self._depth(row[2], row[3])
                    n += len(row[3]) - 1
                else:
                    self._trade(row[2], row[3], row[4], row[5])
                n += 1
        finally:
            self._buffer, self._buffer_pos = buffer, i
            self.pos = self._filled - len(buffer) + i
        if self.held:
            self._release_opened(ts)
        loop.run_until(ts)
        return n

    def _venue_open(self, book: int) -> bool:
        return self.market.loop.is_open(book // self.market.n_instruments)

    def _opens_later(self, book: int) -> bool:
        """Whether ``book``'s venue, closed now, has yet to open (its levels are held)."""
        return self.market.now < self.market.venues[book // self.market.n_instruments].open_ns

    def _release_opened(self, upto: int) -> None:
        """Place the held levels of every venue that opens by ``upto``, at its open.

        The market is run to the venue's opening time first, so the levels
        reach the book the moment it opens, before anything later.
        """
        loop, ni = self.market.loop, self.market.n_instruments
        opens = sorted({(self.market.venues[book // ni].open_ns, book // ni)
                        for book, _side in self.held})
        for open_ns, venue in opens:
            if open_ns > upto:
                break
            loop.run_until(max(open_ns, loop.now))
            if not loop.is_open(venue):
                continue        # (already closed again: nothing to open with)
            for key in sorted(k for k in self.held if k[0] // ni == venue):
                book, side = key
                for px, qty in sorted(self.held.pop(key).items()):
                    ids = self.levels.setdefault(key, {}).setdefault(px, [])
                    self._set_level(book, side, px, ids, qty)

    def _hold(self, book: int, side: int, levels: dict[int, int], replace_all: bool) -> None:
        """Record levels for a book whose venue is not open yet (see ``held``)."""
        held = self.held.setdefault((book, side), {})
        if replace_all:
            held.clear()
        for px, qty in levels.items():
            if qty > 0:
                held[px] = qty
            else:
                held.pop(px, None)

    def _fill(self) -> list:
        """The next ``_CHUNK`` events as tuples of Python ints, read from the arrays.

        A row is ``(ts, 0, book, bid_px, bid_qty, ask_px, ask_qty)``,
        ``(ts, 1, book, price, qty, side)`` or ``(ts, 2, book, [(side, price,
        qty), ...])``.
        """
        start = self._filled
        kinds = self._kind[start:start + _CHUNK]
        nq, nt, ng = np.bincount(kinds, minlength=3).tolist()
        iq, it, ig = self._next
        rows = [None, None, None]
        if nq:
            ts, book, *rest = (a[iq:iq + nq].tolist() for a in self._q)
            rows[0] = zip(ts, repeat(0), book, *rest)
        if nt:
            ts, book, *rest = (a[it:it + nt].tolist() for a in self._t)
            rows[1] = zip(ts, repeat(1), book, *rest)
        if ng:
            g_ts, g_book, ends = self._g
            lo = int(ends[ig - 1]) if ig else 0
            bounds = (ends[ig:ig + ng] - lo).tolist()
            changes = list(zip(*(a[lo:lo + bounds[-1]].tolist() for a in self._d)))
            rows[2] = zip(g_ts[ig:ig + ng].tolist(), repeat(2), g_book[ig:ig + ng].tolist(),
                          [changes[a:b] for a, b in zip([0] + bounds[:-1], bounds)])
        self._next = [iq + nq, it + nt, ig + ng]
        self._filled = start + len(kinds)
        if max(nq, nt, ng) == len(kinds):
            return list(next(r for r in rows if r is not None))
        return [next(rows[k]) for k in kinds.tolist()]

    def replay_levels(self, book: int, side: int) -> dict[int, int]:
        """The replay's own ``{price: open lots}`` on one side of a book (for inspection)."""
        return {px: self._total(book, ids)
                for px, ids in sorted(self.levels.get((book, side), {}).items())}

    def _new_id(self, book: int) -> int:
        self.next_id[book] += 1
        return self.next_id[book]

    def _leaves(self, book: int, order_id: int) -> int:
        o = self.market.loop.book(book).order(order_id)
        return 0 if o is None else o["leaves_qty"]

    def _quote(self, book: int, bid_px: int, bid_qty: int, ask_px: int, ask_qty: int) -> None:
        if not self._venue_open(book):
            if self._opens_later(book):
                for side, px, qty in ((BUY, bid_px, bid_qty), (SELL, ask_px, ask_qty)):
                    self._hold(book, side, {px: qty} if px > 0 else {}, True)
            return
        # Shrink first, grow second: a replayed bid never meets a stale ask.
        targets = ((BUY, bid_px, bid_qty), (SELL, ask_px, ask_qty))
        for side, px, qty in targets:
            side_levels = self.levels.setdefault((book, side), {})
            for cur_px, ids in list(side_levels.items()):
                if cur_px != px or qty == 0:
                    self._set_level(book, side, cur_px, ids, 0)
                    del side_levels[cur_px]
                else:
                    self._set_level(book, side, px, ids, min(qty, self._total(book, ids)))
        for side, px, qty in targets:
            if px <= 0 or qty <= 0:
                continue
            ids = self.levels[(book, side)].setdefault(px, [])
            self._set_level(book, side, px, ids, qty)

    def _depth(self, book: int, changes: list[tuple[int, int, int]]) -> None:
        # The last change of a level in the update wins; decreases go first.
        final: dict[tuple[int, int], int] = {}
        for side, px, qty in changes:
            if px > 0:
                final[(side, px)] = qty
        if not self._venue_open(book):
            if self._opens_later(book):
                for (side, px), qty in final.items():
                    self._hold(book, side, {px: qty}, False)
            return
        for (side, px), qty in final.items():
            side_levels = self.levels.setdefault((book, side), {})
            ids = side_levels.get(px)
            if ids is None:
                continue
            if qty == 0:
                self._set_level(book, side, px, ids, 0)
                del side_levels[px]
            elif qty < self._total(book, ids):
                self._set_level(book, side, px, ids, qty)
        for (side, px), qty in final.items():
            if qty > 0:
                ids = self.levels.setdefault((book, side), {}).setdefault(px, [])
                self._set_level(book, side, px, ids, qty)

    def _total(self, book: int, ids: list[int]) -> int:
        return sum(self._leaves(book, i) for i in ids)

    def _set_level(self, book: int, side: int, px: int, ids: list[int], target: int) -> None:
        """Make the replay's quantity at ``px`` equal ``target``, newest orders first."""
        loop = self.market.loop
        live = [(i, self._leaves(book, i)) for i in ids]
        ids[:] = [i for i, q in live if q > 0]
        total = sum(q for _, q in live)
        if target > total:
            order_id = self._new_id(book)
            loop.external(book, OP_ADD, order_id, side, px, target - total, int(OrdType.LIMIT),
                          int(TimeInForce.GTC), REPLAY_ACCOUNT, int(StpMode.CANCEL_NEWEST))
            if self._leaves(book, order_id) > 0:
                ids.append(order_id)
            return
        excess = total - target
        for order_id in reversed(list(ids)):
            if excess <= 0:
                break
            leaves = self._leaves(book, order_id)
            if leaves <= excess:
                loop.external(book, OP_CANCEL, order_id)
                ids.remove(order_id)
                excess -= leaves
            else:
                o = loop.book(book).order(order_id)
                # A smaller total quantity at the same price keeps priority.
                loop.external(book, OP_REPLACE, order_id, side, px, o["qty"] - excess)
                excess = 0

    def _trade(self, book: int, px: int, qty: int, side: int) -> None:
        if px <= 0 or qty <= 0:
            return
        if not self._venue_open(book):
            self.n_closed_trades += 1       # a closed venue executes nothing
            return
        if side == 0:
            bids = self.levels.get((book, BUY))
            asks = self.levels.get((book, SELL))
            bid = max(bids) if bids else 0
            ask = min(asks) if asks else 0
            if ask and px >= ask:
                side = BUY
            elif bid and px <= bid:
                side = SELL
            else:
                # Inside the spread: hidden liquidity we cannot see (counted).
                self.n_unplaced_trades += 1
                return
        loop = self.market.loop
        instrument = book % self.market.n_instruments
        before = loop.market_volume(instrument)[0]
        loop.external(book, OP_ADD, self._new_id(book), side, px, qty, int(OrdType.LIMIT),
                      int(TimeInForce.IOC), REPLAY_TAKER_ACCOUNT, int(StpMode.STP_NONE))
        self.unexecuted_trade_lots += qty - (loop.market_volume(instrument)[0] - before)

    def note_trades(self) -> str | None:
        """Log (and return) one warning if some replayed trades did not execute in full.

        ``Backtest.run`` calls it after the run: trades the replay could not
        place (no side and a price inside the replayed spread), trades at a
        closed venue, and printed lots that found no replayed liquidity are
        not in the market's volume (``vwap``), so the run says how many.
        """
        parts = []
        if self.n_unplaced_trades:
            parts.append(f"{self.n_unplaced_trades:,} without a side inside the replayed "
                         "spread, not replayed (give their side)")
        if self.n_closed_trades:
            parts.append(f"{self.n_closed_trades:,} while their venue was closed, not replayed")
        if self.unexecuted_trade_lots:
            parts.append(f"{self.unexecuted_trade_lots:,} printed lots found no replayed "
                         "liquidity at their price and did not trade")
        if not parts:
            return None
        source = f"{self.trades_source}: " if self.trades_source else ""
        text = f"replay.trades: {source}{'; '.join(parts)}"
        log.warning("%s", text)
        return text


def _check_session(market, kind: str, ts, source) -> None:
    """Refuse a table none of whose rows falls in the session (a wrong date or file)."""
    if len(ts) == 0:
        return
    lo, hi = market.clock_start, market.session_end
    ts = np.asarray(ts, dtype=np.int64)
    inside = np.count_nonzero((ts >= lo) & (ts <= hi))
    if not inside:
        raise ReplayDataError(
            f"replay.{kind}: {source}: no row falls in the session ({format_ts(lo)} to "
            f"{format_ts(hi)}); the rows span {format_ts(int(np.min(ts)))} to "
            f"{format_ts(int(np.max(ts)))} (check session.date and the file)")


class _Cells:
    """Reads one table's cells, naming the file, row and column when one is malformed."""

    def __init__(self, kind: str, source, data: dict) -> None:
        # As the loaders' errors from ``ReplayFeed.from_config``: key, then file.
        self.where = f"replay.{kind}: {source}: " if source else f"replay {kind}: "
        self.data = data

    def text(self, k: int, column: str):
        """The cell as ``str`` (None where empty)."""
        return self.data[column][k].as_py()

    def error(self, k: int, column: str, message: str) -> ReplayDataError:
        return ReplayDataError(f"{self.where}row {k + 1}, column {column}: {message}")

    def __call__(self, k: int, column: str, convert, inst, *args):
        try:
            return convert(inst, self.text(k, column), *args)
        except ValueError as exc:
            raise self.error(k, column, str(exc)) from None


class _FirstError:
    """The first bad cell of a table: lowest row, then the column checked first.

    Checks run a column at a time over all rows; this keeps the error the
    row-by-row reading reported, so a file's message does not depend on
    how it is checked.
    """

    def __init__(self) -> None:
        self.first: tuple[int, int, object] | None = None

    def note(self, bad: np.ndarray, rank: int, make_error) -> None:
        """Remember the first ``True`` of ``bad``; ``make_error(row)`` gives (or raises) its error."""
        if not bad.any():
            return
        k = int(np.argmax(bad))
        if self.first is None or (k, rank) < self.first[:2]:
            self.first = (k, rank, make_error)

    def raise_it(self) -> None:
        if self.first is not None:
            k, _rank, make_error = self.first
            raise make_error(k)


def _arrow_columns(data: dict, columns: tuple[str, ...]) -> dict:
    """A table given to ``ReplayFeed`` as ``{"ts": int64 array, column: pyarrow ChunkedArray}``.

    Loaded tables hold ``TextColumn``s; a table built by hand may hold lists
    of strings (an empty string is then text, refused as not a decimal, as
    before).
    """
    import pyarrow as pa
    out = {"ts": np.asarray(data["ts"], dtype=np.int64)}
    for c in columns[1:]:
        values = data[c]
        if isinstance(values, TextColumn):
            values = values.arrow
        elif isinstance(values, pa.Array):
            values = pa.chunked_array([values])
        elif not isinstance(values, pa.ChunkedArray):
            values = pa.chunked_array([pa.array(list(values), pa.string())], pa.string())
        out[c] = values
    return out


def _codes(col) -> tuple[np.ndarray, list]:
    """``(codes, values)``: each row's index (int32) into the column's distinct values (None included)."""
    import pyarrow.compute as pc
    distinct = pc.unique(col)
    codes = pc.index_in(col, value_set=distinct)
    return np.asarray(codes.to_numpy(), dtype=np.int32), distinct.to_pylist()


def _stable_order(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Row order by ``(primary, secondary)``, ties in row order (two stable sorts)."""
    order = np.argsort(secondary, kind="stable")
    return order[np.argsort(primary[order], kind="stable")]


def _note_order_and_session(market, kind: str, ts: np.ndarray, source) -> None:
    """Log one warning for a file's rows out of time order or outside the session.

    They are replayed anyway, as they always were: sorted by time; rows
    before the clock start (warm-up included) applied at it; rows after the
    session end only while the run drains past it, otherwise never. The
    warning says how many, so a file that is not what it seems is noticed.
    """
    if len(ts) == 0:
        return
    late = int(np.count_nonzero(ts[1:] < np.maximum.accumulate(ts)[:-1]))
    before = int(np.count_nonzero(ts < market.clock_start))
    after = int(np.count_nonzero(ts > market.session_end))
    parts = []
    if late:
        parts.append(f"{late} {_rows(late)} out of time order, sorted")
    if before:
        # The clock starts a warm-up before the session: rows inside the warm-up
        # are replayed in time, only those before it are moved.
        parts.append(f"{before} {_rows(before)} before the clock start (session.start less "
                     "the warm-up), applied at it")
    if after:
        parts.append(f"{after} {_rows(after)} after its end, dropped (unless the run drains "
                     "past the end)")
    if parts:
        log.warning("replay.%s: %s: %s", kind, source, "; ".join(parts))


def _rows(n: int) -> str:
    return "row" if n == 1 else "rows"


def _decimal(text) -> Decimal:
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"{text!r} is not a decimal number") from None
    if not value.is_finite():
        # Decimal reads "NaN", "sNaN" and "Infinity"; none is a price or size.
        raise ValueError(f"{text!r} is not a decimal number")
    return value


def _trade_side(text) -> int:
    """A trade's aggressor: ``B``/``buy`` -> BUY, ``S``/``sell`` -> SELL, else 0.

    Only those: ``bid``/``ask`` (and ``A``, ``offer``), a depth row's sides,
    are ambiguous for a trade ("bought at the ask" or "traded at the bid",
    opposite aggressors under the two readings data vendors use), and a
    misread aggressor takes the wrong side of the replayed book.
    """
    t = (text or "").strip().upper()
    if t in ("B", "BUY"):
        return BUY
    if t in ("S", "SELL"):
        return SELL
    return 0


def _side(text) -> int:
    """A depth row's side: ``B``/``bid``/``buy`` -> BUY, ``S``/``ask``/``sell`` -> SELL, empty -> 0."""
    t = (text or "").strip().upper()
    if t in ("B", "BID", "BUY"):
        return BUY
    if t in ("S", "A", "ASK", "SELL", "OFFER"):
        return SELL
    return 0


# ---------------------------------------------------------------- sample data

def record_sample(config: SimConfig | None = None, seconds: float = 20.0,
                  symbols: tuple[str, ...] = ("AAA",), bucket: str = "20ms"):
    """Run synthetic flow and return its lit quotes and trades as replay tables.

    Quotes are thinned to the last one per book in each ``bucket`` so the
    file stays small; trades are kept as they happened.

    Returns
    -------
    tuple of dict
        ``(quotes, trades)`` with the replay columns (decimal strings).
    """
    from sim.market import Market
    cfg = config or load_config()
    cfg = cfg.with_overrides(replay=None)
    start = cfg.session.start_ns
    end = start + int(seconds * NS_PER_S)
    market = Market(cfg, record_tape=True, end_ns=end)
    market.run_until(start)
    trades_before = len(market.tape()[0])
    quotes_before = len(market.tape()[1])
    market.run_until(end)
    trades, quotes = market.tape()
    trades, quotes = trades[trades_before:], quotes[quotes_before:]
    wanted = {market.instrument_index(s) for s in symbols}
    ni = market.n_instruments
    bucket_ns = parse_duration(bucket)

    def names(book):
        return market.venue_names[book // ni], market.symbols[book % ni]

    q = {c: [] for c in QUOTE_COLUMNS}
    last: dict[tuple[int, int], int] = {}
    for k in range(len(quotes)):
        b = int(quotes["book"][k])
        if b % ni in wanted:
            last[(b, int(quotes["ts"][k]) // bucket_ns)] = k
    for k in sorted(last.values()):
        b = int(quotes["book"][k])
        inst = market.instruments[b % ni]
        venue, symbol = names(b)
        q["ts"].append(int(quotes["ts"][k]))
        q["venue"].append(venue)
        q["symbol"].append(symbol)
        for px, qty in (("bid_px", "bid_qty"), ("ask_px", "ask_qty")):
            p, n = int(quotes[px][k]), int(quotes[qty][k])
            q[px].append(inst.ticks_to_price(p) if p else "")
            q[qty].append(inst.lots_to_qty(n) if n else "")
    t = {c: [] for c in TRADE_COLUMNS + ("side",)}
    for k in range(len(trades)):
        b = int(trades["book"][k])
        if b % ni not in wanted or market.venues[b // ni].dark:
            continue
        inst = market.instruments[b % ni]
        venue, symbol = names(b)
        t["ts"].append(int(trades["ts"][k]))
        t["venue"].append(venue)
        t["symbol"].append(symbol)
        t["price"].append(decimal_text(price_x2_to_decimal(int(trades["price_x2"][k]), inst)))
        t["qty"].append(inst.lots_to_qty(int(trades["qty"][k])))
        t["side"].append("B" if int(trades["aggressor_side"][k]) == BUY else "S")
    return q, t


def record_depth_sample(config: SimConfig | None = None, seconds: float = 20.0,
                        symbols: tuple[str, ...] = ("AAA",), interval: str = "200ms",
                        levels: int = 5) -> dict:
    """Run synthetic flow and return its lit books' top ``levels`` as an L2 depth table.

    Every ``interval`` each wanted lit book's depth is compared with the last
    one written and a row is written per level that changed: its new total
    size, or 0 for a level that left the top ``levels``. The first interval
    writes the whole book (a snapshot). Trades in between are the ones
    ``record_sample`` returns for the same run (same seed).

    Returns
    -------
    dict
        The depth columns (decimal strings).
    """
    from sim.market import Market
    cfg = config or load_config()
    cfg = cfg.with_overrides(replay=None)
    start = cfg.session.start_ns
    end = start + int(seconds * NS_PER_S)
    step = parse_duration(interval)
    market = Market(cfg, end_ns=end)
    ni = market.n_instruments
    wanted = [(v.index, market.instrument_index(s)) for v in market.lit_venues() for s in symbols]
    last: dict[tuple[int, int, int], dict[int, int]] = {}
    d = {c: [] for c in DEPTH_COLUMNS}
    t = start
    while t <= end:
        market.run_until(t)
        for v, i in wanted:
            inst = market.instruments[i]
            bids, asks = market.loop.depth(v * ni + i, levels)
            for side, name, arr in ((BUY, "B", bids), (SELL, "S", asks)):
                now = {int(px): int(q) for px, q, _n in arr.tolist()}
                before = last.get((v, i, side), {})
                for px in sorted(set(now) | set(before)):
                    if now.get(px, 0) != before.get(px, 0):
                        d["ts"].append(t)
                        d["venue"].append(market.venue_names[v])
                        d["symbol"].append(inst.symbol)
                        d["side"].append(name)
                        d["price"].append(inst.ticks_to_price(px))
                        d["qty"].append(inst.lots_to_qty(now[px]) if px in now else "0")
                last[(v, i, side)] = now
        t += step
    return d


def write_tables(quotes: dict | None, trades: dict | None, out_dir: str | Path,
                 stem: str = "sample", depth: dict | None = None) -> list[Path]:
    """Write replay tables as ``<stem>_quotes``/``_trades``/``_depth`` in CSV and Parquet.

    A table given as None is not written.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in (("quotes", quotes), ("trades", trades), ("depth", depth)):
        if data is None:
            continue
        table = pa.table({c: pa.array(v, type=pa.int64() if c == "ts" else pa.string())
                          for c, v in data.items()})
        for ext, write in ((".csv", pacsv.write_csv), (".parquet", pq.write_table)):
            path = out / f"{stem}_{name}{ext}"
            write(table, path)
            paths.append(path)
    return paths


def main(argv=None) -> int:
    """``python -m sim.replay``: regenerate the shipped sample data (quotes, trades, depth)."""
    ap = argparse.ArgumentParser(description="Write replay sample data made by the simulator")
    ap.add_argument("--config", default=None, help="configuration (default: embedded)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--out", default=str(DATA_DIR))
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    quotes, trades = record_sample(cfg, args.seconds)
    depth = record_depth_sample(cfg, args.seconds)
    for p in write_tables(quotes, trades, args.out, depth=depth):
        print(p)
    return 0


__all__ = ["load_quotes", "load_trades", "load_depth", "ReplayFeed", "record_sample",
           "record_depth_sample", "write_tables", "REPLAY_ACCOUNT", "REPLAY_ID_BASE", "ConfigError",
           "ReplayDataError"]

if __name__ == "__main__":
    raise SystemExit(main())
