"""``kronos-exec demo``: the main job on the embedded default, needing no outside service.

Until the engine service lands this is the order book demo; it becomes the
engine on its simulated venues with a client sending orders.
"""
from __future__ import annotations

import argparse

from engine import cmd_book_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Same options as the book demo."""
    cmd_book_demo.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    return cmd_book_demo.run(args)
