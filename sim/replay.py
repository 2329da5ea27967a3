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
                 empty value or 0 means that side is empty

trades
    ``ts``, ``venue``, ``symbol`` as above
    ``price``, ``qty``  decimal
    ``side``     optional aggressor side: ``B``/``buy`` or ``S``/``sell``;
                 when empty the side is inferred from the replayed quote

How the books follow the file. The replay keeps, per venue, instrument and
side, its own orders at the quoted price (account ``REPLAY_ACCOUNT``). When
the quoted size grows, an order for the difference joins the back of the
level; when it shrinks, the replay's newest orders are reduced or canceled
(so anything that joined after them keeps its place); when the price moves,
the old level's replay orders are canceled and the new size is entered. A
trade is replayed as an IOC taker at the trade price: it fills the queue
front first, so a strategy order that had priority over the recorded
liquidity is filled, and one behind it is not. Strategy child orders are
processed between rows in timestamp order, with their latency.

``record_sample`` writes such files from the simulator itself; the sample
shipped in ``sim/data/`` was made with it (``python -m sim.replay``).
"""
from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path

import numpy as np

from ext.book import OP_ADD, OP_CANCEL, OP_REPLACE
from ext.types import OrdType, Side, StpMode, TimeInForce
from sim.clock import NS_PER_S, parse_duration
from sim.config import ConfigError, SimConfig, load_config

REPLAY_ACCOUNT = 5
REPLAY_TAKER_ACCOUNT = 6
QUOTE_COLUMNS = ("ts", "venue", "symbol", "bid_px", "bid_qty", "ask_px", "ask_qty")
TRADE_COLUMNS = ("ts", "venue", "symbol", "price", "qty")
DATA_DIR = Path(__file__).resolve().parent / "data"

BUY, SELL = int(Side.BUY), int(Side.SELL)


# ---------------------------------------------------------------- loading

def _read(path: str | Path, decimal_columns: tuple[str, ...]):
    """A CSV or Parquet file as a pyarrow Table, decimal columns kept as text."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    p = Path(path)
    if p.suffix.lower() in (".parquet", ".pq"):
        table = pq.read_table(p)
    elif p.suffix.lower() in (".csv", ".txt") or p.name.endswith(".csv.gz"):
        # Prices stay strings: a CSV "100.10" read as a float would no
        # longer be the decimal that was written.
        types = {c: pa.string() for c in decimal_columns + ("venue", "symbol", "side")}
        table = pacsv.read_csv(p, convert_options=pacsv.ConvertOptions(
            column_types=types, strings_can_be_null=True))
    else:
        raise ValueError(f"{p}: replay files are .csv or .parquet")
    return table


def _ts_column(table, path) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc
    if "ts" not in table.column_names:
        raise ValueError(f"{path}: missing column 'ts'")
    col = table.column("ts")
    if pa.types.is_timestamp(col.type):
        col = pc.cast(col, pa.timestamp("ns")).cast(pa.int64())
    elif pa.types.is_string(col.type):
        # ISO 8601 text, e.g. "2026-01-05T10:00:00.000123456" (taken as UTC).
        col = pc.cast(pc.cast(col, pa.timestamp("ns")), pa.int64())
    elif not pa.types.is_integer(col.type):
        raise ValueError(f"{path}: 'ts' must be int64 ns since the epoch or a timestamp")
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.int64)


def _text(table, name: str) -> list:
    """A column as decimal text (None where empty); numbers via their shortest repr."""
    import pyarrow as pa
    col = table.column(name)
    values = col.to_pylist()
    if pa.types.is_floating(col.type):
        return [None if v is None or v != v else repr(float(v)) for v in values]
    return [None if v is None or v == "" else str(v) for v in values]


def load_quotes(path: str | Path) -> dict[str, list | np.ndarray]:
    """Read a quotes file (columns in the module docstring).

    Returns
    -------
    dict
        ``ts`` (int64 array), ``venue``, ``symbol``, ``bid_px``, ``bid_qty``,
        ``ask_px``, ``ask_qty`` (lists of decimal strings or None).

    Raises
    ------
    ValueError
        On a missing column or an unreadable file.
    """
    table = _read(path, ("bid_px", "bid_qty", "ask_px", "ask_qty"))
    missing = [c for c in QUOTE_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    out = {"ts": _ts_column(table, path)}
    for c in QUOTE_COLUMNS[1:]:
        out[c] = _text(table, c)
    return out


def load_trades(path: str | Path) -> dict[str, list | np.ndarray]:
    """Read a trades file (columns in the module docstring); ``side`` may be absent."""
    table = _read(path, ("price", "qty"))
    missing = [c for c in TRADE_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    out = {"ts": _ts_column(table, path)}
    for c in TRADE_COLUMNS[1:]:
        out[c] = _text(table, c)
    out["side"] = _text(table, "side") if "side" in table.column_names else [None] * len(out["ts"])
    return out


# ---------------------------------------------------------------- driving the market

class ReplayFeed:
    """Recorded quotes and trades, applied to a ``Market`` in time order.

    Parameters
    ----------
    market : sim.market.Market
        Built with ``flow=False`` (replay configurations get that by default).
    quotes, trades : dict, optional
        As returned by ``load_quotes`` / ``load_trades``.
    venue_map : dict, optional
        File venue name -> configured venue name.

    Raises
    ------
    ValueError
        If a row names an unknown venue or symbol, or a price is off-tick.
    """

    def __init__(self, market, quotes=None, trades=None, venue_map=None) -> None:
        self.market = market
        venue_map = dict(venue_map or {})
        rows = []          # (ts, order-in-ts, kind, book, a, b, c, d)
        self._inst_cache: dict = {}
        if quotes is not None:
            books = self._books(quotes, venue_map)
            for k in range(len(quotes["ts"])):
                b = books[k]
                inst = market.instruments[b % market.n_instruments]
                rows.append((int(quotes["ts"][k]), 1, 0, b,
                             self._px(inst, quotes["bid_px"][k]), self._qty(inst, quotes["bid_qty"][k]),
                             self._px(inst, quotes["ask_px"][k]), self._qty(inst, quotes["ask_qty"][k])))
        if trades is not None:
            books = self._books(trades, venue_map)
            for k in range(len(trades["ts"])):
                b = books[k]
                inst = market.instruments[b % market.n_instruments]
                side = (trades["side"][k] or "").strip().upper()[:1]
                rows.append((int(trades["ts"][k]), 0, 1, b, self._px(inst, trades["price"][k]),
                             self._qty(inst, trades["qty"][k]),
                             BUY if side == "B" else SELL if side == "S" else 0, 0))
        # A trade sorts before a quote with the same time: the quote shows
        # the book after the trade.
        rows.sort(key=lambda r: (r[0], r[1]))
        self.rows = rows
        self.pos = 0
        self.next_id = [0] * market.loop.n_books
        # Per (book, side): the replay's price and its orders there, oldest first.
        self.level: dict[tuple[int, int], tuple[int, list[int]]] = {}
        self.n_quotes = sum(1 for r in rows if r[2] == 0)
        self.n_trades = len(rows) - self.n_quotes

    @classmethod
    def from_config(cls, config: SimConfig, market) -> "ReplayFeed":
        """The feed described by ``config.replay`` (paths relative to the config file)."""
        rc = config.replay
        quotes = load_quotes(config.resolve(rc.quotes)) if rc.quotes else None
        trades = load_trades(config.resolve(rc.trades)) if rc.trades else None
        return cls(market, quotes, trades, rc.venue_map)

    def _books(self, data, venue_map) -> list[int]:
        m = self.market
        out = []
        cache: dict = {}
        for venue, symbol in zip(data["venue"], data["symbol"]):
            key = (venue, symbol)
            if key not in cache:
                name = venue_map.get(venue, venue)
                try:
                    b = m.book_index(name, symbol)
                except KeyError as exc:
                    raise ValueError(f"replay row for {venue}/{symbol}: {exc.args[0]}") from None
                if m.venues[m.venue_index(name)].dark:
                    raise ValueError(f"replay row for {venue}: a dark pool has no quotes to replay")
                cache[key] = b
            out.append(cache[key])
        return out

    def _px(self, inst, text) -> int:
        if text is None or text in ("0", "0.0"):
            return 0
        key = (inst.symbol, "p", text)
        if key not in self._inst_cache:
            self._inst_cache[key] = inst.price_to_ticks(text)
        return self._inst_cache[key]

    def _qty(self, inst, text) -> int:
        if text is None or Decimal(text) == 0:
            return 0
        key = (inst.symbol, "q", text)
        if key not in self._inst_cache:
            self._inst_cache[key] = inst.qty_to_lots(text)
        return self._inst_cache[key]

    # ------------------------------------------------------------ running

    @property
    def done(self) -> bool:
        return self.pos >= len(self.rows)

    def run_until(self, ts: int) -> int:
        """Apply every row up to ``ts``, with the market's own events in between."""
        loop, rows, n = self.market.loop, self.rows, 0
        while self.pos < len(rows) and rows[self.pos][0] <= ts:
            row = rows[self.pos]
            self.pos += 1
            loop.run_until(row[0])
            if row[2] == 0:
                self._quote(row[3], row[4], row[5], row[6], row[7])
            else:
                self._trade(row[3], row[4], row[5], row[6])
            n += 1
        loop.run_until(ts)
        return n

    def _new_id(self, book: int) -> int:
        self.next_id[book] += 1
        return self.next_id[book]

    def _leaves(self, book: int, order_id: int) -> int:
        o = self.market.loop.book(book).order(order_id)
        return 0 if o is None else o["leaves_qty"]

    def _quote(self, book: int, bid_px: int, bid_qty: int, ask_px: int, ask_qty: int) -> None:
        # Shrink first, grow second: a replayed bid never meets a stale ask.
        targets = ((BUY, bid_px, bid_qty), (SELL, ask_px, ask_qty))
        for side, px, qty in targets:
            cur = self.level.get((book, side))
            if cur is not None and (cur[0] != px or qty == 0):
                self._set_level(book, side, cur[0], cur[1], 0)
                del self.level[(book, side)]
            elif cur is not None:
                self._set_level(book, side, px, cur[1], min(qty, self._total(book, cur[1])))
        for side, px, qty in targets:
            if px <= 0 or qty <= 0:
                continue
            cur = self.level.setdefault((book, side), (px, []))
            self._set_level(book, side, px, cur[1], qty)

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
        if side == 0:
            bid = self.level.get((book, BUY), (0, []))[0]
            ask = self.level.get((book, SELL), (0, []))[0]
            if ask and px >= ask:
                side = BUY
            elif bid and px <= bid:
                side = SELL
            else:
                return          # inside the spread: hidden liquidity we cannot see
        self.market.loop.external(book, OP_ADD, self._new_id(book), side, px, qty,
                                  int(OrdType.LIMIT), int(TimeInForce.IOC),
                                  REPLAY_TAKER_ACCOUNT, int(StpMode.STP_NONE))


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
        t["price"].append(str(Decimal(int(trades["price_x2"][k])) * Decimal(inst.tick_size) / 2))
        t["qty"].append(inst.lots_to_qty(int(trades["qty"][k])))
        t["side"].append("B" if int(trades["aggressor_side"][k]) == BUY else "S")
    return q, t


def write_tables(quotes: dict, trades: dict, out_dir: str | Path, stem: str = "sample"
                 ) -> list[Path]:
    """Write replay tables as ``<stem>_quotes``/``<stem>_trades`` in CSV and Parquet."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in (("quotes", quotes), ("trades", trades)):
        table = pa.table({c: pa.array(v, type=pa.int64() if c == "ts" else pa.string())
                          for c, v in data.items()})
        for ext, write in ((".csv", pacsv.write_csv), (".parquet", pq.write_table)):
            path = out / f"{stem}_{name}{ext}"
            write(table, path)
            paths.append(path)
    return paths


def main(argv=None) -> int:
    """``python -m sim.replay``: regenerate the shipped sample data."""
    ap = argparse.ArgumentParser(description="Write replay sample data made by the simulator")
    ap.add_argument("--config", default=None, help="configuration (default: embedded)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--out", default=str(DATA_DIR))
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    quotes, trades = record_sample(cfg, args.seconds)
    for p in write_tables(quotes, trades, args.out):
        print(p)
    return 0


__all__ = ["load_quotes", "load_trades", "ReplayFeed", "record_sample", "write_tables",
           "REPLAY_ACCOUNT", "ConfigError"]

if __name__ == "__main__":
    raise SystemExit(main())
