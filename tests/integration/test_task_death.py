"""A background task of the engine that dies of an error is logged when it dies, and the
engine's stop still runs to its end.

Audit (stop 33): the router's clock raised; ``/healthz`` turned 503, but nothing was
logged, and at the next stop ``cancel_and_wait`` raised the old error again, so the
stop ended there: the journal was neither sealed nor closed, the sockets stayed open.
"""
import logging
import time

from engine.client import Client
from engine.journal import JournalReader
from engine.messages import ExecType, ExecutionReport
from tests.integration.engine_harness import serving


def test_a_dead_router_clock_is_logged_and_the_stop_completes(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with serving(tmp_path) as (engine, endpoint):
        with Client(endpoint) as client:
            client.new_order("AAA", "buy", "1", "47.50", account="DEMO1", cl_ord_id="o1")
            client.recv_until(lambda m: isinstance(m, ExecutionReport)
                              and m.exec_type == ExecType.NEW, 5)

        def boom(now):
            raise RuntimeError("injected failure in pipeline.tick")
        engine.call(lambda: setattr(engine.service.pipeline, "tick", boom))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not [
                r for r in caplog.records if "router's clock" in r.getMessage()]:
            time.sleep(0.02)
        died = [r for r in caplog.records if "router's clock" in r.getMessage()]
        assert died and died[0].levelno == logging.ERROR
        assert "injected failure" in died[0].getMessage() and died[0].exc_info
        assert engine.service._health()[1] == "not serving: the router's clock has stopped"
    messages = [r.getMessage() for r in caplog.records]
    assert "engine: stopped" in messages
    assert engine.service.journal._closed
    # Sealed: the durable mark is the journal's last record, not "unsynced".
    last = max(record.seq for record in JournalReader(tmp_path / "journal"))
    assert (tmp_path / "journal" / "durable.seq").exists()
    assert engine.service.journal.durable_seq == last


def test_the_recovery_summary_is_fields_of_the_log_record(tmp_path, caplog):
    """Audit (stop 33): the summary was a Python dict's repr inside the message, which a JSON
    log's readers could not take apart."""
    import json

    from engine.metrics import JsonFormatter
    caplog.set_level(logging.INFO, logger="engine.recovery")
    with serving(tmp_path) as (_, endpoint), Client(endpoint) as client:
        client.new_order("AAA", "buy", "1", "47.50", account="DEMO1", cl_ord_id="o1")
        client.recv_until(lambda m: isinstance(m, ExecutionReport), 5)
    with serving(tmp_path):
        pass
    record = next(r for r in caplog.records if r.getMessage().startswith("recovery: "))
    line = json.loads(JsonFormatter().format(record))
    assert line["recovered_orders"] == 1 and line["recovered_records"] > 1
    assert line["msg"].startswith("recovery: records ")
