"""bench_recovery.py: a small run builds a multi-day journal, times both restarts, finds them
in the same state and ends with its JSON line; its request stream is seeded."""
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench_recovery

SCRIPT = Path(bench_recovery.__file__)


@pytest.mark.slow  # (six child processes: about 6 s)
def test_a_small_run_compares_both_restarts_and_ends_with_its_figures():
    done = subprocess.run([sys.executable, str(SCRIPT), "--orders-per-day", "300", "--days", "3",
                           "--repeat", "1"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "states compared: identical" in done.stdout
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("whole_replay_s", "checkpoint_restart_s", "ratio_vs_whole_replay",
                "checkpoint_write_s", "checkpoint_write_from_nothing_s", "checkpoint_bytes",
                "journal_records", "replay_records_per_s"):
        assert figures[key] > 0, key
    assert len(figures["checkpoint_write_per_roll_s"]) == 2  # a roll between two days
    # The restart replayed the last day only.
    assert 0 < figures["tail_records"] < figures["journal_records"]


def test_the_request_stream_is_seeded_and_mixed():
    from ext.instrument import Instrument

    def stream():
        resting: list = []
        instruments = {"AAA": Instrument("AAA"), "BBB": Instrument("BBB")}
        return bench_recovery.day_requests(random.Random(5), 0, 2_000, resting, instruments,
                                           {"AAA": 5000, "BBB": 12000}), resting
    (first, resting), (again, _) = stream(), stream()
    assert first == again
    from engine.messages import request_decoder
    decode = request_decoder().decode
    kinds = {type(decode(m)).__name__ for m in first}
    assert kinds == {"NewOrder", "Cancel", "Replace"}
    tifs = {decode(m).time_in_force for m in first if type(decode(m)).__name__ == "NewOrder"}
    assert len(tifs) == 3  # DAY, GTC, IOC
    assert resting and all(isinstance(o[0], str) for o in resting)
