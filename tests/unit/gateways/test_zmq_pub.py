"""ZeroMQ gateway over real sockets: the stream, its replay service, and the
Subscriber's de-duplication and gap filling."""
import os
import socket
import threading
import time

import msgspec
import orjson
import pytest
import zmq

from engine.journal import JournalWriter, RecordKind
from engine.messages import JournalEvent
from gateways import from_config, zmq_pub
from gateways.events import GatewayEvent
from gateways.zmq_pub import HEADER, HEADER_V1, UNKNOWN, Subscriber, unpack_header
from tests.unit.gateways.helpers import (
    admin, fill, free_port, new_ack, wait_until, write_fills, write_kill_switch, write_mixed,
)


def make_gateway(tmp_path, **keys):
    table = {"type": "zmq", "endpoint": "tcp://127.0.0.1:0", "replay_endpoint": "tcp://127.0.0.1:0",
             "heartbeat_ms": 50, "poll_interval_ms": 1, **keys}
    [gateway] = from_config([table], tmp_path / "journal", tmp_path / "gw")
    return gateway


@pytest.fixture
def journal(tmp_path):
    writer = JournalWriter(tmp_path / "journal", fsync="none")
    yield writer
    writer.close()


def collect(sub, count, timeout_s=20.0):
    import time
    out = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        out += sub.recv(timeout_ms=50)
    return out


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_late_subscriber_catches_up_from_its_start_seq(tmp_path, journal, isolation):
    early = write_fills(journal, 1, 300)
    gateway = make_gateway(tmp_path, isolation=isolation)
    gateway.start()
    try:
        # Published before anyone listened: PUB dropped them all.
        assert gateway.wait_for(journal.last_seq, 10)
        with Subscriber(gateway.endpoint, gateway.replay_endpoint, start_seq=0) as sub:
            late = write_fills(journal, 301, 300)
            got = collect(sub, 600)
            assert [e.seq for e in got] == early + late
            assert [e.cl_ord_id for e in got] == [f"C{i}" for i in range(1, 601)]
            assert sub.replayed >= 300
            assert sub.last_seq == late[-1]
            # The counter moves after deliver() returns: the subscriber can have
            # every event before the gateway has counted the last batch.
            assert gateway.running and wait_until(lambda: gateway.metrics.delivered == 600, 5)
    finally:
        gateway.stop()
    assert not gateway.running and gateway.metrics.cursor == journal.last_seq


def test_gap_from_a_full_queue_is_filled_by_replay(tmp_path, journal):
    gateway = make_gateway(tmp_path, sndhwm=10)
    gateway.start()
    try:
        with Subscriber(gateway.endpoint, gateway.replay_endpoint, rcvhwm=10, start_seq=0) as sub:
            first = write_fills(journal, 1, 1, with_commands=False)
            assert [e.seq for e in collect(sub, 1)] == first
            # Far more than socket buffers hold while the subscriber is not
            # reading: ZeroMQ drops, the chain shows it.
            burst = write_fills(journal, 2, 20_000, with_commands=False)
            assert gateway.wait_for(journal.last_seq, 30)
            got = collect(sub, 20_000)
            assert [e.seq for e in got] == burst
            assert sub.gaps >= 1 and sub.replayed > 0
            print("gaps", sub.gaps, "replayed", sub.replayed, "dups", sub.duplicates)
    finally:
        gateway.stop()


def test_topic_subscriber_gets_its_topic_in_order_with_gaps_filled(tmp_path, journal):
    gateway = make_gateway(tmp_path, sndhwm=10)
    gateway.start()
    try:
        with Subscriber(gateway.endpoint, gateway.replay_endpoint, topics=[b"fill.AAA"], rcvhwm=10,
                        start_seq=0) as sub:
            written = write_mixed(journal, 1, 4000)
            assert gateway.wait_for(journal.last_seq, 30)
            expected = [seq for seq, kind in written.items() if kind == "fill"]
            got = collect(sub, len(expected) // 4)
            assert all(e.symbol == "AAA" and e.type == "fill" for e in got)
            assert [e.seq for e in got] == sorted(e.seq for e in got)
            assert len({e.seq for e in got}) == len(got) == 2000  # two fills of each of 1000 AAA orders
    finally:
        gateway.stop()


def test_restarted_gateway_resumes_and_the_subscriber_sees_each_event_once(tmp_path, journal):
    gateway = make_gateway(tmp_path)
    gateway.start()
    with Subscriber(gateway.endpoint, gateway.replay_endpoint, start_seq=0) as sub:
        before = write_fills(journal, 1, 200)
        got = collect(sub, 200)
        # The subscriber may have had them from the replay endpoint, which reads the
        # journal itself, before the gateway's loop got there: wait for the loop.
        assert gateway.wait_for(before[-1], 20)
        gateway.stop()
        # Written while the gateway is down: nothing is lost, the journal holds them.
        during = write_fills(journal, 201, 200)
        endpoint = gateway.endpoint
        again = make_gateway(tmp_path, endpoint=endpoint,
                             replay_endpoint=gateway.replay_endpoint)
        assert again.load_cursor() == before[-1]  # from the cursor file
        again.start()
        try:
            after = write_fills(journal, 401, 200)
            got += collect(sub, 400)
            assert [e.seq for e in got] == before + during + after
        finally:
            again.stop()


def test_replay_protocol(tmp_path, journal):
    written = write_mixed(journal, 1, 50)
    gateway = make_gateway(tmp_path, max_replay=7)
    gateway.start()
    context = zmq.Context()
    req = context.socket(zmq.REQ)
    req.connect(gateway.replay_endpoint)
    decoder = msgspec.msgpack.Decoder(GatewayEvent)
    try:
        req.send(msgspec.msgpack.encode({"from": 1, "to": 40, "prefixes": ["fill.BBB"]}))
        status, *frames = req.recv_multipart()
        status = msgspec.msgpack.decode(status)
        events = [decoder.decode(frames[i + 2]) for i in range(0, len(frames), 3)]
        expected = [s for s, k in written.items() if k == "fill" and s <= 40]
        assert [e.seq for e in events] == [s for s in expected if s in {e.seq for e in events}]
        assert all(e.symbol == "BBB" and e.type == "fill" for e in events)
        assert frames[0] == b"fill.BBB" and HEADER.unpack(frames[1])[0] == events[0].seq
        assert status["ok"] and status["through"] <= 40 and not status["end"]

        # max_replay bounds an answer; "through" says where to continue.
        req.send(msgspec.msgpack.encode({"from": 1, "to": 0}))
        status, *frames = req.recv_multipart()
        status = msgspec.msgpack.decode(status)
        assert len(frames) == 3 * 7 and status["through"] == HEADER.unpack(frames[-2])[0]

        req.send(msgspec.msgpack.encode({"from": 0}))
        status = msgspec.msgpack.decode(req.recv_multipart()[0])
        assert not status["ok"] and "'from' must be >= 1" in status["error"]
    finally:
        req.close()
        context.term()
        gateway.stop()


def test_stream_header_chains(tmp_path, journal):
    written = write_mixed(journal, 1, 10)
    context = zmq.Context()
    gateway = make_gateway(tmp_path)
    gateway.start()
    assert gateway.wait_for(journal.last_seq, 10)
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(gateway.endpoint)
    try:
        # A heartbeat arriving means the subscription is in place.
        assert sub.poll(5000) and sub.recv_multipart()[0] == b"_hb"
        more = write_mixed(journal, 11, 10)
        frames = []
        while len(frames) < len(more) and sub.poll(5000):
            topic, header, payload = sub.recv_multipart()
            if topic != b"_hb":
                frames.append((topic, unpack_header(header)[:3]))
        seqs = list(more)
        assert [h[0] for _, h in frames] == seqs
        # prev: the event published just before, the first one included.
        assert [h[1] for _, h in frames] == [max(written)] + seqs[:-1]
        last_on_topic = {}
        for topic, (seq, prev, topic_prev) in frames:
            assert topic_prev != UNKNOWN and topic_prev < seq
            if topic in last_on_topic:
                assert topic_prev == last_on_topic[topic]
            last_on_topic[topic] = seq
        assert len(last_on_topic) > 3
    finally:
        sub.close()
        context.term()
        gateway.stop()


def test_admin_events_published_and_replayed_with_the_kill_switch_scope(tmp_path, journal):
    write_fills(journal, 1, 10)
    reply = write_kill_switch(journal, "K1", "symbol", "AAA", cancels=2)
    gateway = make_gateway(tmp_path)
    gateway.start()
    try:
        # Live: the subscriber replays from the start and gets the reply with its request's fields.
        with Subscriber(gateway.endpoint, gateway.replay_endpoint, topics=[b"admin"], start_seq=0) as sub:
            [live] = collect(sub, 1)
        # A replay that starts at the reply: the service reads the request back.
        with Subscriber(gateway.endpoint, gateway.replay_endpoint, topics=[b"admin"],
                        start_seq=reply - 1) as sub:
            [replayed] = collect(sub, 1)
    finally:
        gateway.stop()
    for event in (live, replayed):
        assert (event.seq, event.type, event.req_id) == (reply, "admin", "K1")
        assert (event.action, event.scope, event.target) == ("engage", "symbol", "AAA")


def test_a_replay_answers_an_admin_reply_with_its_own_request_whatever_was_asked_before(
        tmp_path, journal):
    """An engage and a release under one req_id. A replay that ended between the release's
    request and its reply left that request in the service's shared state, and the next
    replay, of the engage's reply, gave it the release's action (the live feed and the
    stores had the engage's)."""
    write_fills(journal, 1, 5)
    engage = write_kill_switch(journal, "K1", "account", "DEMO2", cancels=2)
    release = write_kill_switch(journal, "K1", "account", "DEMO2", action="release")
    release_request = release - 1
    gateway = make_gateway(tmp_path)
    gateway.start()
    context = zmq.Context()
    req = context.socket(zmq.REQ)
    req.connect(gateway.replay_endpoint)
    decoder = msgspec.msgpack.Decoder(GatewayEvent)

    def replay(first, last):
        req.send(msgspec.msgpack.encode({"from": first, "to": last}))
        _, *frames = req.recv_multipart()
        return [decoder.decode(frames[i + 2]) for i in range(0, len(frames), 3)]
    try:
        assert replay(release_request, release_request) == []  # the request alone
        [admin] = [e for e in replay(engage, engage) if e.type == "admin"]
        assert (admin.seq, admin.req_id, admin.action) == (engage, "K1", "engage")
        [admin] = [e for e in replay(release, release) if e.type == "admin"]
        assert (admin.seq, admin.action) == (release, "release")
    finally:
        req.close()
        context.term()
        gateway.stop()


@pytest.mark.parametrize("policy,expected", [("normal", "SCHED_OTHER"), ("idle", "SCHED_IDLE")])
def test_child_process_runs_under_its_sched_policy_and_nice(tmp_path, journal, policy, expected):
    written = write_fills(journal, 1, 50)
    gateway = make_gateway(tmp_path, isolation="process", sched_policy=policy, nice=7)
    gateway.start()
    try:
        pid = gateway._process.pid
        assert os.sched_getscheduler(pid) == getattr(os, expected)
        assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0) + 7
        # Idle or not, on this otherwise quiet test it delivers everything.
        assert gateway.wait_for(written[-1], 10)
    finally:
        gateway.stop()


def test_gateway_yields_to_a_busy_engine_but_never_stalls(tmp_path, journal):
    """With the engine's busy flag up, each step of the gateway's loop first waits (at most
    yield_to_engine_ms); held up for good, the events still all arrive, only later."""
    import time

    from engine.busy import BusyFlag
    flag = BusyFlag.in_journal(tmp_path / "journal", create=True)
    flag.raise_()
    gateway = make_gateway(tmp_path, isolation="thread", yield_to_engine_ms=30,
                           heartbeat_ms=60_000)
    gateway.start()
    try:
        # Live events only (no start_seq): what the PUB loop sends, not the replay server.
        with Subscriber(gateway.endpoint, gateway.replay_endpoint) as sub:
            time.sleep(0.2)  # subscribed before the first event is published
            started = time.monotonic()
            seqs = write_fills(journal, 1, 20, with_commands=False)
            got = collect(sub, 20)
            took = time.monotonic() - started
        assert [e.seq for e in got] == seqs
        # Read, normalise, deliver, and a wait every 4 events sent: at least 3 full waits.
        assert took >= 0.09
    finally:
        gateway.stop()
        flag.close()


@pytest.mark.parametrize("slice_us,yields", [(0.001, True), (0.0, False)])
def test_gateway_offers_the_cpu_after_each_slice_of_work(tmp_path, journal, monkeypatch, slice_us, yields):
    """cpu_slice_us: past a slice of work the gateway calls sched_yield at its next step
    (a slice of 1 ns: at every step); 0 never does. Either way every event arrives."""
    import time

    from gateways import base
    calls = []
    monkeypatch.setattr(base, "_sched_yield", lambda: calls.append(time.monotonic()))
    gateway = make_gateway(tmp_path, isolation="thread", cpu_slice_us=slice_us, heartbeat_ms=60_000)
    gateway.start()
    try:
        with Subscriber(gateway.endpoint, gateway.replay_endpoint) as sub:
            time.sleep(0.2)
            seqs = write_fills(journal, 1, 20, with_commands=False)
            got = collect(sub, 20)
        assert [e.seq for e in got] == seqs
    finally:
        gateway.stop()
    # 20 events: a step before reading, normalising and delivering, and one every 4 sent.
    assert (len(calls) >= 5) if yields else calls == []


# Symbols that prefix one another, one with a dot: what a prefix match confuses.
TOPIC_SYMBOLS = ("AAA", "AAAX", "AA", "BRK", "BRK.B")


def write_topic_events(journal) -> list[tuple[int, str, str | None]]:
    """A NEW and a fill per symbol of TOPIC_SYMBOLS, and an admin reply: ``[(seq, type, symbol)]``."""
    written = []
    for i, symbol in enumerate(TOPIC_SYMBOLS, 1):
        for kind, report in (("execution_report", new_ack(i)), ("fill", fill(i))):
            seq = journal.append_msg(RecordKind.EVENT, JournalEvent(
                session_id="s1", event=msgspec.structs.replace(report, symbol=symbol)))
            written.append((seq, kind, symbol))
    written.append((journal.append_msg(RecordKind.EVENT, JournalEvent(session_id="adm", event=admin(1))),
                    "admin", None))
    return written


TOPIC_CASES = [
    # (topics, which (type, symbol) the subscriber gets)
    ([b"fill.AAA"], lambda kind, symbol: kind == "fill" and symbol == "AAA"),
    ([b"fill.BRK"], lambda kind, symbol: kind == "fill" and symbol == "BRK"),
    ([b"fill.BRK.B"], lambda kind, symbol: kind == "fill" and symbol == "BRK.B"),
    ([b"fill."], lambda kind, symbol: kind == "fill"),
    ([b"fill"], lambda kind, symbol: kind == "fill"),
    ([b"admin"], lambda kind, symbol: kind == "admin"),
    ([b"fill.AA", b"execution_report"], lambda kind, symbol: (kind, symbol) == ("fill", "AA")
     or kind == "execution_report"),
]


@pytest.mark.parametrize("topics,wanted", TOPIC_CASES, ids=[b",".join(t).decode() for t, _ in TOPIC_CASES])
def test_topic_subscriber_compares_whole_topics_live(tmp_path, journal, topics, wanted):
    """A symbol is one whole topic (fill.AAA is not fill.AAAX, fill.BRK not fill.BRK.B);
    a topic ending in '.' or a type alone is every symbol of the type."""
    gateway = make_gateway(tmp_path, isolation="thread", heartbeat_ms=60_000)
    gateway.start()
    try:
        # No start_seq and no heartbeat: everything comes live from the PUB socket.
        with Subscriber(gateway.endpoint, gateway.replay_endpoint, topics=topics) as sub:
            time.sleep(0.2)  # subscribed before the first event is published
            written = write_topic_events(journal)
            assert gateway.wait_for(journal.last_seq, 10)
            expected = [seq for seq, kind, symbol in written if wanted(kind, symbol)]
            got = collect(sub, len(expected), timeout_s=5)
            got += sub.recv(timeout_ms=200)  # anything extra that followed
            assert [e.seq for e in got] == expected
            assert sub.replayed == 0
    finally:
        gateway.stop()


@pytest.mark.parametrize("topics,wanted", TOPIC_CASES, ids=[b",".join(t).decode() for t, _ in TOPIC_CASES])
def test_topic_subscriber_compares_whole_topics_on_replay(tmp_path, journal, topics, wanted):
    written = write_topic_events(journal)
    gateway = make_gateway(tmp_path, isolation="thread", heartbeat_ms=60_000)
    gateway.start()
    try:
        assert gateway.wait_for(journal.last_seq, 10)  # published before anyone listened
        with Subscriber(gateway.endpoint, gateway.replay_endpoint, topics=topics, start_seq=0) as sub:
            expected = [seq for seq, kind, symbol in written if wanted(kind, symbol)]
            got = collect(sub, len(expected), timeout_s=5)
            got += sub.recv(timeout_ms=100)
            assert [e.seq for e in got] == expected
            assert sub.replayed == len(expected)
    finally:
        gateway.stop()


def test_topic_filter_splits_whole_topics_from_prefixes():
    whole, prefixes = zmq_pub.topic_filter([b"fill.AAA", b"fill.", b"admin", b"execution_report.BRK.B"])
    assert whole == {b"fill.AAA", b"admin", b"execution_report.BRK.B"}
    assert prefixes == (b"fill.", b"admin.")


def test_a_port_held_for_a_moment_is_bound_once_it_is_free(tmp_path, journal):
    """An engine restarted at once after a crash: the old gateway child is being killed
    with its engine but has not released the port yet."""
    port = free_port()
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    threading.Timer(0.3, holder.close).start()
    gateway = make_gateway(tmp_path, isolation="thread", endpoint=f"tcp://127.0.0.1:{port}")
    started = time.monotonic()
    gateway.start()
    try:
        assert 0.2 < time.monotonic() - started < zmq_pub.BIND_RETRY_S
        assert gateway.endpoint == f"tcp://127.0.0.1:{port}"
        seqs = write_fills(journal, 1, 5)
        assert gateway.wait_for(seqs[-1], 10)
    finally:
        gateway.stop()


def test_a_port_that_stays_taken_still_fails(tmp_path, journal, monkeypatch):
    monkeypatch.setattr(zmq_pub, "BIND_RETRY_S", 0.2)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        gateway = make_gateway(tmp_path, isolation="thread", replay_endpoint=f"tcp://127.0.0.1:{port}")
        with pytest.raises(zmq.ZMQError) as info:
            gateway.start()
        assert info.value.errno == zmq.EADDRINUSE
        assert not gateway.running


def test_a_topic_subscriber_asks_for_no_replay_while_nothing_is_lost(tmp_path, journal):
    """Each heartbeat tells the topics published since the one before: a topic subscriber
    that lost nothing checks them, instead of replaying every heartbeat's whole range
    (which re-read and re-sent every event of its topics once more)."""
    gateway = make_gateway(tmp_path, isolation="thread", heartbeat_ms=20)
    gateway.start()
    try:
        with Subscriber(gateway.endpoint, gateway.replay_endpoint, topics=[b"fill.AAA"]) as sub:
            deadline = time.monotonic() + 5
            while sub.last_seq is None and time.monotonic() < deadline:
                sub.recv(timeout_ms=20)  # a heartbeat: subscribed, numbering known
            expected = []
            for batch in range(8):       # over several heartbeats
                written = write_mixed(journal, 1 + 40 * batch, 40)
                expected += [s for s, kind in written.items() if kind == "fill"]
                time.sleep(0.05)
            assert gateway.wait_for(journal.last_seq, 10)
            got = collect(sub, len(expected) // 2, timeout_s=5)
            got += sub.recv(timeout_ms=200)
            aaa = [e.seq for e in got]
            assert aaa and all(e.symbol == "AAA" and e.type == "fill" for e in got)
            assert aaa == sorted(set(aaa)) == [s for s in expected if s in set(aaa)]
            assert (sub.gaps, sub.replayed, sub.duplicates) == (0, 0, 0)
            assert gateway._replay.requests == 0
    finally:
        gateway.stop()


def test_a_topics_lost_last_event_is_found_from_the_heartbeat(tmp_path, journal):
    """The last event of a topic lost (nothing after it on that topic to show the hole): the
    next heartbeat names the topic's last seq and only that topic is replayed; a heartbeat
    missed (the next one's ``since`` past what the subscriber has) makes it replay the whole
    range since the last one."""
    from gateways.zmq_pub import HEARTBEAT_TOPIC, HeartbeatInfo
    written = write_mixed(journal, 1, 20)
    gateway = make_gateway(tmp_path, isolation="thread", heartbeat_ms=60_000)
    gateway.start()
    context = zmq.Context()
    req, pub = context.socket(zmq.REQ), context.socket(zmq.PUB)
    port = free_port()
    pub.bind(f"tcp://127.0.0.1:{port}")
    try:
        assert gateway.wait_for(journal.last_seq, 10)
        req.connect(gateway.replay_endpoint)
        req.send(msgspec.msgpack.encode({"from": 1, "to": 0}))
        _, *frames = req.recv_multipart()
        events = [(frames[i], HEADER.unpack(frames[i + 1])[0], frames[i + 2])
                  for i in range(0, len(frames), 3)]
        assert [seq for _, seq, _ in events] == sorted(written)
        encode = msgspec.msgpack.encode

        def heartbeat(since, head, topics):
            pub.send_multipart([HEARTBEAT_TOPIC, HEADER_V1.pack(head, head, 0),
                                encode(HeartbeatInfo(since, topics))])

        with Subscriber(f"tcp://127.0.0.1:{port}", gateway.replay_endpoint,
                        topics=[b"fill.AAA"]) as sub:
            deadline = time.monotonic() + 5
            while sub.last_seq is None and time.monotonic() < deadline:
                heartbeat(0, 0, {})   # (repeated until the subscription is in place)
                sub.recv(timeout_ms=20)
            aaa = [seq for topic, seq, _ in events if topic == b"fill.AAA"]
            lost = aaa[-1]
            prev, topic_prev, last_on = 0, {}, {}
            for topic, seq, payload in events:
                if seq != lost:  # published, then dropped on its way
                    pub.send_multipart([topic, HEADER_V1.pack(seq, prev, topic_prev.get(topic, 0)),
                                        payload])
                prev = topic_prev[topic] = last_on[topic.decode()] = seq
            heartbeat(0, prev, last_on)
            got = collect(sub, len(aaa), timeout_s=5)
            assert [e.seq for e in got] == aaa
            assert (sub.gaps, sub.replayed) == (1, 1)
            assert gateway._replay.requests == 2  # the test's own request, then fill.AAA's

            more = write_mixed(journal, 21, 5)  # none of them published at all
            assert gateway.wait_for(journal.last_seq, 10)
            # The heartbeat naming them lost: the next one starts after it.
            heartbeat(list(more)[-1], journal.last_seq, {})
            # Orders 21..25, each an acknowledgement and two fills; AAA is order 24's symbol.
            assert list(more.values()) == ["execution_report", "fill", "fill"] * 5
            expected = list(more)[3 * 3 + 1:3 * 3 + 3]
            got = collect(sub, 2, timeout_s=5)
            got += sub.recv(timeout_ms=100)
            assert [e.seq for e in got] == expected and {e.symbol for e in got} == {"AAA"}
            assert sub.last_seq == journal.last_seq
    finally:
        req.close()
        pub.close()
        context.term()
        gateway.stop()


def test_heartbeats_chain_and_name_each_topics_last_seq(tmp_path, journal):
    """Each heartbeat's ``since`` is the seq the one HEARTBEAT_WINDOW before carried, and its
    topics are those published in between, each with its last seq."""
    from gateways.zmq_pub import HEARTBEAT_TOPIC, HEARTBEAT_WINDOW, HeartbeatInfo
    decode = msgspec.msgpack.Decoder(HeartbeatInfo).decode

    def run(gateway, write):
        context = zmq.Context()
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        gateway.start()
        sub.connect(gateway.endpoint)
        beats, last_on = [], {}
        try:
            assert sub.poll(5000)
            written = write()
            assert gateway.wait_for(journal.last_seq, 10)
            deadline = time.monotonic() + 5
            while ((len(beats) <= HEARTBEAT_WINDOW or beats[-1][1] < journal.last_seq)
                   and time.monotonic() < deadline):
                if not sub.poll(1000):
                    continue
                topic, header, payload = sub.recv_multipart()
                if topic == HEARTBEAT_TOPIC:
                    beats.append((decode(payload), HEADER.unpack(header)[0]))
                else:
                    last_on[topic.decode()] = HEADER.unpack(header)[0]
        finally:
            gateway.stop()
            sub.close()
            context.term()
        return written, beats, last_on

    first = make_gateway(tmp_path, isolation="thread", heartbeat_ms=5)
    written, beats, last_on = run(first, lambda: write_mixed(journal, 1, 30))
    assert len(beats) > HEARTBEAT_WINDOW
    for (info, _), (_, before) in zip(beats[HEARTBEAT_WINDOW:], beats):
        assert info.since == before
    named = {}
    for info, head in beats:
        assert all(info.since < seq <= head for seq in info.topics.values())
        named.update(info.topics)
    # (the heartbeats the SUB socket got before its subscription took hold are not here)
    assert {t: s for t, s in last_on.items() if s > beats[0][0].since} == \
        {t: s for t, s in named.items() if s > beats[0][0].since}
    assert beats[-1][1] == max(written)


def test_a_topic_subscriber_crosses_a_gateway_restart_without_a_replay(tmp_path, journal):
    """The gateway killed after storing its cursor, then started again: its stored topics keep
    each topic's chain going and its first heartbeats start where the previous run's did, so a
    topic subscriber kept across the restart asks the replay service for nothing (before, each
    topic's first event and the first heartbeat sent it there), drops the events republished
    from the cursor by seq, and misses none."""
    gateway = make_gateway(tmp_path, isolation="thread", heartbeat_ms=20, cursor_interval_ms=0)
    gateway.start()
    with Subscriber(gateway.endpoint, gateway.replay_endpoint, topics=[b"fill.AAA"]) as sub:
        deadline = time.monotonic() + 5
        while sub.last_seq is None and time.monotonic() < deadline:
            sub.recv(timeout_ms=20)  # a heartbeat: subscribed
        # The subscriber's last heartbeat comes before every event (the next one "never"):
        # it has to cross the restart on the new run's heartbeats.
        gateway._last_heartbeat = float("inf")
        assert sub.last_seq == 0
        # Orders 1..60 below; AAA is the symbol of every fourth, each with two fills.
        write_mixed(journal, 1, 20)
        def stored_seq():  # (the file is written just after the batch is counted)
            try:
                return orjson.loads(gateway.cursor_path.read_bytes())["seq"]
            except FileNotFoundError:
                return None

        assert wait_until(lambda: stored_seq() == journal.last_seq, 10)
        stored = gateway.cursor_path.read_bytes()  # the last cursor file before the "kill"
        write_mixed(journal, 21, 20)   # published, and past the cursor file kept
        assert gateway.wait_for(journal.last_seq, 10)
        got = collect(sub, 20)
        assert (sub.gaps, sub.replayed, sub.duplicates) == (0, 0, 0)
        gateway.stop()
        gateway.cursor_path.write_bytes(stored)
        # (its first heartbeat goes before the SUB socket has reconnected: the next ones,
        # within HEARTBEAT_WINDOW, still start where the previous run's did)
        again = make_gateway(tmp_path, isolation="thread", heartbeat_ms=200,
                             endpoint=gateway.endpoint, replay_endpoint=gateway.replay_endpoint)
        again.start()
        try:
            deadline = time.monotonic() + 5
            while sub.last_seq == 0 and time.monotonic() < deadline:
                got += sub.recv(timeout_ms=20)  # reconnected: a heartbeat of the new run
            assert sub.last_seq > 0
            write_mixed(journal, 41, 20)
            assert again.wait_for(journal.last_seq, 10)
            got += collect(sub, 30 - len(got), timeout_s=5)
            got += sub.recv(timeout_ms=200)
            assert (sub.gaps, sub.replayed) == (0, 0)
            assert again._replay.requests == 0
            # Against the journal: every AAA fill once, in order.
            with Subscriber(again.endpoint, again.replay_endpoint, topics=[b"fill.AAA"],
                            start_seq=0) as check:
                expected = collect(check, 30, timeout_s=5)
            assert len(expected) == 30 and {e.symbol for e in expected} == {"AAA"}
            assert [e.seq for e in got] == [e.seq for e in expected]
        finally:
            again.stop()


def test_endpoints_open_to_other_hosts_are_warned_about(tmp_path, journal, caplog):
    """Neither socket authenticates: bound beyond loopback, anyone reaching them reads every
    account's events. The docs' own example binds 0.0.0.0; the start now says so."""
    import logging
    from gateways.config import reachable_from_afar as _reachable_from_afar
    assert [_reachable_from_afar(e) for e in (
        "tcp://0.0.0.0:1", "tcp://[::]:1", "tcp://10.1.2.3:1", "tcp://eth0:1", "tcp://127.0.0.1:1",
        "tcp://[::1]:1", "tcp://localhost:1", "ipc:///tmp/x", "inproc://x")] == \
        [True, True, True, True, False, False, False, False, False]
    for host, warned in (("127.0.0.1", False), ("0.0.0.0", True)):
        caplog.clear()
        gateway = make_gateway(tmp_path / host, isolation="thread", endpoint=f"tcp://{host}:0",
                               replay_endpoint="tcp://127.0.0.1:0", allow_plaintext=True)
        with caplog.at_level(logging.WARNING, logger="gateways.zmq_pub"):
            gateway.start()
            gateway.stop()
        lines = [r.getMessage() for r in caplog.records if "unauthenticated" in r.getMessage()]
        assert bool(lines) == warned
        if warned:
            assert gateway.endpoint in lines[0] and gateway.replay_endpoint not in lines[0]


def test_the_open_endpoints_warning_is_written_at_any_level(tmp_path, journal, capsys):
    """At [logging] level = "ERROR" the warning went unsaid, while the plaintext intake's,
    the same kind of exposure, is written whatever the level (audit)."""
    import logging
    gateway = make_gateway(tmp_path / "quiet", isolation="thread", endpoint="tcp://0.0.0.0:0",
                           replay_endpoint="tcp://127.0.0.1:0", allow_plaintext=True)
    logger = logging.getLogger("gateways.zmq_pub")
    root, level = logging.getLogger(), logger.level
    saved = root.handlers[:]
    root.handlers = []                  # no logging set up: the line goes to stderr
    logger.setLevel(logging.ERROR)
    try:
        gateway.start()
        gateway.stop()
    finally:
        logger.setLevel(level)
        root.handlers = saved
    assert "take unauthenticated connections from other hosts" in capsys.readouterr().err


def test_a_subscriber_follows_a_journal_made_anew_from_its_first_seq(tmp_path):
    # A journal made anew numbers from 1 again. The ZeroMQ stream carried no journal
    # identity: a subscriber kept across the engine's restart on a new journal (its SUB
    # socket reconnects by itself) dropped the new journal's events as repeats, up to the
    # old journal's last seq, and one resuming from a stored seq skipped them, both in
    # silence. Headers and replay answers now name the journal.
    import shutil
    from engine.journal import journal_identity
    from tests.unit.gateways.helpers import new_journal
    new_journal(tmp_path, 30)  # fills at seqs 2, 4, ..., 60 (each after its command)
    old = journal_identity(tmp_path / "journal")
    gateway = make_gateway(tmp_path)
    gateway.start()
    endpoints = {"endpoint": gateway.endpoint, "replay_endpoint": gateway.replay_endpoint}
    with Subscriber(gateway.endpoint, gateway.replay_endpoint, start_seq=0) as sub:
        try:
            assert [e.seq for e in collect(sub, 30)] == list(range(2, 61, 2))
            assert (sub.journal, sub.journal_changes) == (old, 0)
        finally:
            gateway.stop()
        new_journal(tmp_path, 10)  # seqs 2, 4, ..., 20 of another journal
        new = journal_identity(tmp_path / "journal")
        assert new != old
        shutil.rmtree(tmp_path / "gw")  # (the gateways' cursors live in the journal's directory)
        again = make_gateway(tmp_path, **endpoints)
        again.start()
        try:
            got = collect(sub, 10)
            assert [e.seq for e in got] == list(range(2, 21, 2))
            assert [e.exec_id for e in got] == [f"E{i}" for i in range(1, 11)]
            assert (sub.journal, sub.journal_changes) == (new, 1)
            # A consumer that stored (journal, seq) of the old journal and starts again.
            with Subscriber(again.endpoint, again.replay_endpoint, start_seq=60,
                            start_journal=old) as resumed:
                assert [e.seq for e in collect(resumed, 10)] == list(range(2, 21, 2))
                assert (resumed.journal, resumed.journal_changes) == (new, 1)
            # One that stored this journal's: nothing again.
            with Subscriber(again.endpoint, again.replay_endpoint, start_seq=20,
                            start_journal=new) as current:
                assert collect(current, 1, timeout_s=0.5) == []
                assert current.journal == new
        finally:
            again.stop()


def test_the_header_names_the_journal_and_a_24_byte_header_is_still_read():
    # (an older gateway's header has no journal: the subscriber then checks none)
    journal = "0188f2a1b2c3d4e5"
    assert zmq_pub.unpack_header(HEADER.pack(5, 4, 3, zmq_pub.journal_number(journal))) == \
        (5, 4, 3, journal)
    assert zmq_pub.unpack_header(HEADER_V1.pack(5, 4, 3)) == (5, 4, 3, None)
    assert zmq_pub.journal_number(None) == zmq_pub.journal_number("not hex") == 0
