"""A ``Reject`` of a request that carries a ``req_id`` (``TradeHistoryRequest``, ``KillSwitch``,
``ReloadLimits``) names it, so a client with several such requests in flight knows which one
was refused. Before, it carried ``ref_type`` alone: two history requests in flight, one
refused, and the client could not tell which. Real engine, real sockets."""
import time

from engine.client import Client
from engine.messages import (
    KillSwitch, Reject, RejectReason, TradeHistoryReply, TradeHistoryRequest,
)
from tests.integration.engine_harness import ThreadedEngine, engine_config, serving


def answer_to(client, req_id):
    """The answer naming ``req_id``: its ``Reject`` or the last part of its reply."""
    return client.recv_until(lambda m: getattr(m, "req_id", None) == req_id
                             and (not isinstance(m, TradeHistoryReply) or m.last), 5)[-1]


def test_rejects_of_requests_with_a_req_id_name_it(tmp_path):
    now = time.time_ns()
    with serving(tmp_path, intake="request_rate = 5\nrequest_burst = 5") as (engine, endpoint), \
            Client(endpoint) as client:
        client.send(TradeHistoryRequest(req_id="h-ok", account="DEMO1", start_time=0,
                                        end_time=now))
        client.send(TradeHistoryRequest(req_id="h-not-mine", account="NOPE", start_time=0,
                                        end_time=now))
        client.send(TradeHistoryRequest(req_id="h-backwards", account="DEMO1", start_time=now,
                                        end_time=0))
        assert isinstance(answer_to(client, "h-ok"), TradeHistoryReply)
        refused = answer_to(client, "h-not-mine")
        assert isinstance(refused, Reject) and refused.reject_reason == RejectReason.NOT_AUTHORIZED
        refused = answer_to(client, "h-backwards")
        assert isinstance(refused, Reject) and refused.reject_reason == RejectReason.INVALID_FIELD
        assert refused.ref_type == "TradeHistoryRequest" and refused.cl_ord_id is None
        # Past the key's request rate: THROTTLED, outside the numbering, still named.
        for i in range(10):
            client.send(TradeHistoryRequest(req_id=f"h{i}", account="DEMO1", start_time=0,
                                            end_time=now))
        throttled = [m for m in client.drain(1.0)
                     if isinstance(m, Reject) and m.reject_reason == RejectReason.THROTTLED]
        assert throttled and all(m.req_id and m.req_id.startswith("h") for m in throttled)
        assert len({m.req_id for m in throttled}) == len(throttled)


def test_an_admin_request_from_a_key_without_admin_is_refused_by_its_req_id(tmp_path):
    path, endpoint = engine_config(tmp_path)
    path.write_text(path.read_text().replace("plaintext_admin = true", "plaintext_admin = false"))
    with ThreadedEngine(path), Client(endpoint) as client:
        client.send(KillSwitch(req_id="k1", action="engage", scope="global"))
        refused = answer_to(client, "k1")
        assert isinstance(refused, Reject) and refused.reject_reason == RejectReason.NOT_AUTHORIZED
        assert refused.ref_type == "KillSwitch"
