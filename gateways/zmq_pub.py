"""ZeroMQ gateway: a PUB socket of events, a replay service, and a subscriber helper.

The embedded default for consumers on the same network: no broker, one PUB
socket and a ROUTER that serves journal ranges. PUB never blocks and drops
messages for a subscriber that falls behind its high-water mark (or is not
connected yet), so every message says where it sits in the stream and a
subscriber that notices a hole asks the replay service for it.

Wire format (multipart)::

    [topic, header, payload]
    topic   b"<type>.<symbol>" (b"fill.AAPL"), or b"<type>" without a symbol (b"admin")
    header  24 bytes, big-endian u64 x 3: seq, prev, topic_prev
    payload msgpack of gateways.events.GatewayEvent

``prev`` is the seq of the event published before this one (any topic) and
``topic_prev`` the one before it on the same topic; ``0`` means none,
``UNKNOWN`` (2**64-1) that the gateway restarted and does not know. A
heartbeat ``[b"_hb", header, payload]`` every ``heartbeat_ms`` carries the last
published seq in ``seq``, so a lost tail is noticed too, and as its payload a
:class:`HeartbeatInfo` (the topics published since a few heartbeats before).

Replay (REQ -> ROUTER): the request is a msgpack map ``{"from": a, "to": b,
"topics": [...], "prefixes": [...]}`` (``to`` 0: to the end of the journal;
no topics nor prefixes: everything); the answer is ``[status, topic,
header, payload, topic, header, payload, ...]`` where ``status`` is a msgpack
map ``{"ok": true, "through": s, "end": bool}``: every matching event up to
``s`` is in the answer (``s`` never passes the journal's last seq). Ask
again from ``s + 1`` until ``end`` or ``s >= b``.
"""
from __future__ import annotations

import collections
import logging
import struct
import threading
import time
from typing import Callable, NamedTuple

import msgspec
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from engine.journal import JournalReader, RecordKind, identity_of, journal_identity
from engine.metrics import SparseLog, warn_whatever_the_level
from gateways.base import Gateway, GatewayBindError, describe
from gateways.config import ZmqConfig, reachable_from_afar, zmq_ipv6
from gateways.events import GatewayEvent, Normalizer, topic_of
from gateways.tail import JournalTail

log = logging.getLogger(__name__)

#: A message's header: ``seq``, ``prev``, ``topic_prev`` and the journal's identity as a
#: number (:func:`journal_number`; 0: not known).
HEADER = struct.Struct(">QQQQ")
#: The header of a gateway from before the journal's identity was sent: no journal.
HEADER_V1 = struct.Struct(">QQQ")
#: ``prev``/``topic_prev`` value meaning "not known": check with a replay.
UNKNOWN = (1 << 64) - 1
HEARTBEAT_TOPIC = b"_hb"
#: The ZAP domain of a CURVE gateway's sockets (its own context's authenticator answers it).
ZAP_DOMAIN = "kronos-gateway"


class CurveServer(NamedTuple):
    """A CURVE gateway's keys: its own pair, and the subscribers' public keys (Z85)."""

    public: bytes
    secret: bytes
    subscribers: frozenset[bytes]

    @classmethod
    def of(cls, config: ZmqConfig) -> "CurveServer | None":
        """The keys ``config`` names, read from their files (None: no CURVE)."""
        if config.curve_secret_key_file is None:
            return None
        public, secret = zmq.auth.load_certificate(config.curve_secret_key_file)
        if secret is None:
            raise ValueError(f"{config.curve_secret_key_file} holds no secret key")
        keys = {key.encode() for key in config.subscriber_keys}
        keys.update(zmq.auth.load_certificate(path)[0] for path in config.subscriber_key_files)
        return cls(public, secret, frozenset(keys))

    def serve(self, socket: zmq.Socket) -> None:
        """Make ``socket`` (not yet bound) a CURVE server that only the subscribers reach."""
        socket.zap_domain = ZAP_DOMAIN.encode()
        socket.curve_server = True
        socket.curve_publickey, socket.curve_secretkey = self.public, self.secret
        # Without an answer from the authenticator libzmq would let any key in.
        socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


class _Subscribers:
    """ZAP callback: a key may connect if the gateway lists it (refusals logged sparsely)."""

    def __init__(self, name: str, keys: frozenset[bytes]):
        self.keys = keys
        self._log = SparseLog(log, f"gateway {name}: refused CURVE keys (not in "
                                   f"subscriber_keys or subscriber_key_files)")

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            return True
        self._log.log(logging.WARNING, "gateway: refused CURVE key %s (not a subscriber)",
                      key.decode("ascii", "replace"))
        return False


class HeartbeatInfo(msgspec.Struct, array_like=True):
    """A heartbeat's payload: the ``topics`` published after seq ``since``, each
    with its last seq. ``since`` is the seq the heartbeat :data:`HEARTBEAT_WINDOW`
    before this one carried, or where this run of the gateway started (after
    a restart, where the previous run's window started, when its topics were
    stored with its cursor); ``UNKNOWN`` if not known. A topic subscriber that
    has everything up to ``since`` needs no replay to know whether it lost a
    topic's last event; older gateways send no payload."""

    since: int
    topics: dict[str, int]

_SNDMORE = int(zmq.SNDMORE)
#: The most topics whose last seqs go into the cursor file with it (rewritten every
#: ``cursor_interval_ms``); past that a restarted gateway starts their chains
#: as not known, as without them (subscribers check with a replay).
MAX_STORED_TOPICS = 10_000
#: A heartbeat names the topics published since the one this many heartbeats
#: before it: a subscriber that missed fewer (or reconnected to a restarted
#: gateway within as many periods) still needs no range replay.
HEARTBEAT_WINDOW = 4
#: How long a bind waits for an address that is still in use before it fails.
BIND_RETRY_S = 1.0
#: The largest frame either socket takes from a peer (``ZMQ_MAXMSGSIZE``): a replay
#: request naming 10,000 topics is about 200 KB, a subscription one topic. libzmq
#: applies it from the first handshake command on, so a peer that has not (or, under
#: CURVE, could not) authenticate is dropped at a larger frame instead of having all
#: of it read into memory, at whatever size it announces.
MAX_INBOUND_BYTES = 1 << 20
#: Requests one peer may have queued at the replay service: a REQ socket sends one at
#: a time, and libzmq's default (1000) would let one connection park 1 GB of them.
REPLAY_RCVHWM = 16


def _limit_inbound(socket: zmq.Socket) -> None:
    """Bound what ``socket`` reads from any one peer (see :data:`MAX_INBOUND_BYTES`)."""
    socket.maxmsgsize = MAX_INBOUND_BYTES


def _bind(socket: zmq.Socket, endpoint: str) -> None:
    """``socket.bind(endpoint)``, waiting up to :data:`BIND_RETRY_S` while the address is in use.

    An engine restarted the moment the previous one was killed can find its
    ports still held by the old gateway child: the kernel kills that child
    with its engine (``engine.children.die_with_parent``), but the child
    releases its sockets only once it has run to its exit, which a loaded
    machine can delay past the new engine's bind. A port that stays taken
    fails as before, a second later.

    Raises
    ------
    zmq.ZMQError
        Any other bind error at once; ``EADDRINUSE`` once the wait is over.
    """
    deadline = time.monotonic() + BIND_RETRY_S
    socket.ipv6 = zmq_ipv6(endpoint)  # tcp://[::1]:p needs it; other endpoints must not have it
    while True:
        try:
            socket.bind(endpoint)
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() >= deadline:
                raise
        time.sleep(0.02)


class ZmqBindError(GatewayBindError, zmq.ZMQError):
    """An endpoint of the gateway that ZeroMQ could not bind.

    A :class:`GatewayBindError` (what the engine reports: the gateway, the
    endpoint, why) that is still the :class:`zmq.ZMQError` it was, ``errno``
    included, for callers that catch that.
    """

    def __init__(self, gateway: str, endpoint: str, error: zmq.ZMQError):
        super().__init__(gateway, endpoint, zmq.strerror(error.errno), error.errno)


class ZmqGateway(Gateway):
    """Publish events on a ZeroMQ PUB socket and serve replays from the journal.

    Both sockets are bound in :meth:`start` (so a taken port fails there,
    after :data:`BIND_RETRY_S`) and live until :meth:`stop`; a PUB socket has no destination to lose,
    so ``open``/``close`` have nothing to do.
    """

    type = "zmq"

    def __init__(self, config: ZmqConfig, source: JournalReader, data_dir):
        super().__init__(config, source, data_dir)
        self._context: zmq.Context | None = None
        self._auth: ThreadAuthenticator | None = None
        self._pub: zmq.Socket | None = None
        self._replay: ReplayServer | None = None
        self._encoder = msgspec.msgpack.Encoder()
        self._prev: int | None = None           # last published seq; None: not known
        self._topic_prev: dict[bytes, int] = {}
        self._topic_default = UNKNOWN
        self._last_heartbeat = 0.0
        # The seqs the last HEARTBEAT_WINDOW heartbeats carried (or where this run
        # started): the next heartbeat names the topics published after the oldest.
        # load_cursor sets where it starts.
        self._heads: collections.deque[int] = collections.deque([UNKNOWN], HEARTBEAT_WINDOW)
        self.endpoint = config.endpoint
        self.replay_endpoint = config.replay_endpoint

    def start(self) -> None:
        """Bind the PUB socket and the replay service, then start following.

        Raises
        ------
        GatewayBindError
            Naming the endpoint that could not be bound (after
            :data:`BIND_RETRY_S` for one in use); nothing is left bound.
            Under ``thread`` isolation a :class:`ZmqBindError`, which is
            also the ``zmq.ZMQError`` of the bind.
        """
        if self.running:
            return
        if self.config.isolation == "process":
            super().start()  # the child binds, and reports the endpoints back
            return
        config: ZmqConfig = self.config
        curve = CurveServer.of(config)
        self._context = zmq.Context()
        if curve is not None:
            # Answering before the first handshake, as the engine's intake does.
            self._auth = ThreadAuthenticator(self._context)
            self._auth.start()
            self._auth.configure_curve_callback(
                domain=ZAP_DOMAIN, credentials_provider=_Subscribers(self.name, curve.subscribers))
        self._pub = self._context.socket(zmq.PUB)
        self._pub.setsockopt(zmq.SNDHWM, config.sndhwm)
        self._pub.setsockopt(zmq.LINGER, 0)
        _limit_inbound(self._pub)  # (its subscribers' subscriptions)
        if curve is not None:
            curve.serve(self._pub)
        binding = config.endpoint  # the one the error names
        try:
            _bind(self._pub, binding)
            self.endpoint = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
            binding = config.replay_endpoint
            self._replay = ReplayServer(self._context, binding, self.source,
                                        Normalizer(config.events, journal=self.source),
                                        max_replay=config.max_replay,
                                        durable_seq=self.durable_seq, curve=curve)
        except zmq.ZMQError as exc:
            self._pub.close()
            self._stop_auth()
            self._context.term()
            self._pub = self._context = None  # stop() has nothing left to close
            raise ZmqBindError(self.name, binding, exc) from exc
        self.replay_endpoint = self._replay.endpoint
        exposed = [e for e in (self.endpoint, self.replay_endpoint) if reachable_from_afar(e)]
        if exposed and curve is None:
            # Neither socket authenticates (no CURVE): whoever reaches them reads every
            # account's events, session ids included, and replays the whole journal.
            # (Asked for with allow_plaintext, as the plaintext intake is, and warned of
            # whatever the level, as its warning is.)
            warn_whatever_the_level(log, f"gateway {self.name}: {' and '.join(exposed)} take "
                                         f"unauthenticated connections from other hosts: anyone "
                                         f"who can reach them reads every account's events; "
                                         f"bind them to 127.0.0.1 (the default) or an ipc:// "
                                         f"path, or firewall them")
        self._replay.start()
        try:
            super().start()
        except Exception:
            self.stop()  # the sockets just bound
            raise

    def public_info(self) -> dict:
        return {**super().public_info(), "endpoint": self.endpoint,
                "replay_endpoint": self.replay_endpoint}

    def stop(self, timeout: float = 10.0) -> None:
        """Stop following, then close both sockets."""
        super().stop(timeout)
        if self._replay is not None:
            self._replay.stop()
            self._replay = None
        if self._pub is not None:
            self._pub.close()
            self._pub = None
        self._stop_auth()
        if self._context is not None:
            self._context.term()
            self._context = None

    def _stop_auth(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def load_cursor(self) -> int:
        """The cursor file (or memory), and with it the last published seq."""
        if self._cursor is not None:
            return self._cursor
        state = self.read_cursor_file()
        self.cursor_journal = state.get("journal")
        seq = int(state.get("seq", 0))
        if seq == 0:
            # Nothing was ever published: "the previous one" is none, not unknown.
            self._prev, self._topic_default = 0, 0
            self._heads = collections.deque([0], HEARTBEAT_WINDOW)
            return seq
        published = state.get("published")
        self._prev = published if type(published) is int else None
        self._topic_default = UNKNOWN
        # This run publishes after _prev: the first heartbeat's topics start there...
        start = UNKNOWN if self._prev is None else self._prev
        topics, since = state.get("topics"), state.get("since")
        if self._prev is not None and isinstance(topics, dict) and type(since) is int:
            # ... unless the previous run's topics were stored with its cursor: then each
            # topic's chain goes on where it was, and the first heartbeats name the topics
            # since the previous run's last ones, so a topic subscriber that had everything
            # up to one of them needs no replay to cross the restart.
            self._topic_prev = {t.encode(): s for t, s in topics.items() if type(s) is int}
            start = since
            if state.get("topics_complete") is True:
                self._topic_default = 0  # a topic not named was never published
        self._heads = collections.deque([start], HEARTBEAT_WINDOW)
        return seq

    def cursor_state(self) -> dict:
        state = {"published": self._prev}
        if self._prev is not None and len(self._topic_prev) <= MAX_STORED_TOPICS:
            state.update(since=self._heads[0],
                         topics={t.decode(): s for t, s in self._topic_prev.items()},
                         topics_complete=self._topic_default == 0)
        return state

    def deliver(self, events: list[GatewayEvent], through_seq: int) -> None:
        send, pack, encode = self._pub.send, HEADER.pack, self._encoder.encode
        topic_prev, default = self._topic_prev, self._topic_default
        prev = UNKNOWN if self._prev is None else self._prev
        journal = journal_number(self.journal_id)
        for event in self.paced(events):
            topic = topic_of(event).encode()
            # Three sends with a plain-int SNDMORE: send_multipart combines
            # zmq.Flag enums per frame, which was a third of this loop's time.
            send(topic, _SNDMORE)
            send(pack(event.seq, prev, topic_prev.get(topic, default), journal), _SNDMORE)
            send(encode(event))
            prev = topic_prev[topic] = event.seq
        self._prev = prev

    def tick(self) -> None:
        now = time.monotonic()
        if (now - self._last_heartbeat) * 1000 >= self.config.heartbeat_ms:
            self._last_heartbeat = now
            head = self._prev if self._prev is not None else (self._cursor or 0)
            # Each topic's last seq is in _topic_prev already: those past `since` are
            # the ones published since (nothing added per event).
            heads = self._heads
            since = heads[0]
            info = HeartbeatInfo(since, {t.decode(): seq for t, seq in self._topic_prev.items()
                                         if seq > since})
            heads.append(head)
            if heads[0] == UNKNOWN:
                heads.popleft()  # known from now on: no need to keep sending "not known"
            self._pub.send_multipart((HEARTBEAT_TOPIC, HEADER.pack(
                head, head, 0, journal_number(self.journal_id)),
                                      self._encoder.encode(info)))


def journal_number(identity: str | None) -> int:
    """A journal's identity (:func:`engine.journal.journal_identity`, hex) as the
    number a header carries; 0 when it is not known (or not a u64 in hex)."""
    try:
        number = int(identity, 16) if identity else 0
    except ValueError:
        return 0
    return number if 0 < number < UNKNOWN else 0


def unpack_header(header: bytes) -> tuple[int, int, int, str | None]:
    """``(seq, prev, topic_prev, journal)`` of a message's header; ``journal`` is the
    identity in :func:`engine.journal.journal_identity`'s form, None from a gateway that
    sends none (a 24-byte header)."""
    if len(header) == HEADER_V1.size:
        return (*HEADER_V1.unpack(header), None)
    seq, prev, topic_prev, number = HEADER.unpack(header)
    return seq, prev, topic_prev, identity_of(number) if number else None


def _matches(topic: bytes, topics: frozenset[bytes], prefixes: tuple[bytes, ...]) -> bool:
    if not topics and not prefixes:
        return True
    return topic in topics or topic.startswith(prefixes)


def topic_filter(topics: list[bytes]) -> tuple[frozenset[bytes], tuple[bytes, ...]]:
    """A subscriber's topics as whole topics and prefixes (the replay request's two lists).

    A symbol is compared whole, since symbols prefix one another (``AAA``,
    ``AAAX``) and hold dots (``BRK.B``): ``fill.AAA`` is that one topic. A
    topic ending in ``.`` is a prefix (``fill.``: every fill). A type alone
    (``fill``, ``admin``) is that type with any symbol or none: the topic
    itself and the prefix ``<type>.``, never another type it begins
    (``fill`` is not ``fill_correction``).

    Parameters
    ----------
    topics : list of bytes
        As given to :class:`Subscriber`.

    Returns
    -------
    (frozenset of bytes, tuple of bytes)
        The whole topics and the prefixes; a topic matches if it is one of
        the first or starts with one of the second.
    """
    whole: set[bytes] = set()
    prefixes: list[bytes] = []
    for topic in topics:
        if topic.endswith(b"."):
            prefixes.append(topic)
        elif b"." not in topic:
            whole.add(topic)
            prefixes.append(topic + b".")
        else:
            whole.add(topic)
    return frozenset(whole), tuple(dict.fromkeys(prefixes))


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A replay request (docs/gateways.md, *ZeroMQ*): events ``from``..``to`` (0: to the
    journal's end) on ``topics`` (compared whole) or ``prefixes``; none: everything.
    Seqs are integers: a float or a string is refused, not cut to one."""

    first: int = msgspec.field(name="from", default=1)
    to: int = 0
    topics: list[str] = []
    prefixes: list[str] = []


class ReplayServer:
    """Serves journal ranges to subscribers, on a thread of its own.

    It reads the journal itself (its own :class:`JournalTail`), so a replay
    never waits for, nor slows, the publishing loop.

    Parameters
    ----------
    context : zmq.Context
    endpoint : str
        Where the ROUTER binds.
    source : JournalReader
    normalizer : Normalizer
        Selects the same event types as the gateway publishes.
    max_replay : int
        Most events per answer.
    durable_seq : callable, optional
        The journal's durable seq (``Gateway.durable_seq``): a replay serves
        nothing past it, as the publishing loop does not publish past it.
    curve : CurveServer, optional
        Serve over CURVE, to the subscribers' keys only.
    """

    def __init__(self, context: zmq.Context, endpoint: str, source: JournalReader,
                 normalizer: Normalizer, *, max_replay: int = 10_000,
                 durable_seq: Callable[[], int | None] | None = None,
                 curve: CurveServer | None = None):
        self._socket = context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            _limit_inbound(self._socket)
            self._socket.rcvhwm = REPLAY_RCVHWM
            if curve is not None:
                curve.serve(self._socket)
            _bind(self._socket, endpoint)
        except zmq.ZMQError:
            self._socket.close()
            raise
        self.endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._source = source
        self._identity: str | None = None  # the journal's (journal_identity), once it has one
        self._tail = JournalTail(source)
        self._normalizer = normalizer
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(ReplayRequest)
        self.max_replay = max_replay
        self._durable_seq = durable_seq or (lambda: None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-replay", daemon=True)
        self.requests = 0
        self._errors = SparseLog(log, "gateway replay: requests refused")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()
        self._tail.close()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            while True:
                try:
                    frames = self._socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.requests += 1
                # [identity, b"", request] from a REQ socket.
                envelope, body = frames[:-1], frames[-1]
                try:
                    reply = self._answer(body)
                except Exception as exc:  # noqa: BLE001 - a bad request or a journal problem: tell the asker
                    # Sparsely: anyone who reaches the port can send bad requests at will.
                    self._errors.log(logging.WARNING, "gateway replay: %s", exc)
                    reply = [self._encoder.encode({"ok": False, "error": describe(exc)})]
                self._socket.send_multipart(envelope + reply)

    def _answer(self, body: bytes) -> list[bytes]:
        request = self._decoder.decode(body)
        first, last = request.first, request.to
        topics = frozenset(t.encode() for t in request.topics)
        prefixes = tuple(p.encode() for p in request.prefixes)
        if first < 1:
            raise ValueError(f"'from' must be >= 1, not {first}")
        tail, normalizer, pack, encode = self._tail, self._normalizer, HEADER.pack, self._encoder.encode
        if self._identity is None:
            # (It never changes once the journal has a segment: read once, not per request.)
            self._identity = journal_identity(self._source.data_dir)
        identity, journal = self._identity, journal_number(self._identity)
        tail.seek(first - 1)
        normalizer.reset()  # (each answer reads its own range: see Normalizer.reset)
        frames: list[bytes] = []
        count, through, end = 0, first - 1, False
        # Scanning is bounded too, so a narrow filter over a long range
        # answers in pieces instead of holding the service.
        scan_budget = self.max_replay * 20
        durable = self._durable_seq()
        while count < self.max_replay and scan_budget > 0:
            records = tail.read(min(1000, scan_budget), durable)
            if not records:
                end = True
                break
            scan_budget -= len(records)
            done = False
            for record in records:
                if last and record.seq > last:
                    done = True
                    break
                through = record.seq
                if record.kind != RecordKind.EVENT:
                    normalizer.note(record)  # an admin reply's request
                    continue
                event = normalizer.event(record)
                if event is None or not normalizer.wants(event.type):
                    continue
                topic = topic_of(event).encode()
                if _matches(topic, topics, prefixes):
                    frames += (topic, pack(event.seq, 0, 0, journal), encode(event))
                    count += 1
                    if count >= self.max_replay:
                        done = True
                        break
            if done:
                break
        if end:
            # Asked from past the journal's end: claim only the seqs that
            # exist (and are durable), or a client resuming from through + 1
            # would skip the events written after this answer. (A bounded
            # read past the durable seq does not move the tail.)
            through = min(through, tail.last_read_seq if durable is None else
                          max(tail.last_read_seq, min(durable, through)))
        status = {"ok": True, "through": through, "end": end, "journal": identity}
        return [self._encoder.encode(status), *frames]


class _NewJournal(Exception):
    """A message of another journal arrived after events of this one were taken in the
    same :meth:`Subscriber.recv`: the call returns those first (its frame stays pending)."""


class ReplayError(Exception):
    """The replay service did not answer (in time) or answered with an error."""


class Subscriber:
    """Receive a gateway's events in order, each once, with gaps filled by replay.

    Subscribed to everything (``topics`` left out), the subscriber follows
    the whole stream by ``prev``: it delivers every event in seq order.
    Subscribed to topics (``[b"fill."]`` for all fills, ``[b"fill.AAPL"]``),
    it follows each topic by ``topic_prev`` and delivers each topic in seq
    order; a heartbeat names the topics published since one a few before (or,
    too many missed, makes it replay the range since the last one), so an event
    lost at the end of a topic is found too.

    Parameters
    ----------
    endpoint : str
        The gateway's PUB endpoint.
    replay_endpoint : str
        The gateway's replay endpoint.
    topics : list of bytes, optional
        Topics to follow, each compared whole (:func:`topic_filter`):
        ``b"fill.AAPL"`` is AAPL's fills and not AAPLX's; one ending in
        ``.`` is a prefix (``b"fill."``: every fill); a type alone
        (``b"fill"``, ``b"admin"``) is that type, with any symbol or none.
        Everything by default.
    start_seq : int, optional
        The last seq the consumer already has (e.g. stored with its own
        data): the first :meth:`recv` replays everything after it. Left out,
        the subscriber starts with whatever arrives first.
    start_journal : str, optional
        The journal ``start_seq`` counts in (:attr:`journal`, stored with
        it): if the engine's journal is another one now (made anew: its
        seqs start again at 1), the subscriber starts over from that
        journal's seq 1 instead of skipping its events up to ``start_seq``.
        Left out, ``start_seq`` is taken to be the current journal's.
    context : zmq.Context, optional
    replay_timeout_ms : int
        How long one replay request may take.
    rcvhwm : int
        SUB high-water mark.
    server_key : bytes or str, optional
        The gateway's CURVE public key (Z85), for a gateway with
        ``curve_secret_key_file``: both sockets then speak CURVE.
    client_keypair : (bytes, bytes), optional
        This subscriber's CURVE (public, secret) keys, the public one listed
        in the gateway's ``subscriber_keys`` or ``subscriber_key_files``.

    Attributes
    ----------
    gaps : int
        Holes found (each filled by one replay, possibly in several requests).
    replayed : int
        Events delivered from replays.
    duplicates : int
        Messages dropped because their seq was already delivered.
    journal : str or None
        The identity of the journal the events last returned by :meth:`recv`
        belong to (:func:`engine.journal.journal_identity`); store it with
        :attr:`resume_seq`. None until known (a gateway older than this
        field sends none).
    journal_changes : int
        Times the engine's journal changed under the subscriber (a new
        journal's seqs start again at 1): each time the subscriber starts
        over from the new journal's seq 1, and one :meth:`recv` never
        returns events of two journals.
    last_error : str
        The last replay failure; the subscriber retries on the next ``recv``.

    Examples
    --------
    >>> sub = Subscriber("tcp://127.0.0.1:7101", "tcp://127.0.0.1:7102", start_seq=0)  # doctest: +SKIP
    >>> for event in sub.recv(timeout_ms=1000):                                       # doctest: +SKIP
    ...     print(event.seq, event.type, event.symbol, event.last_qty, event.last_px)
    """

    def __init__(self, endpoint: str, replay_endpoint: str, *, topics: list[bytes] | None = None,
                 start_seq: int | None = None, start_journal: str | None = None,
                 context: zmq.Context | None = None,
                 replay_timeout_ms: int = 5000, rcvhwm: int = 1_000_000,
                 server_key: bytes | str | None = None,
                 client_keypair: tuple[bytes | str, bytes | str] | None = None):
        if (server_key is None) != (client_keypair is None):
            raise ValueError("server_key and client_keypair go together (CURVE needs both)")
        self._curve = None if server_key is None else tuple(
            k if isinstance(k, bytes) else k.encode() for k in (server_key, *client_keypair))
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._replay_endpoint = replay_endpoint
        self.replay_timeout_ms = replay_timeout_ms
        prefixes = [t for t in (topics or []) if t]
        self.all_topics = not prefixes
        self.prefixes = prefixes
        # ZeroMQ matches subscriptions by prefix (fill.AAA lets fill.AAAX
        # through), so what arrives is checked against the whole topics too.
        self._topics, self._topic_prefixes = topic_filter(prefixes)
        self._sub = self._context.socket(zmq.SUB)
        self._curve_client(self._sub)
        self._sub.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sub.setsockopt(zmq.LINGER, 0)
        for prefix in prefixes or [b""]:
            self._sub.setsockopt(zmq.SUBSCRIBE, prefix)
        if prefixes:
            self._sub.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_TOPIC)
        self._sub.ipv6 = zmq_ipv6(endpoint)
        self._sub.connect(endpoint)
        self._req: zmq.Socket | None = None
        self._decoder = msgspec.msgpack.Decoder(GatewayEvent)
        self._encoder = msgspec.msgpack.Encoder()
        self._status_decoder = msgspec.msgpack.Decoder(dict)
        # All topics: everything up to last_seq is delivered. By topic:
        # everything on the subscribed prefixes up to last_seq, and each
        # topic up to _topic_seq[topic].
        self.last_seq: int | None = start_seq
        self.journal: str | None = start_journal
        self.journal_changes = 0
        self._topic_seq: dict[bytes, int] = {}
        self._caught_up = start_seq is None
        self._heartbeat_decoder = msgspec.msgpack.Decoder(HeartbeatInfo)
        self._pending: collections.deque[list[bytes]] = collections.deque()
        self.gaps = self.replayed = self.duplicates = 0
        self.last_error = ""

    # ------------------------------------------------------------ public
    @property
    def resume_seq(self) -> int | None:
        """The seq to store and pass back as ``start_seq`` after a restart."""
        return self.last_seq

    def recv(self, timeout_ms: int = 1000, max_events: int = 100_000) -> list[GatewayEvent]:
        """Events that arrived (waiting up to ``timeout_ms`` for the first), in order.

        Replays run inside this call; if the replay service is unreachable
        the events before the hole are returned, ``last_error`` says why and
        the next call tries again.
        """
        out: list[GatewayEvent] = []
        try:
            if not self._caught_up:
                self._fill(out, self.last_seq + 1, 0, topics=())
                self._caught_up = True
                if out:
                    return out  # (one journal per call: what follows may be another's)
            while self._pending and len(out) < max_events:
                self._handle(self._pending[0], out)
                self._pending.popleft()
            if not out and not self._sub.poll(timeout_ms):
                return out
            while len(out) < max_events:
                try:
                    frames = self._sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._pending.append(frames)
                self._handle(frames, out)
                self._pending.popleft()
        except ReplayError as exc:
            self.last_error = str(exc)
        except _NewJournal:
            pass  # (its frame is still pending: the next call starts the new journal)
        return out

    def close(self) -> None:
        """Close the sockets (and the context if the subscriber made it)."""
        self._sub.close()
        if self._req is not None:
            self._req.close()
        if self._own_context:
            self._context.term()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ stream
    def _handle(self, frames: list[bytes], out: list[GatewayEvent]) -> None:
        topic, header, payload = frames
        seq, prev, topic_prev, journal = unpack_header(header)
        if journal is not None and journal != self.journal:
            self._new_journal(journal, out)
        if topic == HEARTBEAT_TOPIC:
            self._heartbeat(seq, payload, out)
            return
        if not self.all_topics and not _matches(topic, self._topics, self._topic_prefixes):
            return  # let through by ZeroMQ's prefix match only (fill.AAAX for fill.AAA)
        if self.last_seq is None:
            self.last_seq = seq - 1  # the first message is where this subscriber starts
        if self.all_topics:
            have, chain = self.last_seq, prev
        else:
            have, chain = max(self._topic_seq.get(topic, 0), self.last_seq), topic_prev
        if seq <= have:
            self.duplicates += 1
            return
        if (seq - 1 if chain == UNKNOWN else chain) > have:
            self.gaps += 1
            # Replay to the end of the journal, not just to this message: a
            # hole usually means a burst overran the queue, and the messages
            # queued behind this one are then mostly holes too. What arrives
            # live afterwards is dropped as already delivered.
            self._fill(out, have + 1, 0, topics=() if self.all_topics else (topic,))
            have = self.last_seq if self.all_topics else self._topic_seq.get(topic, have)
            if seq <= have:
                return
        self._deliver(topic, self._decoder.decode(payload), out)

    def _heartbeat(self, seq: int, payload: bytes, out: list[GatewayEvent]) -> None:
        """Make sure nothing up to the heartbeat's ``seq`` was lost.

        Following everything, the chain shows every hole but one at the end,
        which ``seq`` shows. Following topics, a topic's last event may be
        lost with nothing after it on that topic: when the subscriber has
        everything up to the heartbeat's ``since``, its topics (published
        after it) say which of ours moved and to where, and only a topic left
        behind is replayed; else (a heartbeat missed, a gateway restarted
        past what it had announced) the whole range since ``last_seq`` is.
        """
        try:
            info = self._heartbeat_decoder.decode(payload) if payload else None
        except msgspec.DecodeError:
            info = None
        if self.last_seq is None:
            self.last_seq = seq
        elif seq > self.last_seq:
            if self.all_topics or info is None or info.since > self.last_seq:
                self._fill(out, self.last_seq + 1, seq, topics=())
            else:
                for name, topic_last in info.topics.items():
                    topic = name.encode()
                    if not _matches(topic, self._topics, self._topic_prefixes):
                        continue
                    have = max(self._topic_seq.get(topic, 0), self.last_seq)
                    if topic_last > have:
                        self.gaps += 1
                        self._fill(out, have + 1, seq, topics=(topic,))
                self.last_seq = seq

    def _new_journal(self, journal: str, out: list[GatewayEvent]) -> None:
        """A message of ``journal`` arrived: the first one names the journal followed; one
        of another journal (the engine's was made anew, its seqs start again at 1) makes
        the subscriber start over from that journal's seq 1, once the events of the old
        one already taken are returned (:class:`_NewJournal`)."""
        if self.journal is None:
            self.journal = journal
            return
        if out:
            raise _NewJournal
        log.warning("subscriber: the engine's journal is %s now, not %s: its seqs start again "
                    "at 1; following it from seq 1", journal, self.journal)
        self.journal = journal
        self.journal_changes += 1
        self.last_seq = 0
        self._topic_seq.clear()
        self._caught_up = True

    def _deliver(self, topic: bytes, event: GatewayEvent, out: list[GatewayEvent]) -> None:
        out.append(event)
        if self.all_topics:
            self.last_seq = event.seq
        else:
            self._topic_seq[topic] = event.seq

    def _fill(self, out: list[GatewayEvent], first: int, last: int, *, topics: tuple[bytes, ...]) -> None:
        """Replay ``first..last`` (0: to the end) and deliver what is new."""
        whole_range = not topics  # all subscribed prefixes: the range becomes complete
        while True:
            status, frames = self._request(first, last, topics)
            journal = status.get("journal")
            if isinstance(journal, str) and journal != self.journal:
                if self.journal is not None:
                    # The journal was made anew since what this subscriber holds:
                    # the range asked for is another journal's. Start over from its seq 1.
                    self._new_journal(journal, out)
                    first, last, topics, whole_range = 1, 0, (), True
                    continue
                self.journal = journal
            for i in range(0, len(frames), 3):
                topic, header, payload = frames[i:i + 3]
                seq = unpack_header(header)[0]
                have = (self.last_seq if self.all_topics
                        else max(self._topic_seq.get(topic, 0), self.last_seq))
                if seq <= have:
                    self.duplicates += 1
                    continue
                self.replayed += 1
                self._deliver(topic, self._decoder.decode(payload), out)
            through = status["through"]
            if whole_range and through > self.last_seq:
                self.last_seq = through
            if status.get("end") or (last and through >= last):
                return
            if through < first:
                raise ReplayError(f"replay made no progress at seq {first}")
            first = through + 1

    def _curve_client(self, socket: zmq.Socket) -> None:
        if self._curve is not None:
            socket.curve_serverkey, socket.curve_publickey, socket.curve_secretkey = self._curve

    def _request(self, first: int, last: int, topics: tuple[bytes, ...]) -> tuple[dict, list[bytes]]:
        if self._req is None:
            self._req = self._context.socket(zmq.REQ)
            self._curve_client(self._req)
            self._req.setsockopt(zmq.LINGER, 0)
            self._req.ipv6 = zmq_ipv6(self._replay_endpoint)
            self._req.connect(self._replay_endpoint)
        if not topics:
            topics, prefixes = tuple(self._topics), self._topic_prefixes
        else:
            prefixes = ()
        request = {"from": first, "to": last, "topics": [t.decode() for t in topics],
                   "prefixes": [p.decode() for p in prefixes]}
        self._req.send(self._encoder.encode(request))
        if not self._req.poll(self.replay_timeout_ms):
            # A REQ socket that got no answer cannot send again: start afresh.
            self._req.close()
            self._req = None
            raise ReplayError(f"replay service {self._replay_endpoint} did not answer in "
                              f"{self.replay_timeout_ms} ms")
        reply = self._req.recv_multipart()
        status = self._status_decoder.decode(reply[0])
        if not status.get("ok"):
            raise ReplayError(f"replay refused: {status.get('error')}")
        return status, reply[1:]


def subscribe_main(argv: list[str] | None = None) -> None:  # pragma: no cover - docs/gateways.md's example
    """``python -m gateways.zmq_pub PUB REPLAY [START_SEQ] [--server-key F --key F]``: print events."""
    import argparse
    import sys
    parser = argparse.ArgumentParser(prog="python -m gateways.zmq_pub",
                                     description="Print a ZeroMQ gateway's events as JSON lines.")
    parser.add_argument("endpoint")
    parser.add_argument("replay_endpoint")
    parser.add_argument("start_seq", nargs="?", type=int)
    parser.add_argument("--server-key", metavar="FILE",
                        help="the gateway's public certificate (a CURVE gateway)")
    parser.add_argument("--key", metavar="FILE",
                        help="this subscriber's secret certificate (a CURVE gateway)")
    args = parser.parse_args(argv)
    curve = {}
    if args.server_key or args.key:
        if not (args.server_key and args.key):
            parser.error("--server-key and --key go together")
        public, secret = zmq.auth.load_certificate(args.key)
        curve = {"server_key": zmq.auth.load_certificate(args.server_key)[0],
                 "client_keypair": (public, secret)}
    with Subscriber(args.endpoint, args.replay_endpoint, start_seq=args.start_seq, **curve) as sub:
        while True:
            for event in sub.recv(timeout_ms=1000):
                print(msgspec.json.encode(event).decode(), flush=True)
            if sub.last_error:
                print(f"# replay: {sub.last_error}", file=sys.stderr, flush=True)
                sub.last_error = ""


if __name__ == "__main__":  # pragma: no cover
    subscribe_main()
