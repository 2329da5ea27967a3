"""The engine's configuration: one TOML file parsed into typed structs.

The service reads this first; every other component gets its own section.
The engine's own sections (``[intake]``, ``[security]``, ``[journal]``,
``[metrics]``, ``[logging]``) are strict: an unknown key is an error that
names it, because a misspelt ``fsync`` silently falling back to a default is
how a journal stops being durable. The sections owned by other components
(``[risk]``, ``[router]``, ``[sim]``, ``[[gateways]]``) are kept as
plain tables here and converted by their owners; they are also checked
here (with their owners' own checks), and so are the key files named in
``[security]``, so that a mistake stops the engine before it opens
anything, with the file and key named like the rest.

Relative paths (journal directory, key files, ``sim.config``) are taken
relative to the directory of the configuration file.

Example
-------
.. code-block:: toml

    [intake]
    endpoints = ["tcp://0.0.0.0:7001", "ipc:///run/kronos/intake.sock"]
    max_message_bytes = 262144
    heartbeat_interval_ms = 1000
    heartbeat_timeout_ms = 3000

    [security]
    server_secret_key_file = "keys/server.key_secret"

    [[security.clients]]
    name = "algo-1"
    public_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    accounts = ["ACC1", "ACC2"]

    [journal]
    dir = "data/journal"
    fsync = "always"
"""
from __future__ import annotations

import copy
import datetime as dt
import decimal
import ipaddress
import os
import re
import socket
import tomllib
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Literal, NoReturn

import msgspec
import zmq.auth
from msgspec import Meta

from engine.tradingday import TradingDay
from gateways.config import (Z85_KEY, GatewayConfigError, _zmq_endpoint_problem,
                             parse_gateway_configs)

PositiveInt = Annotated[int, Meta(ge=1)]
#: Price levels per venue book the router keeps (``core_router``).
ROUTER_BOOK_LEVELS = 10
#: ZeroMQ takes high-water marks and heartbeat times as C ints: a larger value
#: would fail only once the socket exists (OverflowError), not here.
MAX_C_INT = 2**31 - 1
IntakeInt = Annotated[int, Meta(ge=1, le=MAX_C_INT)]
Port = Annotated[int, Meta(ge=0, le=65535)]

#: Longest group commit window: under ``group`` every acknowledgement waits
#: for it, so a larger value is a mistake (a unit slip), not a tuning.
MAX_GROUP_COMMIT_US = 1_000_000

#: The keys of ``[sim]``: the embedded simulator's venues (docs/engine.md).
SIM_KEYS = ("config", "speed", "duration", "start_at")
#: The fastest a served market may run (``[sim] speed``), simulated seconds per second.
MAX_SIM_SPEED = 1000


class ConfigError(ValueError):
    """The configuration file is unreadable or wrong; the message says where."""


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class IntakeConfig(_Section):
    """``[intake]``: the ZeroMQ ROUTER endpoints and session rules.

    Every number below is at most ``MAX_C_INT`` (2**31 - 1): ZeroMQ takes
    them as C ints.

    Attributes
    ----------
    endpoints : list of str
        CURVE-secured endpoints (``tcp://host:port``, ``ipc:///path``).
    plaintext_endpoints : list of str
        Unencrypted, unauthenticated endpoints; honoured only with
        ``allow_plaintext = true`` (a warning is logged at start-up).
    allow_plaintext : bool
        Explicit opt-in for ``plaintext_endpoints``. Default false.
    max_message_bytes : int
        Larger frames are answered with MESSAGE_TOO_LARGE, undecoded.
        Default 262144 (256 KiB): a ``BulkNewOrders`` of ``max_bulk_orders``
        orders as the client library writes them (about 240 bytes each) fits.
    hard_max_message_bytes : int
        Larger frames make ZeroMQ drop the connection (they are never read
        into memory). Default 4 x ``max_message_bytes``. With ``recv_hwm``,
        it bounds what one connection can make the engine hold:
        ``recv_hwm x hard_max_message_bytes`` (1 GiB by default; frames of a
        client's own bulks, about 240 KB at most, 240 MB).
    max_bulk_orders : int
        Largest ``BulkNewOrders``. Default 1000.
    heartbeat_interval_ms : int
        How often clients should send a ``Heartbeat`` (told in the
        ``HeartbeatAck``). Default 1000. Also the TCP keepalive interval of
        the listeners' connections, in whole seconds (at least one).
    heartbeat_timeout_ms : int
        Silence after which a session times out and the handler's
        ``on_session_timeout`` runs. Default 3000. Also how long a
        connection's sent data (or its peer's closed window) may go
        unacknowledged before the kernel drops it (``TCP_USER_TIMEOUT``).
    resend_ring_size : int
        Outbound messages kept in memory per session for ``ResendRequest``
        (older ones are read back from the journal), and the bound of a slow
        reader's backlog. Default 10000.
    session_retention_s : int
        A session silent for this long is forgotten, with the messages kept
        for its resend. Default 3600.
    max_sessions : int
        Sessions beyond this are refused (the oldest idle one is evicted first).
        Default 10000.
    max_sessions_per_key : int
        Sessions one client key may hold (all plaintext clients count as one
        key): past it, a new session of the key evicts the key's longest silent
        idle one, or is refused (``NOT_AUTHORIZED``), so that one key's leaked
        connections cannot take the whole of ``max_sessions``. Default 1000.
    drain_batch : int
        Messages handled per wake-up before their replies are flushed (one
        journal write, then the sends) and other loop callbacks get a turn
        (the rest are handled in the next turn, not waited for). A message
        that makes several replies (a bulk's orders) counts as that many. Larger
        batches cost fewer system calls; smaller ones hold the first reply
        of a burst for less time. Default 64.
    send_hwm : int
        ZeroMQ's send high-water mark: messages queued for one client before
        the engine holds the rest in its backlog. Default 100000.
    recv_hwm : int
        ZeroMQ's receive high-water mark: messages read ahead from one
        connection before libzmq stops reading it (its client is then held
        back by TCP). Default 1000: a client pipelining faster than the
        engine handles its requests waits in its own socket, not in the
        engine's memory (100,000 frames of 90 KB made the engine grow by
        840 MB). 0: no mark, libzmq reads every connection ahead without
        bound, which avoids a libzmq abort a held-back connection can cause
        (docs/engine.md, *Read-ahead and a libzmq abort*).
    request_rate : int
        Requests other than orders, per second per client key (all its
        sessions together): ``Heartbeat``, ``ResendRequest``,
        ``OrderStatusRequest``, ``TradeHistoryRequest``, and every message
        intake itself refuses (malformed, oversize, invalid, not entitled; a
        cancel or an order among them). Past it a request is not served: it
        is answered ``THROTTLED`` outside the session's numbering (``seq`` 0,
        neither journaled nor kept for resend), so a flood cannot grow the
        journal. Not charged: a session's first message when it is a
        ``Heartbeat`` or a resume; orders and replaces (risk's throttle);
        valid cancels and admin requests. 0: no limit. Default 2000 (a key's
        sessions heartbeat once a second each).
    request_burst : int
        Bucket size of ``request_rate``: requests a key may send at once.
        Default ``request_rate``.
    shutdown_grace_ms : int
        How long a stopping engine keeps serving once it refuses new orders
        (``ENGINE_SHUTTING_DOWN``): requests on their way are answered,
        cancels reach the venues, fills still come back. 0 to 60000.
        Default 100.
    """

    endpoints: list[str] = []
    plaintext_endpoints: list[str] = []
    allow_plaintext: bool = False
    max_message_bytes: IntakeInt = 262144
    # libzmq keeps the hard limit in an int64.
    hard_max_message_bytes: Annotated[int, Meta(le=2**63 - 1)] | None = None
    max_bulk_orders: IntakeInt = 1000
    heartbeat_interval_ms: IntakeInt = 1000
    heartbeat_timeout_ms: IntakeInt = 3000
    resend_ring_size: IntakeInt = 10000
    session_retention_s: IntakeInt = 3600
    max_sessions: IntakeInt = 10000
    max_sessions_per_key: IntakeInt = 1000
    drain_batch: IntakeInt = 64
    send_hwm: IntakeInt = 100000
    recv_hwm: Annotated[int, Meta(ge=0, le=MAX_C_INT)] = 1000
    shutdown_grace_ms: Annotated[int, Meta(ge=0, le=60_000)] = 100
    request_rate: Annotated[int, Meta(ge=0, le=MAX_C_INT)] = 2000
    request_burst: Annotated[int, Meta(ge=1, le=MAX_C_INT)] | None = None

    @property
    def hard_max_bytes(self) -> int:
        """``hard_max_message_bytes`` with its default applied."""
        return self.hard_max_message_bytes or 4 * self.max_message_bytes

    @property
    def request_bucket(self) -> int:
        """``request_burst`` with its default applied."""
        return self.request_burst or max(self.request_rate, 1)


class ClientKey(_Section):
    """``[[security.clients]]``: one client's CURVE public key and entitlements.

    Attributes
    ----------
    name : str
        Label for logs and metrics.
    public_key : str, optional
        The client's Z85 public key (40 characters).
    public_key_file : str, optional
        A ZeroMQ certificate file holding it (``zmq.auth`` format); exactly
        one of the two is given.
    accounts : list of str
        Accounts this key may trade and query; ``"*"`` means all.
    admin : bool
        May send ``KillSwitch`` and ``ReloadLimits``. Default false.
    """

    name: str
    accounts: list[str]
    public_key: str | None = None
    public_key_file: str | None = None
    admin: bool = False


class SecurityConfig(_Section):
    """``[security]``: CURVE keys and who may do what.

    Attributes
    ----------
    server_secret_key_file : str, optional
        The server's certificate with its secret key (``zmq.auth`` format,
        as written by ``engine.intake.generate_keypair``); required when
        ``intake.endpoints`` is not empty.
    clients : list of ClientKey
        The allow-list: a key not listed here cannot connect.
    plaintext_accounts : list of str
        Accounts a plaintext session may use (``"*"``: all). Default none.
    plaintext_admin : bool
        Whether plaintext sessions may send admin requests. Default false.
    """

    server_secret_key_file: str | None = None
    clients: list[ClientKey] = []
    plaintext_accounts: list[str] = []
    plaintext_admin: bool = False


class JournalConfig(_Section):
    """``[journal]``: where and how durably commands and events are written.

    Attributes
    ----------
    dir : str
        Directory of the journal segments (not empty). Default ``data/journal``.
    fsync : {"always", "group", "none"}
        Durability policy (see ``docs/journal.md``). Default ``always``.
    group_commit_us : int
        Group commit window for ``group``, 1 to ``MAX_GROUP_COMMIT_US``
        (1 s: acknowledgements wait for it). Default 1000. Refused with any
        other ``fsync``, where it would be ignored.
    rotate_bytes : int
        Segment size at which a new file starts. Default 64 MiB.
    checkpoint : bool
        After each trading-day roll, save the journal's replay at the roll in
        ``<dir>/checkpoints`` (a child process does it), so that a restart
        replays only the journal after the newest checkpoint
        (``engine.checkpoint``). Default true.
    checkpoints_kept : int
        Checkpoints kept, the newest ones (1 to 100). Default 2: an older one
        is there should the newest be unreadable.
    """

    dir: Annotated[str, Meta(min_length=1)] = "data/journal"
    fsync: Literal["always", "group", "none"] = "always"
    group_commit_us: Annotated[int, Meta(ge=1, le=MAX_GROUP_COMMIT_US)] = 1000
    rotate_bytes: Annotated[int, Meta(ge=4096)] = 64 << 20
    checkpoint: bool = True
    checkpoints_kept: Annotated[int, Meta(ge=1, le=100)] = 2


class HistoryConfig(_Section):
    """``[history]``: the fills the engine keeps in memory for ``TradeHistoryRequest``.

    Attributes
    ----------
    max_fills_per_account : int
        Fills kept per account, the oldest dropped first (the journal and
        the postgres trade store keep them all). A query reaching further
        back is answered with ``complete = false``. Default 1,000,000.
    max_fills_per_request : int
        Fills one ``TradeHistoryRequest`` is answered with, at most (the
        oldest of its range, cut between two fill times); the answer's
        ``next_start_time`` says where the rest begins. Bounds what one
        query costs the engine's loop, the session's resend ring and the
        journal (which keeps every answer sent). Default 10,000.
    store : str, optional
        Name of a ``postgres`` gateway whose trade store answers for the
        fills memory dropped (then such an answer is complete, once the
        gateway has delivered them). Default: none.
    """

    max_fills_per_account: PositiveInt = 1_000_000
    max_fills_per_request: PositiveInt = 10_000
    store: str | None = None


class OrdersConfig(_Section):
    """``[orders]``: how many orders the engine holds in memory, and replaces per order.

    Attributes
    ----------
    max_orders : int
        Orders in the engine's order table, at most: the working ones and
        those done in the last ``keep_done_days`` trading days and the
        current one (rejected ones included: they answer status requests and
        keep their ``cl_ord_id`` spent). Once it is
        reached, new orders are refused ``ORDER_CAPACITY`` (76) and nothing
        else changes: working orders keep trading, cancels, replaces and
        queries work (a ``BulkNewOrders`` that arrives before the table is
        full is taken whole, so the table can pass the bound by less than
        one bulk). An order costs about 2.2 KB of memory (measured, see
        docs/engine.md), so the default, 4,000,000, is about 9 GB. The bound
        exists so that the engine refuses orders instead of running out of
        memory: a journal holding more orders than memory could not be
        recovered either.
    max_replaces_per_order : int
        Replaces one order takes, at most. Each accepted replace keeps its
        ``cl_ord_id`` spent (it still finds the order) and, when the order is
        routed again, the done child it replaced (status requests list every
        child): about 270 bytes (measured, see docs/engine.md), which
        ``max_orders`` does not count. A Replace beyond it is refused
        ``ORDER_NOT_REPLACEABLE`` (16) before it is journaled, its
        ``cl_ord_id`` left free; the order keeps working and can be
        canceled. Default 10,000: a replace every 2.3 s of a 6.5-hour day,
        about 2.7 MB for such an order (the router's own repricing of a
        ``passive`` order replaces its child at the venue and counts nothing).
    keep_done_days : int
        Trading days a done order stays in the table after the day it was
        done in: at that many day rolls after its day ended, it is forgotten
        (status requests, cancels and replaces no longer know it, its
        ``cl_ord_id`` can be used again; its fills stay in the trade history
        and the journal). So are the ``cl_ord_id`` s cancels and replaces
        spent. Default 1: an order done at any time of a day is still known
        all the next day. At least 1, so that a roll never forgets an order
        the day that ends was still working on.
    """

    max_orders: PositiveInt = 4_000_000
    max_replaces_per_order: PositiveInt = 10_000
    keep_done_days: Annotated[int, Meta(ge=1, le=3660)] = 1


class MetricsConfig(_Section):
    """``[metrics]``: the Prometheus ``/metrics`` and ``/healthz`` HTTP endpoint.

    Attributes
    ----------
    host : str
        Address to bind: an IP address or a host name (``0.0.0.0`` for
        every interface). Default ``127.0.0.1``.
    port : int
        Port; 0 turns the endpoint off. Default 9464.
    """

    host: str = "127.0.0.1"
    port: Port = 9464


class LoggingConfig(_Section):
    """``[logging]``.

    Attributes
    ----------
    level : str
        ``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR``. Default ``INFO``.
    json : bool
        One JSON object per line (default) or plain text.
    """

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json: bool = True


class TradingDayConfig(_Section):
    """``[trading_day]``: when the daily risk counters start afresh.

    Attributes
    ----------
    roll_time : str
        Local time of day at which a trading day ends, ``HH:MM`` or
        ``HH:MM:SS``: traded notional and realized P&L (``max_daily_notional``,
        ``max_daily_loss``) count from zero after it. Default ``00:00``.
    timezone : str
        IANA time zone of ``roll_time`` (daylight saving followed).
        Default ``UTC``.
    """

    roll_time: str = "00:00"
    timezone: str = "UTC"


class Config(_Section):
    """The whole file. Every section is optional.

    ``risk``, ``router``, ``sim`` and ``gateways`` belong to other
    components and are passed through as parsed TOML tables (all four
    checked by their owners' checks, ``sim.config`` made absolute). Instruments are
    defined once, by the venues (``[sim]``); risk adds limits to them.
    """

    intake: IntakeConfig = IntakeConfig()
    security: SecurityConfig = SecurityConfig()
    journal: JournalConfig = JournalConfig()
    history: HistoryConfig = HistoryConfig()
    orders: OrdersConfig = OrdersConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    trading_day: TradingDayConfig = TradingDayConfig()
    risk: dict[str, Any] = {}
    router: dict[str, Any] = {}
    sim: dict[str, Any] = {}
    gateways: list[dict[str, Any]] = []


# ---------------------------------------------------------------- loading
# (inproc:// is refused: only the engine's own process could reach it, never a client)
_ENDPOINT = re.compile(r"^(tcp://[^\s]+:(\d+|\*)|ipc://[^\s]+)$")
_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def _is_host(text: str) -> bool:
    """An IP address literal or an RFC 1123 host name (not resolved here)."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    labels = text.removesuffix(".").split(".")
    # An all-digit last label is a mistyped address ("10.0.0.256"), not a name.
    return 0 < len(text) <= 253 and all(_HOST_LABEL.match(label) for label in labels) \
        and not labels[-1].isdigit()


def load_config(path: str | os.PathLike, *, resolve: bool = True) -> Config:
    """Read and check a configuration file.

    Parameters
    ----------
    path : str or PathLike
        The TOML file.
    resolve : bool, optional
        Resolve host names in the endpoints to compare the addresses they bind
        (``getaddrinfo``, which may wait on DNS). A running engine re-reads the
        file with False (a key reload, ReloadLimits, the checkpoint writer's
        configuration): it binds nothing again, and its event loop must not
        wait; names are then compared as written.

    Returns
    -------
    Config
        With relative paths made absolute against the file's directory.

    Raises
    ------
    ConfigError
        Naming the file and the offending key.
    """
    path = Path(path)
    try:
        # utf-8-sig, as the simulator's files: a byte-order mark (some Windows
        # editors write one) is not TOML, and tomllib's error would not say so.
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    return parse_config(text, base_dir=path.parent, source=str(path), resolve=resolve)


def parse_config(text: str, *, base_dir: str | os.PathLike = ".", source: str = "<config>",
                 resolve: bool = True) -> Config:
    """Parse configuration text (see :func:`load_config`)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_explain(str(exc))}") from None
    config = _resolve_paths(config, Path(base_dir))
    if "group_commit_us" in raw.get("journal", {}) and config.journal.fsync != "group":
        # A window set for another policy would be ignored: a file meant for
        # "group" that says "none" (or leaves the default, "always") must not
        # pass for one that commits in groups.
        raise ConfigError(f"{source}: 'journal.group_commit_us' is set, but it only applies to "
                          f"fsync = \"group\" and fsync is {config.journal.fsync!r}")
    _check(config, source, resolve)
    return config


def _dotted(path: str) -> str:
    """``$.security.clients[0]`` -> ``security.clients[0]``."""
    return path.removeprefix("$").removeprefix(".")


def _explain(message: str) -> str:
    match = re.fullmatch(r"(.*?)(?: - at `(\$[^`]*)`)?", message, flags=re.S)
    detail, where = match.group(1), match.group(2) or "$"
    section = _dotted(where)
    unknown = re.fullmatch(r"Object contains unknown field `([^`]*)`", detail)
    if unknown:
        key = f"{section}.{unknown.group(1)}" if section else unknown.group(1)
        return f"unknown key '{key}'"
    missing = re.fullmatch(r"Object missing required field `([^`]*)`", detail)
    if missing:
        key = f"{section}.{missing.group(1)}" if section else missing.group(1)
        return f"missing required key '{key}'"
    return f"'{section}': {detail}" if section else detail


def _resolve_paths(config: Config, base: Path) -> Config:
    def resolve(value: str | None) -> str | None:
        if value is None or os.path.isabs(value):
            return value
        return str((base / value).resolve())

    security = msgspec.structs.replace(
        config.security,
        server_secret_key_file=resolve(config.security.server_secret_key_file),
        clients=[msgspec.structs.replace(c, public_key_file=resolve(c.public_key_file))
                 for c in config.security.clients],
    )
    journal = msgspec.structs.replace(config.journal, dir=resolve(config.journal.dir))
    sim = config.sim
    if isinstance(sim.get("config"), str) and sim["config"]:
        sim = {**sim, "config": resolve(sim["config"])}
    gateways = [_resolve_gateway_paths(table, resolve) for table in config.gateways]
    return msgspec.structs.replace(config, security=security, journal=journal, sim=sim,
                                   gateways=gateways)


def _resolve_gateway_paths(table, resolve: Callable[[str], str]):
    """A ``[[gateways]]`` table with its key files' paths taken from the file's directory
    (a table that is not one is left for the gateway's own check to name)."""
    if not isinstance(table, dict):
        return table
    table = dict(table)
    if isinstance(table.get("curve_secret_key_file"), str):
        table["curve_secret_key_file"] = resolve(table["curve_secret_key_file"])
    files = table.get("subscriber_key_files")
    if isinstance(files, list):
        table["subscriber_key_files"] = [resolve(f) if isinstance(f, str) else f for f in files]
    return table


def trading_day(config: Config) -> TradingDay:
    """The configuration's ``[trading_day]`` as a :class:`~engine.tradingday.TradingDay`.

    Raises ValueError naming the key when the time or the zone is not one.
    """
    section = config.trading_day
    try:
        roll = dt.time.fromisoformat(section.roll_time)
    except ValueError:
        roll = None
    if roll is None or not re.fullmatch(r"\d\d:\d\d(:\d\d)?", section.roll_time):
        raise ValueError(f"'trading_day.roll_time': {section.roll_time!r} is not a time of day "
                         f"HH:MM or HH:MM:SS")
    try:
        return TradingDay(roll, section.timezone)
    except (ValueError, KeyError, zoneinfo.ZoneInfoNotFoundError):
        raise ValueError(f"'trading_day.timezone': {section.timezone!r} is not an IANA time zone "
                         f"such as \"UTC\" or \"America/New_York\"") from None


def _check(config: Config, source: str, resolve: bool = True) -> None:
    intake, security = config.intake, config.security

    def fail(message: str) -> NoReturn:
        raise ConfigError(f"{source}: {message}")

    for key in ("endpoints", "plaintext_endpoints"):
        for endpoint in getattr(intake, key):
            if not _ENDPOINT.match(endpoint):
                fail(f"'intake.{key}': {endpoint!r} is not a tcp://host:port or ipc:// endpoint")
            problem = _zmq_endpoint_problem(endpoint)
            if problem:
                fail(f"'intake.{key}': {endpoint!r}: {problem}")
    if intake.plaintext_endpoints and not intake.allow_plaintext:
        fail("'intake.plaintext_endpoints' is set but 'intake.allow_plaintext' is not true; "
             "plaintext must be asked for explicitly")
    if not intake.endpoints and not intake.plaintext_endpoints:
        fail("'intake.endpoints' is empty: the engine would accept no connections")
    if intake.hard_max_message_bytes is not None and intake.hard_max_message_bytes < intake.max_message_bytes:
        fail("'intake.hard_max_message_bytes' is below 'intake.max_message_bytes'")
    if intake.heartbeat_timeout_ms <= intake.heartbeat_interval_ms:
        fail("'intake.heartbeat_timeout_ms' must be longer than 'intake.heartbeat_interval_ms'")
    if intake.session_retention_s * 1000 <= intake.heartbeat_timeout_ms:
        # A session forgotten before it times out would never have its
        # cancel-on-disconnect done, and one heartbeating on time would be
        # forgotten all the same (the two keys are in different units).
        fail(f"'intake.session_retention_s' ({intake.session_retention_s} s) must be longer "
             f"than 'intake.heartbeat_timeout_ms' ({intake.heartbeat_timeout_ms} ms): a session "
             f"is forgotten only after it has timed out")
    if intake.endpoints and not security.server_secret_key_file:
        fail("'security.server_secret_key_file' is required for CURVE 'intake.endpoints'")
    if security.server_secret_key_file:
        # Read even with plaintext endpoints only: a wrong path would otherwise
        # show only on the day CURVE is turned on.
        _, secret = _certificate(security.server_secret_key_file,
                                 "security.server_secret_key_file", fail, secret=True)
        if secret is None:
            fail(f"'security.server_secret_key_file': {security.server_secret_key_file} holds no "
                 f"secret key (a public certificate: give the .key_secret file)")
    seen: dict[str, str] = {}
    names: dict[str, int] = {}
    for index, client in enumerate(security.clients):
        where = f"security.clients[{index}]"
        # The name is the key's throttle bucket, its [risk.sessions.<name>] limits,
        # the kill switch's audit name and the reload log's: two keys must not share it.
        if not client.name.strip() or client.name != client.name.strip():
            fail(f"'{where}.name': {client.name!r}: a name is the key's throttle bucket, "
                 f"limits and audit name; give one without leading or trailing spaces")
        if client.name == "plaintext":
            fail(f"'{where}.name': 'plaintext' names the plaintext endpoints' clients; "
                 f"give this key another name")
        if names.setdefault(client.name, index) != index:
            fail(f"'{where}.name': {client.name!r} is also security.clients[{names[client.name]}]'s; "
                 f"each client needs a name of its own")
        if (client.public_key is None) == (client.public_key_file is None):
            fail(f"'{where}': give exactly one of 'public_key' and 'public_key_file'")
        if client.public_key is not None:
            key, field = client.public_key, f"{where}.public_key"
            if not Z85_KEY.fullmatch(key):
                fail(f"'{field}': not a 40-character Z85 CURVE key")
        else:
            field = f"{where}.public_key_file"
            key = _certificate(client.public_key_file, field, fail)[0].decode("ascii")
        if not client.accounts:
            fail(f"'{where}.accounts': empty; list the accounts or \"*\"")
        # Keys read from files count too: the last entry of a key listed
        # twice would silently decide its rights (admin, "*").
        if key in seen:
            fail(f"'{field}': same key as client {seen[key]!r}")
        seen[key] = client.name
    if not _is_host(config.metrics.host):
        fail(f"'metrics.host': {config.metrics.host!r} is not an IP address or a host name "
             f"(\"0.0.0.0\" binds every interface)")
    try:
        trading_day(config)
    except ValueError as exc:
        fail(str(exc))
    try:
        gateway_configs = parse_gateway_configs(config.gateways)
    except GatewayConfigError as exc:
        fail(str(exc))
    for i, gateway in enumerate(gateway_configs):
        if not gateway.enabled:
            continue
        if getattr(gateway, "curve_secret_key_file", None) is not None:
            where = f"gateways[{i}].curve_secret_key_file"
            if _certificate(gateway.curve_secret_key_file, where, fail, secret=True)[1] is None:
                fail(f"'{where}': {gateway.curve_secret_key_file} holds no secret key (a public "
                     f"certificate: give the .key_secret file)")
            for k, path in enumerate(gateway.subscriber_key_files):
                _certificate(path, f"gateways[{i}].subscriber_key_files[{k}]", fail)
        if not _is_host(gateway.metrics_host):
            fail(f"'gateways[{i}].metrics_host': {gateway.metrics_host!r} is not an IP address "
                 f"or a host name (\"0.0.0.0\" binds every interface)")
    _check_history_store(config.history, gateway_configs, fail)
    _check_binds(config, gateway_configs, fail, resolve)
    venues = _check_sim(config.sim, fail)
    _check_risk_and_router(config, venues, fail)


def _binds(config: Config, gateway_configs: list) -> Iterator[tuple[str, str, str]]:
    """Every address the configuration binds: ``(key, host or "ipc", port or path)``.

    Ports left to the system (0, ``*``) and endpoints turned off are left out.
    """
    def endpoint(key: str, value: str) -> Iterator[tuple[str, str, str]]:
        if value.startswith("ipc://"):
            yield key, "ipc", value[len("ipc://"):]
        elif value.startswith("tcp://"):
            host, _, port = value[len("tcp://"):].rpartition(":")
            if port not in ("0", "*"):
                yield key, host, str(int(port))

    for key in ("endpoints", "plaintext_endpoints"):
        for i, value in enumerate(getattr(config.intake, key)):
            yield from endpoint(f"intake.{key}[{i}]", value)
    if config.metrics.port:
        yield "metrics.port", config.metrics.host, str(config.metrics.port)
    for i, gateway in enumerate(gateway_configs):
        if not gateway.enabled:
            continue
        for key in ("endpoint", "replay_endpoint"):
            if hasattr(gateway, key):
                yield from endpoint(f"gateways[{i}].{key}", getattr(gateway, key))
        if gateway.metrics_port:
            yield f"gateways[{i}].metrics_port", gateway.metrics_host, str(gateway.metrics_port)


def _check_binds(config: Config, gateway_configs: list, fail: Callable[[str], NoReturn],
                 resolve: bool = True) -> None:
    """Refuse two endpoints of the file that would bind one address.

    Found here, the clash is named by its two keys (exit 2) instead of
    failing at bind time, half started, with "Address already in use".
    """
    seen: list[tuple[str, str, str]] = []
    for key, host, port in _binds(config, gateway_configs):
        for other, other_host, other_port in seen:
            if port == other_port and _same_address(host, other_host, resolve):
                where = f"the path {port}" if host == "ipc" else f"port {port}"
                fail(f"'{key}': binds {where}, as '{other}' does; give each its own")
        seen.append((key, host, port))


def _same_address(a: str, b: str, resolve: bool = True) -> bool:
    """Whether two binds' hosts (``"ipc"`` for paths) take one address on a shared port.

    ``0.0.0.0`` and ``*`` take every IPv4 address; ``::`` every address,
    IPv4 included (dual stack). A host name counts as the IPv4 addresses it
    resolves to (``localhost`` is ``127.0.0.1``), as ZeroMQ and the HTTP
    server bind it; one that does not resolve is compared as written.
    """
    if "ipc" in (a, b):
        return a == b
    a, b = a.strip("[]"), b.strip("[]")
    if a == b or "::" in (a, b):
        return True
    if {a, b} & {"*", "0.0.0.0"}:
        return ":" not in a + b
    return bool(_ipv4_of(a, resolve) & _ipv4_of(b, resolve))


def _ipv4_of(host: str, resolve: bool = True) -> frozenset[str]:
    """The IPv4 addresses ``host`` binds (itself when it is an address, does not resolve, or
    is not to be resolved)."""
    try:
        ipaddress.ip_address(host)
        return frozenset({host})
    except ValueError:
        if not resolve:
            return frozenset({host})
    try:
        return frozenset(info[4][0] for info in socket.getaddrinfo(
            host, None, socket.AF_INET, socket.SOCK_STREAM)) or frozenset({host})
    except (OSError, UnicodeError):
        return frozenset({host})


def _certificate(path: str, key: str, fail: Callable[[str], NoReturn], *,
                 secret: bool = False) -> tuple[bytes, bytes | None]:
    """``(public, secret)`` of the ZeroMQ certificate file ``path`` named by config key ``key``.

    Read now, so that a missing or wrong file is one line naming the key,
    not a traceback once the sockets are being opened. A file that users
    other than its owner may write is refused, and with ``secret`` (the key
    names a secret key file) one that every user may read, once it is seen
    to hold a secret key (a public certificate given instead is named as
    that by the caller): :func:`key_file_problem`.
    """
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except OSError as exc:
        fail(f"'{key}': cannot read {path}: {exc.strerror or 'no such file'}")
    except ValueError:
        fail(f"'{key}': {path} is not a ZeroMQ certificate file (no public-key line; "
             f"see `kronos-exec keys generate`)")
    if not Z85_KEY.fullmatch(public.decode("latin-1")):
        fail(f"'{key}': {path}: its public-key is not a 40-character Z85 CURVE key")
    if not secret or secret_key is not None:
        try:
            problem = key_file_problem(path, secret=secret)
        except OSError as exc:
            problem = f"cannot read {path}: {exc.strerror}"
        if problem is not None:
            fail(f"'{key}': {problem}")
    return public, secret_key


def key_file_problem(path: str | os.PathLike, *, secret: bool) -> str | None:
    """Why the key file ``path`` is not private enough, or None.

    Refused, any key file: writable by its group or by every user (``g+w``,
    ``o+w``): whoever can write a file of the allow-list can put their own key
    in it, and one of the server's can swap the server's key (OpenSSH's
    ``StrictModes`` refuses such an ``authorized_keys``). A secret key file
    also when every user may read it (``o+r``). A group may read a secret key
    (0640, 0440): a service whose key is mounted for a group (a Kubernetes
    secret with ``fsGroup``) has no other way. ``kronos-exec keys generate``
    writes 0600 and 0644. The mode of the file a symlink leads to is checked.

    Raises
    ------
    OSError
        When the file cannot be looked at.
    """
    mode = os.stat(path).st_mode & 0o777
    fix = (f"chmod 600 {path} (640 for a group that runs the engine)" if secret else
           f"chmod 644 {path}")
    if secret and mode & 0o004:
        return (f"{path} may be read by users other than its owner (mode {mode:o}): a secret "
                f"key must be private; {fix}")
    if mode & 0o022:
        return (f"{path} may be written by users other than its owner (mode {mode:o}): they "
                f"could put a key of their own in its place; {fix}")
    return None


def _check_history_store(history: HistoryConfig, gateways: list, fail: Callable[[str], NoReturn]) -> None:
    """``[history] store`` names an enabled ``postgres`` gateway that stores fills.

    Answers count the store's fills as complete once it has delivered past
    a position: a store left without fills would make them complete and empty.
    """
    if history.store is None:
        return
    store = next((g for g in gateways if g.enabled and g.type == "postgres"
                  and g.gateway_name == history.store), None)
    if store is None:
        fail(f"'history.store': no postgres gateway named {history.store!r} (an enabled "
             f"[[gateways]] table with type = \"postgres\" and that name)")
    if "*" not in store.events and "fill" not in store.events:
        fail(f"'history.store': gateway {history.store!r} does not store fills (its 'events' "
             f"leave out \"fill\"), so it cannot answer for the fills memory dropped")


def risk_config(config: Config, instruments) -> dict[str, Any]:
    """The ``[risk]`` table completed with every tradable instrument's grid.

    Instruments are defined once, by the venues; ``[risk.instruments.X]``
    only adds limits, and a grid written there must agree with the venue's.
    """
    table = copy.deepcopy(config.risk)
    given = table.get("instruments", {})
    unknown = set(given) - {i.symbol for i in instruments}
    if unknown:
        raise ConfigError(f"risk.instruments names symbols no venue trades: {sorted(unknown)}")
    # In the venues' order, whatever the file's: the risk engine numbers
    # instruments as they come here, and the pipeline and the router number
    # them in the venues' order; an instrument has one number in all three.
    per_inst = table["instruments"] = {}
    for inst in instruments:
        entry = per_inst[inst.symbol] = given.get(inst.symbol, {})
        if not isinstance(entry, dict):
            raise ConfigError(f"'risk.instruments.{inst.symbol}': expected a table of limits "
                              f"([risk.instruments.{inst.symbol}]), not {entry!r}")
        for key in ("tick_size", "lot_size", "min_qty"):
            value = getattr(inst, key)
            if key in entry and not _same_size(entry[key], value):
                raise ConfigError(f"risk.instruments.{inst.symbol}.{key} = {entry[key]!r} "
                                  f"disagrees with the venue definition {value!r}")
            entry[key] = value
    return table


def _same_size(given: Any, venue: str) -> bool:
    """Whether a grid value written in ``[risk.instruments.X]`` is the venue's ``venue``:
    the same number, however written (``100`` or ``"100.0"`` for ``"100"``, ``"0.010"``
    for ``"0.01"``), as risk itself compares grids. A float is no such number (the risk
    configuration refuses floats)."""
    if isinstance(given, bool) or not isinstance(given, (int, str)):
        return False
    try:
        return decimal.Decimal(given) == decimal.Decimal(venue)
    except decimal.InvalidOperation:
        return False


def core_risk(config: Config, instruments, *, log_events: bool = True):
    """The risk engine of ``config``'s ``[risk]`` over the venues' ``instruments``
    (``ext.risk.RiskEngine``; raises ``ConfigError`` or risk's own ``ValueError``).
    ``log_events``: false for one built only to check the file (its ``init`` would
    be logged as an audit event of the running engine at every reload)."""
    from ext.risk import RiskEngine

    return RiskEngine(risk_config(config, instruments), log_events=log_events)


def core_router(config: Config, n_venues: int, n_instruments: int):
    """The smart order router of ``config``'s ``[router]`` (``ext.router.Router``, books
    ``ROUTER_BOOK_LEVELS`` deep; raises ``ValueError`` for a bad table)."""
    from ext.router import Router

    return Router(n_venues, n_instruments, ROUTER_BOOK_LEVELS, dict(config.router))


def _check_risk_and_router(config: Config, venues, fail: Callable[[str], NoReturn]) -> None:
    """Build ``[risk]`` and ``[router]`` as ``EngineService`` does, so their owners check them.

    ``venues`` is the simulator configuration: it defines the instruments
    that risk's limits apply to.
    """
    if not isinstance(config.risk.get("instruments", {}), dict):
        fail("'risk.instruments': expected a table of per-symbol tables")
    instruments = [ic.instrument() for ic in venues.instruments]
    try:
        core_risk(config, instruments, log_events=False)
    except ConfigError as exc:  # risk_config's own, already naming the key
        fail(str(exc))
    except (ValueError, TypeError) as exc:  # ext.risk.ConfigError is a ValueError
        fail(f"'risk': {exc}")
    if "strategy" in config.router:
        # Before the router sees it: its own refusal names no key ("unknown strategy").
        _check_default_strategy(config.router["strategy"], fail)
    try:
        core_router(config, len(venues.venues), len(instruments))
    except (ValueError, TypeError) as exc:
        fail(f"'router': {exc}")
    _check_router_fees(venues, instruments, fail)


def _check_router_fees(venues, instruments, fail: Callable[[str], NoReturn]) -> None:
    """Each venue's fees, in fee units per lot of each instrument, within the router's bound.

    A fee unit is 1e-4 of a tick x lot, so a per-share fee on a fine tick is
    a large number of units: past the router's bound the engine failed at
    start with a traceback naming neither the venue nor the instrument.
    """
    from ext.router import MAX_FEE_PER_LOT

    for v, venue in enumerate(venues.venues):
        for inst in instruments:
            for field, units in zip(("maker_per_share", "taker_per_share"),
                                    venue.fees.per_lot_units(inst)):
                if abs(units) > MAX_FEE_PER_LOT:
                    fail(f"'sim.config': venues[{v}] ({venue.name}) fees.{field} "
                         f"{getattr(venue.fees, field)} is {units:,} fee units (1e-4 tick x lot) "
                         f"per lot of {inst.symbol} (tick {inst.tick_size}), beyond the router's +-"
                         f"{MAX_FEE_PER_LOT:,} (2^40): a coarser tick_size, or a smaller fee")


#: The strategies ``[router] strategy`` may name (the scheduled ones need an order's schedule).
DEFAULT_STRATEGY_NAMES = ("auto", "sweep", "dark_first", "passive")


def _check_default_strategy(strategy: Any, fail: Callable[[str], NoReturn]) -> None:
    """``[router] strategy`` is a strategy (a name or a ``Strategy`` code), and no scheduled one.

    It is the strategy of an order naming none, and such an order carries no
    schedule (``end_time``, ``profile``, ``participation``): under twap, vwap
    or pov every one of them would be refused ``INVALID_SCHEDULE``.
    """
    from ext.router import STRAT_POV, STRAT_TWAP, STRAT_VWAP, STRATEGY_NAMES

    allowed = ", ".join(repr(n) for n in DEFAULT_STRATEGY_NAMES[:-1])
    allowed = f"{allowed} or {DEFAULT_STRATEGY_NAMES[-1]!r}"
    if isinstance(strategy, str) and strategy in STRATEGY_NAMES:
        code = STRATEGY_NAMES[strategy]
    elif not isinstance(strategy, bool) and isinstance(strategy, int) \
            and strategy in STRATEGY_NAMES.values():
        code = strategy
    else:
        fail(f"'router.strategy': unknown strategy {strategy!r}; expected {allowed}")
    if code in (STRAT_TWAP, STRAT_VWAP, STRAT_POV):
        name = next(n for n, c in STRATEGY_NAMES.items() if c == code)
        fail(f"'router.strategy': {name!r} cannot be the default: an order naming no strategy "
             f"has no schedule to follow; use {allowed}")


def _check_sim(sim: dict[str, Any], fail: Callable[[str], NoReturn]):
    """Check ``[sim]`` as ``EngineService`` will use it (``RealtimeVenues``'s arguments).

    A duration needs its unit: a bare TOML integer would be read as
    nanoseconds. ``sim.config`` (or the simulator's embedded default) is
    loaded, so that a missing or bad simulator file is reported now and not
    once intake is open; it is returned (``sim.config.SimConfig``). A
    ``start_at`` is checked against its session (``sim.realtime.start_at_problem``).
    """
    from sim.clock import parse_duration, parse_time_of_day
    from sim.config import ConfigError as SimConfigError, load_config as load_sim_config
    from sim.realtime import start_at_problem

    for key in sorted(set(sim) - set(SIM_KEYS)):
        fail(f"unknown key 'sim.{key}' (keys: {', '.join(SIM_KEYS)})")
    path = sim.get("config")
    if "config" in sim and (not isinstance(path, str) or not path):
        fail(f"'sim.config': expected the path of a simulator TOML file, got {path!r}")
    try:
        venues = load_sim_config(path)
    except OSError as exc:
        fail(f"'sim.config': cannot read {path}: {exc.strerror}")
    except SimConfigError as exc:
        fail(f"'sim.config': {path}: {exc}")
    if venues.replay is not None:
        # The engine's venues run on the wall clock and replay nothing: the
        # [replay] table would only turn the background flow off, leaving
        # empty books behind a /healthz that says open.
        fail(f"'sim.config': {path} has a [replay] table: recorded market data is replayed by "
             f"the backtester (kronos-exec sim), not by the engine's venues; serve with a "
             f"simulator file without it")
    late = [k for k, venue in enumerate(venues.venues) if not venue.market_data_latency.is_zero]
    if late:
        # The router copies the served venues' whole books, as they are; the
        # simulator delays only what backtest strategies read (tops of book),
        # so the setting would be ignored in silence.
        fail(f"'sim.config': {path}: venues[{late[0]}].market_data_latency: the engine reads "
             f"its simulated venues as they are, market-data latency applies to backtests "
             f"(kronos-exec sim); serve with a simulator file without it")
    if "speed" in sim:
        speed = sim["speed"]
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or \
                not 0 < speed < float("inf"):
            fail(f"'sim.speed': expected a positive number of simulated seconds per second, "
                 f"got {speed!r}")
        if speed > MAX_SIM_SPEED:
            # Faster, the venues' background flow outgrows what one core generates:
            # memory grew by ~87 MB a second at 1e6, and past ~1e10 the clock's
            # nanoseconds overflowed and stopped it (a backtest runs untimed: `sim`).
            fail(f"'sim.speed': at most {MAX_SIM_SPEED:,} simulated seconds per second, got "
                 f"{speed!r}; for a faster run, backtest with kronos-exec sim")
    if "duration" in sim:
        duration = sim["duration"]
        if not isinstance(duration, str):
            fail(f"'sim.duration': expected a duration with its unit, e.g. \"6h\" or \"90s\", "
                 f"got {duration!r}")
        try:
            positive = parse_duration(duration) > 0
        except ValueError as exc:
            fail(f"'sim.duration': {exc}")
        if not positive:
            fail(f"'sim.duration': {duration!r} is not a positive duration")
    if "start_at" in sim:
        start_at = sim["start_at"]
        if not isinstance(start_at, str):
            fail(f"'sim.start_at': expected a time of day \"HH:MM:SS\", got {start_at!r}")
        try:
            parse_time_of_day(start_at)
        except ValueError as exc:
            fail(f"'sim.start_at': {exc}")
        # Against the simulator's session, now: too early a start would
        # serve a frozen market with empty books while /healthz says open.
        problem = start_at_problem(venues, start_at, sim.get("duration"))
        if problem is not None:
            fail(f"'sim.start_at': {problem}")
    return venues
