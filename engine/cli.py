"""``kronos-exec``: the one command-line entry point.

Each sub-command lives in the module that owns the feature and is imported
only when run, so ``kronos-exec --version`` stays fast and a sub-command's
heavy imports (matplotlib, pyarrow) cost nothing elsewhere. A module named in
COMMANDS provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from engine import __version__

#: sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("engine.cmd_demo", "run the engine on its simulator and send it a few orders"),
    "serve": ("engine.cmd_serve", "run the engine (default: on the embedded simulator)"),
    "book-demo": ("engine.cmd_book_demo", "replay a small deterministic order stream through the book"),
    "journal": ("engine.cmd_journal", "verify a journal's checksums and hash chain, export it to Parquet, "
                "or checkpoint its replay"),
    "keys": ("engine.cmd_keys", "generate CURVE key pairs for the intake endpoints, or show a public key"),
    "client": ("engine.cmd_client", "send one request to a running engine and print the answers"),
    "sim": ("sim.cmd_sim", "run a backtest: parent orders, an execution strategy, simulated venues"),
    "bench": ("benchmarks.harness", "run every benchmark and write bench-report/ (report, plots, results.json)"),
    "loadgen": ("benchmarks.cmd_loadgen", "offer open-loop new/cancel/replace load to a running engine, HDR latencies"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(prog="kronos-exec", description="Kronos Exec order execution engine")
    parser.add_argument("--version", action="version", version=f"kronos-exec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        # add_help=False: "--help" goes on to the module's own parser.
        command = sub.add_parser(name, help=help_text, description=help_text, add_help=False)
        command.set_defaults(_module=module_name)
        # Arguments are declared by the owning module; importing it here is
        # deferred until the sub-command is chosen.
        command.set_defaults(_name=name)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen sub-command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # First pass only finds the sub-command; its module then declares the rest.
    args, _ = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    sub_parser = argparse.ArgumentParser(prog=f"kronos-exec {args.command}",
                                         description=COMMANDS[args.command][1])
    module.add_arguments(sub_parser)
    sub_args = sub_parser.parse_args(argv[argv.index(args.command) + 1:])
    return int(module.run(sub_args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
