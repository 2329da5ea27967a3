"""The example in docs/risk.md runs as written and says what it claims."""
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "risk.md"


def test_docs_example_runs(capsys):
    text = DOC.read_text()
    example = re.search(r"## Example\s+```python\n(.*?)```", text, re.S).group(1)
    namespace = {}
    exec(compile(example, str(DOC), "exec"), namespace)
    out = capsys.readouterr().out
    assert "MAX_NET_POSITION" in out and "account ACC1 in AAPL max_net_position 800" in out
    assert "'position': 200" in out
    assert out.strip().endswith("[1, 3]")      # working orders returned by the kill switch


def test_docs_list_every_config_key_and_risk_reason():
    from ext import risk
    from ext.types import RejectReason
    text = DOC.read_text()
    keys = set(risk._FIRM_KEYS | risk._INSTRUMENT_KEYS | risk._ACCOUNT_KEYS | risk._SESSION_KEYS)
    missing = sorted(k for k in keys if f"`{k}`" not in text and f"`{k}." not in text)
    assert missing == []
    for reason in RejectReason:
        if 32 <= reason <= 63:
            assert f"| {int(reason)} | `{reason.name}` |" in text, reason
