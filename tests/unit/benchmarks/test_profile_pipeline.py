"""profile_pipeline.py: the in-process profiling harness runs and counts what it says."""
import uvloop

from benchmarks import profile_pipeline
from benchmarks.bench_e2e import orders as encoded_orders
from engine.messages import request_decoder


def test_whole_engine_and_stub_lifecycle_answer_every_order_twice():
    whole = uvloop.run(profile_pipeline.main(60, None, True, 10))
    stub = uvloop.run(profile_pipeline.main(60, None, True, 10, stub=True))
    # The benchmark's orders are half marketable (NEW then FILL) and half
    # far passive IOC (NEW then CANCELED): two messages each, as the stub sends.
    assert whole["messages_per_order"] == 2.0
    assert stub["messages_per_order"] == 2.0
    assert stub["stub_lifecycle"] is True and whole["stub_lifecycle"] is False


def test_stub_lifecycle_journals_the_command_and_both_reports(tmp_path):
    sent = []

    class Session:
        session_id, principal, client_name, dropped = "S1", "", "plaintext", False  # as intake's

        def send(self, msg):
            sent.append(msg)
            return len(sent)

    async def run():
        from engine.service import EngineService
        service = EngineService(profile_pipeline._config(tmp_path))
        await service.start()
        try:
            pipe = service.pipeline
            profile_pipeline.stub_lifecycle(pipe)
            before = pipe.journal._last_seq
            request = request_decoder().decode(encoded_orders(1, "stub")[0])
            pipe.handle(Session(), request)
            return pipe.journal._last_seq - before
        finally:
            await service.stop()

    records = uvloop.run(run())
    assert records == 1  # the command (the stand-in session journals nothing itself)
    assert [r.exec_type.name for r in sent] == ["NEW", "FILL"]
