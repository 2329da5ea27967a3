"""The Python examples in docs/sim.md run as written."""
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[3] / "docs" / "sim.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_doc_has_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("k", range(len(BLOCKS)))
def test_doc_example_runs(k, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[k], f"docs/sim.md[{k}]", "exec"), {"__name__": f"doc_example_{k}"})
    assert capsys.readouterr().out.strip()


def _documented_keys() -> dict[str, str]:
    """The *Configuration reference* table: full key -> default as written.

    A row may name several keys, the first in full and the rest after it within its section
    (`` `flow.lp_rate`, `cancel_rate` ``), with as many defaults, comma-separated.
    """
    table = DOC.read_text().split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    documented = {}
    for keys_cell, default in re.findall(r"^\| (`[^|]*) \|\s*([^|]*?)\s*\|", table, flags=re.M):
        keys = re.findall(r"`([^`]+)`", keys_cell)
        section = keys[0].rsplit(".", 1)[0]
        keys = [keys[0]] + [k if "." in k else f"{section}.{k}" for k in keys[1:]]
        defaults = re.split(r",\s*(?![^\[]*\])", default)
        if len(keys) > 1 and len(defaults) == len(keys):
            documented.update(zip(keys, (d.strip() for d in defaults)))
        else:
            documented.update((k, default) for k in keys)
    return documented


def test_config_reference_lists_every_key_with_its_real_default():
    import dataclasses
    import tomllib
    from sim.config import ReplayConfig, config_from_dict
    config = config_from_dict({"instruments": [{"symbol": "AAA"}], "venues": [{"name": "V"}],
                               "parents": [{"symbol": "AAA", "side": "buy", "qty": "100"}]})
    real = {}
    for prefix, obj in (("session", config.session), ("flow", config.flow), ("strategy", config.strategy),
                        ("replay", ReplayConfig()), ("output", config.output),
                        ("instruments[]", config.instruments[0]), ("venues[]", config.venues[0]),
                        ("parents[]", config.parents[0])):
        real.update((f"{prefix}.{f.name}", getattr(obj, f.name)) for f in dataclasses.fields(obj))
    documented = _documented_keys()
    assert sorted(set(real) ^ set(documented)) == []
    # Defaults said in words, or not at all (required keys, per-parent overrides, replay files).
    worded = {"instruments[].min_qty": ("one lot", None),
              "venues[].fees": ('all `"0"`', None), "venues[].latency": ("fixed 100 us", None),
              "venues[].market_data_latency": ("none (fixed 0)", None)}
    for key, text in documented.items():
        value = real[key]
        if key in worded:
            assert text == worded[key][0], key
        elif text in ("required", "") or text.startswith("session start"):
            continue
        else:
            parsed = tomllib.loads(f"v = {text.strip('`')}")["v"]
            if isinstance(value, tuple):
                value = list(value)
            assert parsed == value, (key, text, value)
    assert config.instruments[0].min_qty is None and config.parents[0].account == 1000
    venue = config.venues[0]
    assert {venue.fees.maker_per_share, venue.fees.taker_per_share, venue.fees.maker_bps,
            venue.fees.taker_bps} == {"0"}
    assert (venue.latency.model, venue.latency.mean_us) == ("fixed", 100.0)
    assert (venue.market_data_latency.model, venue.market_data_latency.mean_us) == ("fixed", 0.0)


def test_strategy_table_gives_every_parameter_and_its_default():
    """*Execution strategies*: each built-in strategy's parameters, with the default written
    after the name (none written: the parameter is absent by default)."""
    from sim import STRATEGIES
    table = DOC.read_text().split("## Execution strategies", 1)[1].split("\n## ", 1)[0]
    rows = {m[0]: m[1] for m in re.findall(r"^\| `(\w+)` \| .* \| ([^|]*) \|$", table, flags=re.M)}
    # (An example above may have registered its own strategy: only the built-in ones count.)
    assert set(rows) == {n for n, cls in STRATEGIES.items() if cls.__module__.startswith("sim.")}
    for name, cell in rows.items():
        documented = {key: value for key, value in re.findall(r'`(\w+)`(?: ("[^"]*"|[\d.]+))?', cell)
                      if key not in STRATEGIES}
        if "the `sweep` ones" in cell:
            documented = {**{k: v for k, v in re.findall(r'`(\w+)`(?: ("[^"]*"|[\d.]+))?', rows["sweep"])
                             if k not in STRATEGIES}, **documented}
        defaults = STRATEGIES[name].defaults
        assert set(documented) == set(defaults), name
        for key, value in documented.items():
            expected = None if value == "" else value.strip('"') if value.startswith('"') else float(value)
            assert expected == defaults[key], (name, key, value, defaults[key])
