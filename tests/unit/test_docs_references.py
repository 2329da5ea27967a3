"""Every Python name the user documentation gives in full (`engine.client.ClientClosedError`,
`sim.backtest.remove_outputs`, ...) can be imported: a rename must take its docs along."""
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEXT = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
NAMES = sorted(set(re.findall(r"`((?:engine|sim|gateways|ext|benchmarks)\.[A-Za-z_][A-Za-z0-9_.]*[A-Za-z0-9_])`", TEXT)))


def test_the_docs_name_python_objects():
    assert len(NAMES) > 50


@pytest.mark.parametrize("name", NAMES)
def test_a_documented_name_exists(name):
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[i:]:
            assert hasattr(obj, attribute), f"{name}: {'.'.join(parts[:i])} has no {attribute}"
            obj = getattr(obj, attribute)
        return
    pytest.fail(f"{name}: no module of it can be imported")


def test_the_readme_layout_links_every_document():
    """README's `docs/` row lists the user documentation: every docs/*.md (benchmarks.md was
    missing from it)."""
    row = next(line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
               if line.startswith("| `docs/` |"))
    assert [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"(docs/{p.name})" not in row] == []
