"""The exact texts of a kill switch: the admin's answer, the canceled order's text, the log line.

A global switch has no target; its texts used to leave the target's space
behind ("kill switch engaged (global )").
"""
import logging
import time

import pytest

from engine.client import Client
from engine.messages import AdminReply, ExecType, ExecutionReport, KillSwitch
from engine.pipeline import kill_switch_scope
from tests.integration.engine_harness import serving, slow_sim


@pytest.mark.parametrize("scope,target,named", [
    ("global", None, "global"),
    ("global", "", "global"),
    ("account", "DEMO1", "account DEMO1"),
    ("symbol", "AAA", "symbol AAA"),
])
def test_a_scope_is_named_without_a_dangling_space(scope, target, named):
    assert kill_switch_scope(scope, target) == named


def _report(cl_ord_id, exec_type):
    """A predicate: the execution report of ``cl_ord_id`` with ``exec_type``."""
    return lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id \
        and m.exec_type == exec_type


def _admin_reply(m):
    return isinstance(m, AdminReply)


def _collect(client, *wanted, timeout=5.0):
    """The first message matching each of ``wanted``, in that order, whatever order they come in."""
    deadline = time.monotonic() + timeout
    received = []
    while not all(any(w(m) for m in received) for w in wanted):
        received.append(client.recv(max(0.0, deadline - time.monotonic())))
    return [next(m for m in received if w(m)) for w in wanted]


@pytest.mark.parametrize("scope,target,named", [
    ("global", None, "global"),
    ("account", "DEMO1", "account DEMO1"),
])
def test_kill_switch_texts_over_a_running_engine(tmp_path, caplog, scope, target, named):
    caplog.set_level(logging.WARNING, logger="engine.pipeline")
    caplog.set_level(logging.WARNING, logger="kronos.risk")
    # Venues 300 ms away keep the pull in flight while the Replace arrives: it is
    # refused with the pull's own text (pipeline._pull).
    with serving(tmp_path, sim=slow_sim(tmp_path, 300_000)) as (_, endpoint), \
            Client(endpoint) as client:
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="k1")
        _collect(client, _report("k1", ExecType.NEW))
        client.drain(0.8)  # resting at its venue
        client.send(KillSwitch(req_id="engage", action="engage", scope=scope, target=target))
        client.replace("k1", account="DEMO1", qty="5", cl_ord_id="k1-r")
        engaged, refused, canceled = _collect(client, _admin_reply,
                                              _report("k1-r", ExecType.REJECTED),
                                              _report("k1", ExecType.CANCELED))
        client.send(KillSwitch(req_id="release", action="release", scope=scope, target=target))
        [released] = _collect(client, _admin_reply)
    assert engaged.ok and engaged.text == f"kill switch engaged ({named}); 1 working orders canceled"
    assert refused.reject_name == "KILL_SWITCH"
    assert refused.text == f"canceled: kill switch engaged ({named})"
    # The pulled order's own report says why it was canceled.
    assert canceled.text == f"canceled: kill switch engaged ({named})"
    assert released.ok and released.text == f"kill switch released ({named})"
    risk_lines = [r.getMessage() for r in caplog.records if r.name == "kronos.risk"]
    target_part = f" {target}" if target else ""
    assert risk_lines[-2:] == [f"risk kill_switch_engage {scope}{target_part}",
                               f"risk kill_switch_release {scope}{target_part}"]
    lines = [r.getMessage() for r in caplog.records if r.name == "engine.pipeline"]
    assert len(lines) == 2
    for line, text in zip(lines, (engaged.text, released.text)):
        assert line.startswith("kill switch by ") and line.endswith(f": {text}")


@pytest.mark.parametrize("scope,target,named", [
    ("global", None, "global"),
    ("symbol", "AAA", "symbol AAA"),
])
def test_a_refused_order_names_the_switch_as_a_release_would(tmp_path, scope, target, named):
    """Risk named the switches by its own layers ("(firm)", "(instrument AAA)"), not as a
    KillSwitch does ("global", "symbol AAA"); and a release of a switch that was not
    engaged, or a second engage, answered as if it had changed something."""
    def admin(action):
        client.send(KillSwitch(req_id=action, action=action, scope=scope, target=target))
        return _collect(client, _admin_reply)[0].text

    with serving(tmp_path) as (_, endpoint), Client(endpoint) as client:
        assert admin("engage") == f"kill switch engaged ({named}); 0 working orders canceled"
        assert admin("engage") == (f"kill switch engaged ({named}); 0 working orders canceled; "
                                   f"it was engaged already")
        client.new_order("AAA", "buy", "10", "48.00", account="DEMO1", cl_ord_id="k1")
        [refused] = _collect(client, _report("k1", ExecType.REJECTED))
        assert refused.reject_name == "KILL_SWITCH"
        assert f"kill switch engaged ({named}); no new orders" in refused.text
        assert admin("release") == f"kill switch released ({named})"
        assert admin("release") == f"kill switch released ({named}); it was not engaged"
