"""A TradeHistoryRequest is answered with at most ``[history] max_fills_per_request`` fills.

Before, one request was answered with every fill of its range the engine held, up to
``max_fills_per_account`` (a million by default): some 2,000 messages of 500 fills,
each kept in the session's resend ring and journaled, for every such request (the
journal keeps every message sent) -- within ``intake.request_rate``, which was meant to
keep a key's queries from growing the journal. Now the oldest fills of the range come,
cut between two fill times, and ``next_start_time`` says where the rest begins.
"""
import time

from engine.client import Client
from engine.journal import JournalReader
from engine.messages import ExecType, ExecutionReport, TradeHistoryReply
from ext.types import Side
from tests.integration.engine_harness import serving

FILLS = 120


def _traded(engine, client):
    """FILLS fills of DEMO1: a buy sweeping FILLS one-lot offers of another account."""
    market = engine.service.venues.market

    def offers():
        for _ in range(FILLS):
            market.submit("NEXA", "AAA", Side.SELL, 1, 5000, account=77)
    engine.call(offers)
    time.sleep(0.3)  # the venue's book reaches the router
    client.new_order("AAA", "buy", str(FILLS), "50.00", account="DEMO1", cl_ord_id="sweep")
    client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == "sweep"
                      and m.exec_type == ExecType.FILL, 10)


def _answer(client, req_id):
    """The parts of one answer, up to its last."""
    parts = client.recv_until(lambda m: isinstance(m, TradeHistoryReply) and m.req_id == req_id
                              and m.last, 5)
    return [m for m in parts if isinstance(m, TradeHistoryReply) and m.req_id == req_id]


def test_a_history_answer_is_one_bounded_page_and_the_pages_cover_the_range(tmp_path):
    with serving(tmp_path, extra="[history]\nmax_fills_per_request = 50\n") as (engine, endpoint), \
            Client(endpoint) as client:
        _traded(engine, client)
        start, seen, pages = 0, [], 0
        while True:
            parts = _answer(client, client.history("DEMO1", start, 2**63 - 1))
            page = [f for part in parts for f in part.fills]
            assert 0 < len(page) <= 50 and parts[-1].complete
            assert {part.next_start_time for part in parts} == {parts[-1].next_start_time}
            seen += page
            pages += 1
            start = parts[-1].next_start_time
            if not start:
                break
            assert all(f.transact_time < start for f in page)
        assert pages >= 3
        assert len({f.exec_id for f in seen}) == len(seen) == FILLS
        assert sum(int(f.last_qty) for f in seen) == FILLS


def test_a_repeated_history_request_costs_the_journal_a_page(tmp_path):
    with serving(tmp_path) as (engine, endpoint), Client(endpoint) as client:
        engine.service.pipeline.history.max_fills_per_request = 10  # (the bound, lowered)
        _traded(engine, client)
        time.sleep(0.2)
        before = sum(1 for _ in JournalReader(tmp_path / "journal"))
        for n in range(20):
            (answer,) = _answer(client, client.history("DEMO1", 0, 2**63 - 1, req_id=f"h{n}"))
            assert len(answer.fills) <= 10 and answer.next_start_time
        time.sleep(0.2)  # (fsync none: let the writer's write land)
        added = list(JournalReader(tmp_path / "journal"))[before:]
        # A command and one reply of at most 10 fills per request: some 2 KB each
        # (before: every one of the FILLS fills, about 18 KB a request).
        assert len(added) <= 2 * 20
        assert sum(len(r.payload) for r in added) < 20 * 3_000


def test_the_command_line_client_prints_every_page(tmp_path):
    """`kronos-exec client history` asks again from each answer's ``next_start_time``: an
    operator asking for an account's fills gets them all, a reply line per page (it
    printed the first page only, with nothing but ``next_start_time`` saying more were
    left out)."""
    import subprocess
    import sys

    import orjson

    with serving(tmp_path, extra="[history]\nmax_fills_per_request = 50\n") as (engine, endpoint), \
            Client(endpoint) as client:
        _traded(engine, client)
        done = subprocess.run([sys.executable, "-m", "engine.cli", "client", "--endpoint", endpoint,
                               "--wait", "1.0", "history", "--account", "DEMO1"],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    replies = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert len(replies) >= 3 and {r["type"] for r in replies} == {"TradeHistoryReply"}
    assert [r["next_start_time"] == 0 for r in replies] == [False] * (len(replies) - 1) + [True]
    fills = [f for r in replies for f in r["fills"]]
    assert len({f["exec_id"] for f in fills}) == len(fills) == FILLS
