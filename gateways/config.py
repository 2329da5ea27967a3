"""The ``[[gateways]]`` tables of the engine's TOML file, checked.

``engine.config`` keeps the gateway tables as plain tables; this module
converts each into the struct of its ``type`` and refuses what it does not
know, naming the key (``gateways[1]: unknown key 'endpont' ...``), because a
misspelt key silently falling back to its default is how events end up
somewhere nobody reads. ``docs/gateways.md`` lists every key with its default.
"""
from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from gateways.events import DEFAULT_EVENT_TYPES, KNOWN_EVENT_TYPES

PositiveInt = Annotated[int, Meta(ge=1)]
# Durations have upper bounds: an infinite (TOML ``inf``) or absurd one is a
# mistake that would only show at run time (a timer that cannot be set, a
# gateway that fails for ever), so it is refused here, naming the key.
#: ``poll_interval_ms``: at most a minute (it is the delivery delay added).
PollMs = Annotated[float, Meta(gt=0, le=60_000)]
#: Reconnect delays, heartbeats and cursor writes: at most an hour.
HourMs = Annotated[int, Meta(ge=1, le=3_600_000)]
#: Timeouts of one connection attempt or of one batch's acknowledgements.
TimeoutS = Annotated[float, Meta(gt=0, le=3600)]
#: NATS keeps stream ages in int64 nanoseconds: a century fits, ``inf`` does not.
MAX_AGE_S = 100 * 365 * 86_400
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


#: A CURVE key in Z85 (``fullmatch``): 40 characters of its alphabet.
Z85_KEY = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")


class GatewayConfigError(ValueError):
    """A ``[[gateways]]`` table is wrong; the message names the table and key."""


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                    tag_field="type"):
    """Keys every gateway has.

    Attributes
    ----------
    name : str, optional
        Names the gateway in logs, metrics and its data directory; defaults
        to the type. Two gateways of one type need distinct names.
    enabled : bool
        A disabled gateway is checked but not built. Default true.
    events : list of str
        Event types to publish (``"*"``: all, also types unknown to this
        version). Default ``["fill", "execution_report", "admin"]``.
    batch_size : int
        Journal records read and delivered per batch. Default 1000.
    poll_interval_ms : float
        How long to wait before reading the journal again once it has been
        read to its end (nothing new, or less than a batch): events arriving
        meanwhile go out together in the next batch, so a steady trickle
        costs the destination one round trip (one transaction, one round of
        acknowledgements) per interval, not one per event. The delivery
        delay it adds is at most this. Default by type: ``zmq`` 10, ``nats``
        20, ``postgres`` 100 (each wake-up costs CPU whatever it finds, and
        a batch costs the destination a round trip: ``docs/gateways.md``).
    cursor_interval_ms : int
        How often a local cursor file is rewritten (also at stop). A crash
        re-delivers at most this much, which consumers drop by ``seq``.
        Default 100.
    backoff_initial_ms, backoff_max_ms : int
        Reconnect delay after a failure, doubling up to the maximum.
        Defaults 100 and 5000.
    isolation : {"process", "thread"}
        Where the gateway runs. ``process`` (default): a child process of
        its own, so its Python work never competes with the engine's loop
        for the GIL (``benchmarks/bench_gateways.py`` measures the
        difference). ``thread``: a thread in the engine's process (tests,
        tools, or a machine short of cores).
    nice : int
        Under process isolation, how much the child lowers its CPU priority
        (``os.nice``, 0 to 19). The engine's loop then wins the CPU whenever
        both want it, and the gateway takes what is left: it falls behind
        (the journal holds the difference) instead of the engine. Default 10.
    metrics_port : int, optional
        Serve this gateway's Prometheus ``/metrics`` (and ``/healthz``) on
        this port, from the gateway's own process; 0 picks a free port
        (``gateway.metrics_port`` tells which). Left out: no endpoint.
    metrics_host : str
        Address the metrics endpoint binds. Default ``127.0.0.1``.
    yield_to_engine_ms : float
        How long, at most, the gateway waits at each step of its work while
        the engine is handling client messages (``engine.busy``: the flag
        intake raises beside the journal), so that its work does not land on
        an order in flight; 0: never wait. The bound keeps a gateway moving
        behind an engine that is always busy. Default 5.
    sched_policy : {"normal", "idle"}
        Under process isolation, the child's Linux scheduling policy.
        ``normal`` (default): ``SCHED_OTHER`` at ``nice``. ``idle``:
        ``SCHED_IDLE``, run only on CPU time no other task wants (a task of
        the engine's that wakes takes the core from it at once); the gateway
        falls further behind while the machine is busy.
    cpu_slice_us : float
        Longest stretch of work, in µs, after which the gateway offers its
        CPU to any other task that waits for one (``sched_yield``, at its
        next step, including every few events inside a delivery), so that
        an engine thread that woke meanwhile runs at once instead of after
        the gateway's kernel time slice. 0: never. Default 100
        (docs/gateways.md: with it the ZeroMQ gateway's effect on the
        engine's p99 went from 1.73x to 1.00x in the same run, NATS's from
        2.09x to 1.49x, PostgreSQL's from 2.57x to 1.60x).
    start_after_archived : bool
        What a gateway with no stored cursor (a new destination) does on a journal
        whose first segments were archived: false (default), it waits, refusing to
        start past records it was never given (``JournalGapError`` at each retry,
        naming this key), until the segments are put back; true, it starts at the
        first record still in the journal, with a warning naming the seqs it will
        never deliver. A gateway that has a cursor is not affected.
    """

    name: str | None = None
    enabled: bool = True
    events: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_EVENT_TYPES))
    batch_size: Annotated[int, Meta(ge=1, le=100_000)] = 1000
    poll_interval_ms: PollMs = 2.0
    cursor_interval_ms: Annotated[int, Meta(ge=0, le=3_600_000)] = 100
    backoff_initial_ms: HourMs = 100
    backoff_max_ms: HourMs = 5000
    isolation: Literal["process", "thread"] = "process"
    nice: Annotated[int, Meta(ge=0, le=19)] = 10
    metrics_port: Annotated[int, Meta(ge=0, le=65535)] | None = None
    metrics_host: str = "127.0.0.1"
    sched_policy: Literal["normal", "idle"] = "normal"
    yield_to_engine_ms: Annotated[float, Meta(ge=0, le=1000)] = 5.0
    cpu_slice_us: Annotated[float, Meta(ge=0, le=1_000_000)] = 100.0
    start_after_archived: bool = False

    @property
    def gateway_name(self) -> str:
        """``name`` with its default applied."""
        return self.name or self.type

    @property
    def type(self) -> str:  # noqa: A003 - the TOML key
        """The ``type`` tag of the table."""
        return type(self).__struct_config__.tag


class ZmqConfig(GatewayConfig, tag="zmq"):
    """``type = "zmq"``: ZeroMQ PUB with a replay service.

    Attributes
    ----------
    endpoint : str
        Where the PUB socket binds. Default ``tcp://127.0.0.1:7101``. A tcp
        port is 1 to 65535, or 0 or ``*`` for a free one.
    replay_endpoint : str
        Where the ROUTER replay service binds. Default ``tcp://127.0.0.1:7102``.
    sndhwm : int
        PUB high-water mark per subscriber; past it ZeroMQ drops messages for
        that subscriber, which then fills the gap by replay. Default 100000.
    heartbeat_ms : int
        A heartbeat carrying the last published seq is sent this often, so
        a subscriber notices a lost tail. Default 1000.
    max_replay : int
        Most events in one replay answer (the subscriber asks again for the
        rest). Default 10000.
    curve_secret_key_file : str, optional
        The gateway's CURVE certificate with its secret key (``zmq.auth``
        format, as ``kronos-exec keys generate`` writes it; relative to the
        configuration file). Set, both sockets are CURVE servers: encrypted,
        and only the keys below may connect. Default: none (no CURVE).
    subscriber_keys : list of str
        Z85 public keys (40 characters) allowed to subscribe and replay.
    subscriber_key_files : list of str
        Public certificate files of the keys allowed to subscribe and replay.
        With CURVE, at least one key between the two lists.
    allow_plaintext : bool
        Explicit opt-in for a gateway without CURVE whose ``endpoint`` or
        ``replay_endpoint`` listens beyond loopback (a wildcard, a host name
        or an address that is not loopback); refused without it. Loopback
        and ``ipc://`` endpoints need none. Default false.
    """

    endpoint: str = "tcp://127.0.0.1:7101"
    replay_endpoint: str = "tcp://127.0.0.1:7102"
    sndhwm: PositiveInt = 100_000
    heartbeat_ms: HourMs = 1000
    max_replay: PositiveInt = 10_000
    curve_secret_key_file: str | None = None
    subscriber_keys: list[str] = []
    subscriber_key_files: list[str] = []
    allow_plaintext: bool = False
    # Each poll of a live journal costs a wake-up (about 60 µs of CPU here,
    # whatever it finds): at 2 ms that was half of what the gateway took
    # from the engine's cores at 1,000 orders/s (docs/gateways.md).
    poll_interval_ms: PollMs = 10.0


class NatsConfig(GatewayConfig, tag="nats"):
    """``type = "nats"``: NATS JetStream.

    Attributes
    ----------
    servers : list of str
        ``nats://host[:port]``, ``tls://host[:port]`` or ``host:port`` (port
        1 to 65535, default 4222), checked here. Default
        ``["nats://127.0.0.1:4222"]``.
    stream : str
        Stream name, created if missing. Default ``KRONOS_EVENTS``.
    subject_prefix : str
        Subjects are ``<prefix>.<plural type>.<symbol>``. Default ``kronos``.
    duplicate_window_s : float
        The stream's de-duplication window for ``Nats-Msg-Id`` (set when the
        gateway creates the stream). Default 600: longer than any outage
        the gateway's own retries ride out, so a re-sent batch is dropped by
        the server; beyond it consumers drop repeats by ``seq``.
    storage : {"file", "memory"}
        Default ``file``.
    replicas : int
        Default 1.
    max_age_s : float
        Stream retention; 0 keeps messages forever. Default 0.
    ack_timeout_s : float
        How long a batch may wait for its acknowledgements. Default 10.
    max_pending : int
        Publishes in flight awaiting acknowledgement. Default 4096.
    connect_timeout_s : float
        Default 2.
    """

    servers: list[str] = msgspec.field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    stream: str = "KRONOS_EVENTS"
    subject_prefix: str = "kronos"
    duplicate_window_s: Annotated[float, Meta(gt=0, le=MAX_AGE_S)] = 600.0
    storage: Literal["file", "memory"] = "file"
    replicas: Annotated[int, Meta(ge=1, le=5)] = 1
    max_age_s: Annotated[float, Meta(ge=0, le=MAX_AGE_S)] = 0.0
    ack_timeout_s: TimeoutS = 10.0
    max_pending: PositiveInt = 4096
    connect_timeout_s: TimeoutS = 2.0
    # Every batch pays a round of acknowledgements and a flush round trip.
    poll_interval_ms: PollMs = 20.0


class PostgresConfig(GatewayConfig, tag="postgres"):
    """``type = "postgres"``: the trade store.

    Attributes
    ----------
    dsn : str, optional
        libpq connection string; default the ``KRONOS_PG_DSN`` environment
        variable, else ``postgresql://postgres@127.0.0.1:5432/test``.
    schema : str
        Schema of the tables (created with them). Default ``kronos``.
    connect_timeout_s : int
        Default 5.
    io_timeout_s : int
        How long the connection may go unanswered (data sent and not
        acknowledged, or keepalive probes unanswered while waiting for a
        reply) before it counts as broken: libpq's ``tcp_user_timeout`` and
        TCP keepalives; and how long one batch (or migration, or liveness
        check) may take before the gateway cuts the connection, which also
        catches a middlebox that acknowledges and forwards nothing. Default 30.
    """

    dsn: str | None = None
    schema: str = "kronos"
    connect_timeout_s: Annotated[int, Meta(ge=1, le=3600)] = 5
    io_timeout_s: Annotated[int, Meta(ge=3, le=3600)] = 30
    # A transaction (and a WAL flush) per batch: fewer, larger ones.
    poll_interval_ms: PollMs = 100.0

    @property
    def conninfo(self) -> str:
        """``dsn`` with its defaults applied."""
        return self.dsn or os.environ.get("KRONOS_PG_DSN") or DEFAULT_PG_DSN

    def connect_kwargs(self) -> dict:
        """libpq parameters of every connection the gateway opens (over the ``dsn``'s).

        Without them a server that stops answering (a network partition, its
        host gone) leaves a statement, and the gateway, waiting for the
        kernel's retransmissions to give up (about 15 minutes), while it
        still reports itself up.
        """
        io = self.io_timeout_s
        return {"connect_timeout": self.connect_timeout_s, "keepalives": 1,
                "keepalives_idle": max(1, io // 3), "keepalives_interval": max(1, io // 9),
                "keepalives_count": 3, "tcp_user_timeout": io * 1000}


AnyGatewayConfig = Union[ZmqConfig, NatsConfig, PostgresConfig]
CONFIG_TYPES: dict[str, type[GatewayConfig]] = {
    cls.__struct_config__.tag: cls for cls in AnyGatewayConfig.__args__}

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SUBJECT_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_ZMQ_ENDPOINT = re.compile(r"^(tcp://[^\s]+:(\d+|\*)|ipc://[^\s]+|inproc://[^\s]+)$")
_NATS_SCHEMES = ("nats", "tls")


def _zmq_port_problem(endpoint: str) -> str | None:
    """Why a tcp:// endpoint's port is out of range, or None.

    libzmq does not refuse a port above 65535: it binds the number modulo
    65536 (``99999`` becomes ``34463``), and subscribers configured with the
    written one wait on a port nobody binds.
    """
    if not endpoint.startswith("tcp://"):
        return None
    port = endpoint.rpartition(":")[2]
    if port == "*" or int(port) <= 65535:
        return None  # 0 and * are ephemeral ports
    return f"port {port} is out of range (1 to 65535, or 0 or * for a free port)"


def zmq_ipv6(endpoint: str) -> bool:
    """Whether ``endpoint`` is a tcp:// endpoint on a bracketed IPv6 address (``tcp://[::1]:7001``).

    libzmq resolves such a host only on a socket whose ``ZMQ_IPV6`` option is
    set, and refuses it otherwise as "No such device". The option is set for
    these endpoints alone, right before their bind or connect, because on any
    other one it changes what is bound: ``tcp://*:7001`` becomes ``[::]``, an
    interface name binds its IPv6 address and an IPv4 address is reported
    IPv4-mapped (``tcp://[::ffff:127.0.0.1]:7001``).

    Parameters
    ----------
    endpoint : str
        A ZeroMQ endpoint.

    Returns
    -------
    bool
        True for ``tcp://[...]:port``.
    """
    return endpoint.startswith("tcp://[")


def _zmq_host_problem(endpoint: str) -> str | None:
    """Why a tcp:// endpoint's host is malformed around IPv6 brackets, or None.

    libzmq takes the host as everything before the last ``:`` and strips one
    pair of brackets: a lone or misplaced bracket, or an IPv6 address without
    brackets, fails only at bind time (as "No such device"), and brackets
    around anything but an IPv6 address pass by accident.
    """
    if not endpoint.startswith("tcp://"):
        return None
    host, _, port = endpoint[len("tcp://"):].rpartition(":")
    address = host[1:-1]
    if host.startswith("[") and host.endswith("]") and address and "[" not in address \
            and "]" not in address:
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return f"{address!r} in brackets is not an IPv6 address"
        return None
    if "[" in host or "]" in host:
        return "expected an IPv6 address in one pair of brackets before the port, e.g. tcp://[::1]:7001"
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return None  # an IPv4 address, a host or interface name, or *
    return f"an IPv6 address is written in brackets: tcp://[{host}]:{port}"


def _zmq_endpoint_problem(endpoint: str) -> str | None:
    """Why a tcp:// endpoint's host or port would fail (or mislead) at bind time, or None."""
    return _zmq_host_problem(endpoint) or _zmq_port_problem(endpoint)


def _nats_server_problem(server: str) -> str | None:
    """Why ``server`` is not a NATS server address nats-py can use, or None.

    nats-py takes ``nats://host[:port]``, ``tls://host[:port]`` or a bare
    ``host:port`` (the port defaulting to 4222), and reports a malformed one
    only when it connects, as a name lookup that fails over and over.
    """
    if not server or server != server.strip() or any(c.isspace() for c in server):
        return "is empty or holds whitespace; expected nats://host:port"
    url = server if "://" in server else f"nats://{server}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "has a bad port; expected 1 to 65535"
    if parts.scheme not in _NATS_SCHEMES:
        return f"has the scheme {parts.scheme!r}; expected nats://, tls:// or none (host:port)"
    if not parts.hostname:
        return "has no host; expected nats://host:port"
    if port == 0:
        return "has port 0; expected 1 to 65535"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "has a path, query or fragment; expected [nats:// or tls://]host[:port]"
    return None


def _ephemeral(endpoint: str) -> bool:
    """A port chosen at bind time (``:0``, ``:*``) cannot clash."""
    return endpoint.endswith((":0", ":*"))


def _keys(cls: type) -> str:
    return ", ".join(["type", *(f.name for f in msgspec.structs.fields(cls))])


def _explain(where: str, cls: type, message: str) -> str:
    match = re.fullmatch(r"(.*?)(?: - at `(\$[^`]*)`)?", message, flags=re.S)
    detail, path = match.group(1), (match.group(2) or "$").removeprefix("$")
    unknown = re.fullmatch(r"Object contains unknown field `([^`]*)`", detail)
    if unknown:
        return (f"'{where}{path}.{unknown.group(1)}': unknown key for a "
                f"{cls.__struct_config__.tag} gateway (keys: {_keys(cls)})")
    missing = re.fullmatch(r"Object missing required field `([^`]*)`", detail)
    if missing:
        return f"'{where}{path}.{missing.group(1)}': missing required key"
    return f"'{where}{path}': {detail}"


def reachable_from_afar(endpoint: str) -> bool:
    """Whether a ``tcp://`` endpoint (as written, or as bound) listens beyond the loopback
    interface (a wildcard, a host name or address that is not loopback); ipc:// and
    inproc:// do not. ``localhost`` counts as loopback."""
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://"):].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # "*", an interface or host name: assume it is reachable


def parse_gateway_configs(tables: list[dict[str, Any]]) -> list[GatewayConfig]:
    """Check the ``[[gateways]]`` tables and convert each into its struct.

    Parameters
    ----------
    tables : list of dict
        The parsed TOML tables, in file order.

    Returns
    -------
    list of GatewayConfig
        One per table, disabled ones included.

    Raises
    ------
    GatewayConfigError
        Naming the table (``gateways[i]``) and the offending key.
    """
    configs: list[GatewayConfig] = []
    for index, table in enumerate(tables):
        where = f"gateways[{index}]"
        if not isinstance(table, dict):
            raise GatewayConfigError(f"'{where}': expected a table, got {type(table).__name__}")
        kind = table.get("type")
        if kind is None:
            raise GatewayConfigError(f"'{where}.type': missing required key; one of "
                                     f"{', '.join(CONFIG_TYPES)}")
        cls = CONFIG_TYPES.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise GatewayConfigError(f"'{where}.type': unknown gateway type {kind!r}; expected one of "
                                     f"{', '.join(CONFIG_TYPES)}")
        try:
            config = msgspec.convert(table, cls)
        except msgspec.ValidationError as exc:
            raise GatewayConfigError(_explain(where, cls, str(exc))) from None
        _check(config, where)
        configs.append(config)
    _check_together(configs)
    return configs


def _check(config: GatewayConfig, where: str) -> None:
    def fail(key: str, message: str) -> None:
        raise GatewayConfigError(f"'{where}.{key}': {message}")

    if config.name is not None and not _NAME.match(config.name):
        fail("name", f"{config.name!r} is not 1 to 64 letters, digits, '_' or '-'")
    if not config.events:
        fail("events", "empty: the gateway would publish nothing")
    for i, name in enumerate(config.events):
        if name != "*" and name not in KNOWN_EVENT_TYPES:
            fail(f"events[{i}]", f"unknown event type {name!r}; expected \"*\" or one of "
                                 f"{', '.join(KNOWN_EVENT_TYPES)}")
    if config.backoff_max_ms < config.backoff_initial_ms:
        fail("backoff_max_ms", "is below 'backoff_initial_ms'")
    match config:
        case ZmqConfig():
            for key in ("endpoint", "replay_endpoint"):
                if not _ZMQ_ENDPOINT.match(getattr(config, key)):
                    fail(key, f"{getattr(config, key)!r} is not a tcp://host:port, ipc:// or "
                              f"inproc:// endpoint")
                problem = _zmq_endpoint_problem(getattr(config, key))
                if problem:
                    fail(key, f"{getattr(config, key)!r}: {problem}")
            if config.endpoint == config.replay_endpoint and not _ephemeral(config.endpoint):
                fail("replay_endpoint", "is the same as 'endpoint'")
            subscribers = len(config.subscriber_keys) + len(config.subscriber_key_files)
            if config.curve_secret_key_file is not None and not subscribers:
                fail("curve_secret_key_file", "is set, but 'subscriber_keys' and "
                                              "'subscriber_key_files' are empty: no one could "
                                              "connect")
            if config.curve_secret_key_file is None and not config.allow_plaintext:
                for key in ("endpoint", "replay_endpoint"):
                    if reachable_from_afar(getattr(config, key)):
                        fail(key, f"{getattr(config, key)!r} listens beyond loopback without "
                                  f"CURVE: anyone who reaches it reads every account's events "
                                  f"and replays the whole journal; set 'curve_secret_key_file' "
                                  f"and the subscribers' keys, bind 127.0.0.1 or an ipc:// "
                                  f"path, or, to serve it unauthenticated (development), set "
                                  f"'allow_plaintext = true'")
            if config.curve_secret_key_file is None and subscribers:
                fail("subscriber_keys" if config.subscriber_keys else "subscriber_key_files",
                     "lists keys, but 'curve_secret_key_file' is not set: without CURVE the "
                     "gateway cannot tell one subscriber from another")
            for i, key in enumerate(config.subscriber_keys):
                if not Z85_KEY.fullmatch(key):
                    fail(f"subscriber_keys[{i}]", "not a 40-character Z85 CURVE public key")
        case NatsConfig():
            if not config.servers:
                fail("servers", "empty")
            for i, server in enumerate(config.servers):
                problem = _nats_server_problem(server)
                if problem:
                    fail(f"servers[{i}]", f"{server!r} {problem}")
            if not _STREAM_NAME.match(config.stream):
                fail("stream", f"{config.stream!r} is not a valid stream name")
            if not _SUBJECT_TOKEN.match(config.subject_prefix):
                fail("subject_prefix", f"{config.subject_prefix!r} is not a subject without wildcards")
            if config.max_age_s and config.duplicate_window_s > config.max_age_s:
                # NATS refuses to create such a stream ("duplicates window can not be
                # larger then max age"): the gateway would fail every open, for ever.
                fail("duplicate_window_s", f"{config.duplicate_window_s:g} s is longer than "
                                           f"'max_age_s' ({config.max_age_s:g} s), which NATS "
                                           f"refuses for a stream; set it to at most max_age_s")
        case PostgresConfig():
            if not _IDENTIFIER.match(config.schema):
                fail("schema", f"{config.schema!r} is not a lower-case SQL identifier")


def _nats_server_key(server: str) -> tuple[str, int]:
    """``(host, port)`` of a checked NATS server address (the port defaulting to 4222)."""
    parts = urlsplit(server if "://" in server else f"nats://{server}")
    return (parts.hostname or "").lower(), parts.port or 4222


def _subjects_overlap(a: str, b: str) -> bool:
    """Whether the subjects ``<a>.>`` and ``<b>.>`` share any subject."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _check_nats_shared(index: int, config: NatsConfig,
                       earlier: list[tuple[int, NatsConfig]]) -> None:
    """Refuse a NATS gateway that would publish into the stream (or subjects) of an earlier one.

    Each publish expects the stream's last message to be the gateway's own
    previous one, and a gateway that reopens resumes after the stream's last
    message of its journal, whoever published it: two gateways of one engine
    on one stream (say one for fills, one for the rest) refused each other's
    order and then each skipped the events the other had published past,
    events lost with both reporting themselves caught up.
    """
    servers = {_nats_server_key(s) for s in config.servers}
    for other_index, other in earlier:
        if servers.isdisjoint(_nats_server_key(s) for s in other.servers):
            continue  # (other servers: another cluster, as far as the configuration tells)
        if config.stream == other.stream:
            key, what = "stream", f"stream {config.stream!r}"
        elif _subjects_overlap(config.subject_prefix, other.subject_prefix):
            key, what = "subject_prefix", (f"subjects {config.subject_prefix}.> (its "
                                           f"subject_prefix), which overlap {other.subject_prefix}.>")
        else:
            continue
        raise GatewayConfigError(
            f"'gateways[{index}].{key}': {what} on the same NATS servers as gateways[{other_index}]: "
            f"two gateways cannot share a stream (each resumes after the stream's last message, "
            f"whoever published it, and would skip the other's events). Give each gateway its "
            f"own 'stream' and 'subject_prefix', or list all the events in one gateway")


def _check_together(configs: list[GatewayConfig]) -> None:
    seen: dict[str, int] = {}
    endpoints: dict[str, int] = {}
    metrics_ports: dict[int, int] = {}
    nats: list[tuple[int, NatsConfig]] = []
    for index, config in enumerate(configs):
        if not config.enabled:
            continue
        if isinstance(config, NatsConfig):
            _check_nats_shared(index, config, nats)
            nats.append((index, config))
        name = config.gateway_name
        if name in seen:
            raise GatewayConfigError(f"'gateways[{index}].name': {name!r} is also the name of "
                                     f"gateways[{seen[name]}]; give each gateway a distinct 'name'")
        seen[name] = index
        if config.metrics_port:
            if config.metrics_port in metrics_ports:
                raise GatewayConfigError(
                    f"'gateways[{index}].metrics_port': {config.metrics_port} is also the metrics "
                    f"port of gateways[{metrics_ports[config.metrics_port]}]")
            metrics_ports[config.metrics_port] = index
        if isinstance(config, ZmqConfig):
            for key in ("endpoint", "replay_endpoint"):
                value = getattr(config, key)
                if _ephemeral(value):
                    continue
                if value in endpoints:
                    raise GatewayConfigError(f"'gateways[{index}].{key}': {value!r} is already bound "
                                             f"by gateways[{endpoints[value]}]")
                endpoints[value] = index
