"""The command-line entry point, run as a user runs it (a real subprocess)."""
import os
import subprocess
import sys

from engine import __version__


def kronos(*args):
    # A fixed width: the demo's tables wrap to the terminal.
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_version():
    out = kronos("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"kronos-exec {__version__}"


def test_book_demo_prints_fills_and_depth():
    out = kronos("book-demo")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    # Exact facts of the fixed stream: the IOC takes all 150 of #2 at 100.03,
    # the off-lot order is refused at the decimal boundary, and the final
    # book is 500 bid at 99.98 against 180 offered at 100.05.
    assert "OFF_LOT" in text and "POST_ONLY" in text and "CXL_FOK_UNFILLABLE" in text
    assert "│   6 │  #2 (acct │  #6 (acct │      BUY │ 100.03 │ 150 │" in text
    assert "│          1 │     500 │ 99.98 │ 100.05 │     180 │          1 │" in text


def test_unknown_command_fails():
    out = kronos("no-such-command")
    assert out.returncode != 0


def test_demo_runs_the_engine_on_the_simulator(tmp_path):
    out = subprocess.run([sys.executable, "-m", "engine.cli", "demo", "--pause", "0.2",
                          "--data-dir", str(tmp_path)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    text = out.stdout
    # Fills came back from the simulated venues, and each refused order names why.
    assert "FILLED" in text and "REPLACED" in text and "CANCELED" in text
    for reason in ("OFF_TICK", "MAX_ORDER_QTY", "INSUFFICIENT_POSITION"):
        assert reason in text
    assert (tmp_path / "journal").is_dir()
