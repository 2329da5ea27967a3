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


def test_keys_show_says_when_a_file_is_not_a_key(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a certificate\n")
    out = kronos("keys", "show", str(bad))
    assert out.returncode == 1 and "is not a CURVE key file" in out.stderr
    assert "Traceback" not in out.stderr


def test_keys_generate_and_show(tmp_path):
    keys = tmp_path / "keys"
    out = kronos("keys", "generate", "algo-1", "--dir", str(keys), "--accounts", "ACC1,ACC2")
    assert out.returncode == 0, out.stderr
    public = out.stdout.split()[2]
    assert len(public) == 40  # Z85 of 32 bytes
    assert (keys / "algo-1.key_secret").stat().st_mode & 0o077 == 0
    shown = kronos("keys", "show", str(keys / "algo-1.key"))
    assert shown.returncode == 0 and shown.stdout.strip() == public
    # The printed table is valid configuration naming this key and its accounts.
    from engine.config import parse_config
    from engine.intake import client_public_key
    table = out.stdout[out.stdout.index("[[security.clients]]"):]
    server = kronos("keys", "generate", "server", "--dir", str(keys))
    assert server.returncode == 0, server.stderr
    cfg = parse_config(f"""
[intake]
endpoints = ["tcp://127.0.0.1:7999"]
[security]
server_secret_key_file = "{keys / 'server.key_secret'}"
{table}""", base_dir=tmp_path, source="printed")
    client = cfg.security.clients[0]
    assert client.name == "algo-1" and client.accounts == ["ACC1", "ACC2"]
    assert client_public_key(client) == public
    # An existing pair is never overwritten by accident.
    again = kronos("keys", "generate", "algo-1", "--dir", str(keys))
    assert again.returncode == 1 and "exists" in again.stderr
    assert kronos("keys", "show", str(keys / "algo-1.key")).stdout.strip() == public


def test_serve_refuses_a_duration_that_is_not_a_positive_number():
    # `--duration nan` started the engine, then broke its loop with the journal
    # lock and the ports held and SIGTERM ignored; -1 stopped it at once.
    for duration in ("nan", "-1", "0", "soon"):
        out = kronos("serve", "--duration", duration)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert "argument --duration" in out.stderr and repr(duration) in out.stderr


# ---------------------------------------------------------------- the documentation
def _docs_text() -> str:
    from pathlib import Path
    root = Path(__file__).resolve().parents[3]
    return "\n".join(p.read_text(encoding="utf-8")
                     for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))])


def _command_options() -> dict[str, set[str]]:
    """Each sub-command's long options, its sub-sub-commands' included (what --help lists)."""
    import argparse
    import importlib
    from engine.cli import COMMANDS

    def walk(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)
            elif action.help != argparse.SUPPRESS:
                yield from (o for o in action.option_strings if o.startswith("--") and o != "--help")

    options = {}
    for name, (module, _) in COMMANDS.items():
        parser = argparse.ArgumentParser(prog=f"kronos-exec {name}")
        importlib.import_module(module).add_arguments(parser)
        options[name] = set(walk(parser))
    return options


def test_every_option_of_every_command_is_documented():
    # docs (stop 40): demo's --pause, keys generate's --dir and bench's --loadgen were in
    # --help only. An option counts as documented when the docs name it, or its --no- form
    # with it (`--micro/--no-micro`).
    import re
    text = _docs_text()
    missing = sorted(f"{name} {option}" for name, options in _command_options().items()
                     for option in options
                     if not re.search(re.escape(option) + r"(?![\w-])", text))
    assert missing == []


def test_documented_command_lines_use_only_real_options():
    # Every `kronos-exec <command> ...` line of the docs (with its continuation lines).
    import re
    options = _command_options()
    text = _docs_text().replace("\\\n", " ")
    wrong, checked = [], 0
    for command, rest in re.findall(r"kronos-exec ([a-z-]+)([^\n`]*)", text):
        if command not in options:
            continue
        checked += 1
        rest = rest.split("#", 1)[0]
        for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest):
            if option not in options[command] | {"--help"}:
                wrong.append(f"kronos-exec {command} {option}")
    assert checked > 30 and wrong == []


def test_a_commands_one_line_help_names_each_of_its_actions():
    # docs (stop 40): `kronos-exec --help` said journal verifies or exports, and not that it
    # also checkpoints.
    import argparse
    import importlib
    from engine.cli import COMMANDS
    for name, (module, help_text) in COMMANDS.items():
        parser = argparse.ArgumentParser()
        importlib.import_module(module).add_arguments(parser)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and action.dest == "action":
                assert [a for a in action.choices if a not in help_text] == [], name
