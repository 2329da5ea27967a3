"""``[risk.sessions.<name>]`` limits apply to the sessions of the client key of that name.

The engine registered each session at risk under its random session id, which no
configured name can match: the table configured nothing. Sessions now take their
limits from the table of their key's name (``plaintext`` for plaintext endpoints).
"""
from engine.client import Client
from engine.messages import ExecutionReport, Reject
from tests.integration.engine_harness import serving

SESSION_LIMITS = """
[risk.sessions.plaintext]
throttle_rate = 1
throttle_burst = 2
"""


def answers(client, count, prefix="t"):
    got = []
    for n in range(count):
        cl_ord_id = f"{prefix}{n}"
        client.new_order("AAA", "buy", "1", "47.50", account="DEMO1", cl_ord_id=cl_ord_id)
        got.append(client.recv_until(lambda m: isinstance(m, (ExecutionReport, Reject))
                                     and m.cl_ord_id == cl_ord_id, 5)[-1])
    return [m.reject_name for m in got]


def test_the_plaintext_table_throttles_plaintext_sessions(tmp_path):
    with serving(tmp_path, extra=SESSION_LIMITS) as (_, endpoint), Client(endpoint) as client:
        # The firm allows 100,000/s; the key's table a burst of 2 at 1/s.
        assert answers(client, 3) == [None, None, "THROTTLED"]


def test_without_a_table_the_firm_throttle_applies(tmp_path):
    with serving(tmp_path) as (_, endpoint), Client(endpoint) as client:
        assert answers(client, 3) == [None, None, None]


def test_the_sessions_of_one_key_share_its_throttle(tmp_path):
    """A second connection of the same key is a new session, not a new allowance:
    were the bucket per session, each client here would get its burst of 2."""
    with serving(tmp_path, extra=SESSION_LIMITS) as (_, endpoint), \
            Client(endpoint) as first, Client(endpoint) as second:
        assert answers(first, 2) == [None, None]
        assert answers(second, 1, prefix="u") == ["THROTTLED"]
        # (each client learned its session id from its first request's probe)
        assert None is not first.session_id != second.session_id is not None


def test_a_throttled_replace_leaves_the_order_where_it_works(tmp_path):
    """The throttle was judged after the order's children came down: a replace over the
    client's rate pulled the order from its venue and routed it again (a new child, its
    queue priority lost) before the client heard THROTTLED."""
    from engine.messages import ExecType, OrderStatusReply
    with serving(tmp_path, extra=SESSION_LIMITS) as (_, endpoint), Client(endpoint) as client:
        client.new_order("AAA", "buy", "1", "47.50", account="DEMO1", cl_ord_id="o1")
        client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.exec_type == ExecType.NEW, 5)

        def children():
            client.status("r1", account="DEMO1")
            reply = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
            return [(c.child_id, c.done) for c in reply.children]

        client.replace("o1", account="DEMO1", qty="2", cl_ord_id="r1")  # the bucket's second token
        client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "r1"
                          and m.exec_type == ExecType.REPLACED, 5)
        before = children()
        assert before and not before[-1][1]
        client.replace("r1", account="DEMO1", qty="3", cl_ord_id="r2")  # none left
        refused = client.recv_until(lambda m: isinstance(m, (ExecutionReport, Reject))
                                    and m.cl_ord_id == "r2", 5)[-1]
        assert refused.reject_name == "THROTTLED" and refused.exec_type == ExecType.REJECTED
        assert "throttle of plaintext" in refused.text
        assert children() == before  # the same child, still working at its venue
