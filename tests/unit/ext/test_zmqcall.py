"""ext.zmqcall against pyzmq on real sockets: the same messages, the same errors."""
import os
import time

import pytest
import zmq

from ext import zmqcall


@pytest.fixture
def pair():
    """A bound ROUTER and a connected DEALER that has introduced itself (its route)."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    dealer.send(b"hello")
    assert router.poll(5000)
    route, hello = router.recv_multipart()
    assert hello == b"hello"
    yield router, dealer, route
    router.close(0)
    dealer.close(0)
    ctx.term()


def wait_input(handle, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not zmqcall.has_input(handle):
        assert time.monotonic() < deadline, "no message arrived"
        time.sleep(0.001)


def test_send_pair_reaches_the_dealer_as_pyzmq_would(pair):
    router, dealer, route = pair
    assert zmqcall.send_pair(router.underlying, route, b"report-1") == 0
    assert zmqcall.send_pair(router.underlying, route, bytearray(b"report-2")) == 0  # a reused buffer
    assert zmqcall.send_pair(router.underlying, route, b"") == 0  # an empty frame is a message too
    assert zmqcall.send_pair(router.underlying, route, memoryview(b"xreport-3")[1:]) == 0
    with pytest.raises((ValueError, TypeError, BufferError)):  # not C-contiguous: nothing sent
        zmqcall.send_pair(router.underlying, route, memoryview(b"report-4")[::2])
    with pytest.raises(TypeError):
        zmqcall.send_pair(router.underlying, route, None)
    assert dealer.poll(5000)
    assert [dealer.recv_multipart() for _ in range(4)] == [[b"report-1"], [b"report-2"], [b""],
                                                           [b"report-3"]]


def test_recv_message_gives_every_part_and_none_when_empty(pair):
    router, dealer, route = pair
    handle = router.underlying
    assert zmqcall.recv_message(handle, False) is None
    assert not zmqcall.has_input(handle)
    dealer.send_multipart([b"a", b"bb", b"x" * 100_000])
    wait_input(handle)
    parts, user_id, fd = zmqcall.recv_message(handle, True)
    assert parts == [route, b"a", b"bb", b"x" * 100_000]
    assert user_id == ""  # no ZAP handler: no User-Id
    # The connection's own descriptor: a TCP socket of this process.
    assert os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    assert zmqcall.recv_message(handle, False) is None


def test_recv_message_copies_only_the_first_parts_of_a_long_message(pair):
    """A message of thousands of parts, each under the frame limit, was copied whole into
    the engine (audit: 60,000 parts of 16 KB, 1.7 GB) before intake refused it. Past the
    first four, a part is counted, not copied."""
    router, dealer, route = pair
    handle = router.underlying
    dealer.send_multipart([b"a", b"bb", b"ccc"] + [b"x" * 1000] * 500)
    wait_input(handle)
    parts, _, _ = zmqcall.recv_message(handle, False)
    assert len(parts) == 504 and parts[:4] == [route, b"a", b"bb", b"ccc"]
    assert set(parts[4:]) == {b""}


def test_a_full_queue_is_again_and_a_gone_route_raises(pair):
    router, dealer, route = pair
    router.sndhwm = 1
    dealer.rcvhwm = 1
    dealer.setsockopt(zmq.RCVBUF, 1024)
    results = {zmqcall.send_pair(router.underlying, route, b"y" * 10_000) for _ in range(10_000)}
    assert results == {0, zmqcall.AGAIN}
    with pytest.raises(zmq.ZMQError) as caught:
        zmqcall.send_pair(router.underlying, b"no-such-peer", b"z")
    assert caught.value.errno == zmq.EHOSTUNREACH


def test_a_closed_socket_is_refused_not_touched():
    for call in (lambda: zmqcall.send_pair(0, b"r", b"f"), lambda: zmqcall.recv_message(0, False),
                 lambda: zmqcall.has_input(0)):
        with pytest.raises(zmq.ZMQError) as caught:
            call()
        assert caught.value.errno == zmq.ENOTSOCK
