"""Refused CURVE handshakes are logged, but not one line each without end (security audit:
2,198 lines in 6 s from a client retrying an unknown key, each naming a key the sender
chose)."""
import logging
import types

import engine.intake as intake
from engine.intake import _CredentialsProvider


def test_refusals_past_the_burst_are_counted_in_one_line(monkeypatch, caplog):
    clock = [100.0]
    monkeypatch.setattr(intake.time, "monotonic", lambda: clock[0])
    provider = _CredentialsProvider(types.SimpleNamespace(_entitlements={"KNOWN": ()}))
    with caplog.at_level(logging.WARNING, logger="engine.intake"):
        assert provider.callback("global", b"KNOWN")
        for k in range(25):
            assert not provider.callback("global", f"K{k:02d}".encode())
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 10 and lines[0] == ("intake: refused CURVE key K00 (not in the "
                                                 "allow-list)")
        clock[0] += 3600.0                       # the next window: the count, then the key
        assert not provider.callback("global", b"LATE")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[10:] == ["intake: refused CURVE handshakes (keys not in the allow-list): 15 more "
                          "within 10 s of the first logged, not each logged",
                          "intake: refused CURVE key LATE (not in the allow-list)"]

