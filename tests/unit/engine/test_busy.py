"""The engine's busy flag: raised by intake while it handles client messages, waited on by gateways."""
import threading
import time

import pytest

from engine.busy import FLAG_FILE, BusyFlag
from engine.config import IntakeConfig, SecurityConfig
from engine.intake import IntakeServer, IntakeThread
from engine.client import Client
from tests.unit.engine.test_intake import EchoHandler, order_for


def test_the_two_sides_see_one_byte(tmp_path):
    with pytest.raises(FileNotFoundError):
        BusyFlag.in_journal(tmp_path)  # no engine has made it
    engine = BusyFlag.in_journal(tmp_path, create=True)
    gateway = BusyFlag.in_journal(tmp_path)
    assert (tmp_path / FLAG_FILE).stat().st_size == 8
    assert not gateway.up
    engine.raise_()
    assert gateway.up
    engine.lower()
    assert not gateway.up and gateway.wait_down(1.0) == 0.0
    engine.close()
    gateway.close()


def test_waiting_is_bounded_and_ends_when_the_flag_drops(tmp_path):
    engine = BusyFlag.in_journal(tmp_path, create=True)
    gateway = BusyFlag.in_journal(tmp_path)
    engine.raise_()
    waited = gateway.wait_down(0.02)          # never lowered: the bound ends the wait
    assert 0.02 <= waited < 0.5
    threading.Timer(0.02, engine.lower).start()
    waited = gateway.wait_down(5.0)           # lowered after 20 ms: the wait ends then
    assert 0.015 <= waited < 2.0 and not gateway.up


class FlagWatchingHandler(EchoHandler):
    """Records whether the busy flag was up while each request was handled."""

    def __init__(self, flag):
        super().__init__()
        self.flag, self.seen = flag, []

    def handle(self, session, request, positions=None, held=(), encoded=None):
        self.seen.append(self.flag.up)
        super().handle(session, request, positions, held)


def test_intake_raises_the_flag_while_it_handles_messages(tmp_path):
    flag = BusyFlag.in_journal(tmp_path, create=True)
    handler = FlagWatchingHandler(BusyFlag.in_journal(tmp_path))
    server = IntakeServer(IntakeConfig(plaintext_endpoints=["tcp://127.0.0.1:*"],
                                       allow_plaintext=True),
                          SecurityConfig(plaintext_accounts=["ACC1"]), handler, busy=flag)
    thread = IntakeThread(server).start()
    try:
        with Client(server.plaintext_endpoints[0]) as client:
            for _ in range(5):
                client.send(order_for(client))
                client.recv(5)
        assert handler.seen == [True] * 5
        time.sleep(0.05)
        assert not flag.up  # lowered once the replies were handed over
    finally:
        thread.stop()
