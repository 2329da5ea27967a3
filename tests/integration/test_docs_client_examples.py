"""The Python client examples of docs/engine.md and docs/protocol.md run as written against the
embedded default engine and print what the docs say (only the endpoint differs: a free port)."""
import re
from pathlib import Path

from engine.config import parse_config
from engine.service import DEFAULT_CONFIG, EngineThread
from tests.integration.engine_harness import free_ports

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _example(doc: str, starts: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / doc).read_text(encoding="utf-8"), flags=re.S)
    [block] = [b for b in blocks if starts in b]
    lines = block.splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines if line.strip() != "...")


def _engine(tmp_path: Path) -> tuple[EngineThread, int]:
    port, pub, replay = free_ports(3)
    text = DEFAULT_CONFIG.read_text()
    for old, new in {"tcp://127.0.0.1:7001": f"tcp://127.0.0.1:{port}",
                     "tcp://127.0.0.1:7101": f"tcp://127.0.0.1:{pub}",
                     "tcp://127.0.0.1:7102": f"tcp://127.0.0.1:{replay}",
                     'dir = "data/journal"': f'dir = "{tmp_path / "journal"}"'}.items():
        assert old in text
        text = text.replace(old, new)
    return EngineThread(parse_config(text, base_dir=tmp_path)), port


def _run(example: str, port: int) -> list[str]:
    import contextlib
    import io
    assert "tcp://127.0.0.1:7001" in example
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example.replace("tcp://127.0.0.1:7001", f"tcp://127.0.0.1:{port}"),
                     "docs example", "exec"), {"__name__": "docs_example"})
    return out.getvalue().splitlines()


def test_the_engine_docs_client_example(tmp_path):
    engine, port = _engine(tmp_path)
    with engine:
        lines = _run(_example("engine.md", "from engine.client import Client\n"), port)
    # The order is acknowledged, then (a marketable buy on the embedded market) filled.
    assert lines[0] == "NEW 0 100 None None"
    assert re.fullmatch(r"FILL 100 0 \d+\.\d+ \w+", lines[-1]), lines


def test_the_protocol_docs_heartbeat_client_example(tmp_path):
    engine, port = _engine(tmp_path)
    with engine:
        [line] = _run(_example("protocol.md", "heartbeat_s=0.5"), port)
    # "seq 2: seq 1 answered the client's question for its session"
    assert line.startswith("ExecutionReport(") and "exec_type=<ExecType.NEW: 0>" in line
    assert re.search(r"\bseq=2\b", line)


def test_the_curve_walkthrough_of_protocol_md(tmp_path, monkeypatch):
    """*Security: CURVE*: keys made as step 1 says, the engine on step 3's file, step 4's client.

    Only the addresses differ: a free port for the endpoints (the ipc one under tmp_path), no
    metrics port (9464 may be another engine's on this machine).
    """
    from engine.intake import generate_keypair
    monkeypatch.chdir(tmp_path)
    for name in ("server", "algo-1"):
        generate_keypair("keys", name)
    text = (DOCS / "protocol.md").read_text(encoding="utf-8")
    section = text.split("## Security: CURVE", 1)[1]
    block = re.search(r"```toml\n(.*?)```", section, flags=re.S).group(1)
    block = "\n".join(line[3:] if line.startswith("   ") else line for line in block.splitlines())
    [port] = free_ports(1)
    for old, new in {"tcp://0.0.0.0:7001": f"tcp://127.0.0.1:{port}",
                     "ipc:///run/kronos/intake.sock": f"ipc://{tmp_path}/intake.sock"}.items():
        assert old in block
        block = block.replace(old, new)
    config = parse_config(block + "\n[metrics]\nport = 0\n", base_dir=tmp_path)
    example = _example("protocol.md", "load_client_keys").replace(
        "tcp://engine-host:7001", f"tcp://127.0.0.1:{port}")
    # "or from a shell: `kronos-exec client ...`" (the same step, wrapped over lines)
    shell = re.search(r"or from a shell: `(kronos-exec client .*?)`", section, flags=re.S).group(1)
    shell = " ".join(shell.split()).replace("tcp://engine-host:7001", f"tcp://127.0.0.1:{port}")
    with EngineThread(config):
        import contextlib
        import io
        import subprocess
        import sys
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(example, "protocol.md", "exec"), {"__name__": "docs_example"})
        run = subprocess.run([sys.executable, "-m", "engine.cli", *shell.split()[1:]],
                             capture_output=True, text=True, timeout=60)
    assert out.getvalue().startswith("HeartbeatAck(")
    assert run.returncode == 0, run.stderr
    assert '"exec_type":"NEW"' in run.stdout.splitlines()[0] and '"account":"ACC1"' in run.stdout
