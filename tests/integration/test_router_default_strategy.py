"""``[router] strategy``: the strategy of an order that names none, and only of such an order.

A scheduled strategy (twap, vwap, pov) cannot be that default: an order
naming no strategy carries no schedule, so the engine would refuse every
such order. The configuration is refused when it is read instead.

An order naming ``"auto"`` is routed by auto whatever the default. With
``post_residual = false`` a sweep rests nothing, while auto rests a limit
order that does not cross at its limit: on the quiet test market (no
liquidity but what a test puts there) a 49.00 DAY buy is canceled by a
sweep and rests under auto.
"""
import subprocess
import time
import sys

import pytest

from engine.client import Client
from engine.config import ConfigError, load_config
from engine.messages import ExecutionReport, OrderStatusReply
from ext.types import OrdStatus
from tests.integration.engine_harness import ThreadedEngine, config_text, free_port, serving

SWEEP_DEFAULT = '[router]\nstrategy = "sweep"\npost_residual = false\n'


@pytest.mark.parametrize("strategy", ["twap", "vwap", "pov"])
def test_a_scheduled_default_strategy_is_refused_at_load(tmp_path, strategy):
    path = tmp_path / "engine.toml"
    path.write_text(config_text(free_port(), tmp_path / "journal",
                                extra=f'[router]\nstrategy = "{strategy}"\n'))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert str(refused.value) == (
        f"{path}: 'router.strategy': {strategy!r} cannot be the default: an order naming no "
        f"strategy has no schedule to follow; use 'auto', 'sweep', 'dark_first' or 'passive'")


def test_serve_exits_2_on_a_scheduled_default_strategy(tmp_path):
    path = tmp_path / "engine.toml"
    path.write_text(config_text(free_port(), tmp_path / "journal",
                                extra='[router]\nstrategy = "twap"\n'))
    done = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config", str(path),
                           "--duration", "0.5"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"kronos-exec serve: {path}: 'router.strategy': 'twap' cannot be the default: an order "
        f"naming no strategy has no schedule to follow; use 'auto', 'sweep', 'dark_first' or "
        f"'passive'"]
    assert not (tmp_path / "journal").exists()  # refused before anything was started


def _routed(client, cl_ord_id, **fields) -> OrderStatusReply:
    """Send a 49.00 DAY buy of 10 AAA (nothing to take there); its status once routed."""
    client.new_order("AAA", "buy", "10", "49.00", account="DEMO1", cl_ord_id=cl_ord_id,
                     **fields)
    client.recv_until(lambda m: isinstance(m, ExecutionReport) and m.cl_ord_id == cl_ord_id, 5)
    client.drain(0.3)  # a sweep's CANCELED follows its NEW once it found nothing to take
    client.status(cl_ord_id, account="DEMO1")
    return client.recv_until(lambda m: isinstance(m, OrderStatusReply)
                             and m.cl_ord_id == cl_ord_id, 5)[-1]


def test_explicit_auto_is_routed_by_auto_under_a_sweep_default(tmp_path):
    with serving(tmp_path, extra=SWEEP_DEFAULT) as (_, endpoint), Client(endpoint) as client:
        named_none = _routed(client, "none")
        named_auto = _routed(client, "auto", strategy="auto")
        named_sweep = _routed(client, "sweep", strategy="sweep")
    # No strategy named: the default, a sweep, which found nothing to take and rests nothing.
    for swept in (named_none, named_sweep):
        assert swept.report.ord_status == OrdStatus.CANCELED and swept.children == []
        assert swept.report.text == "canceled by the router: NO_LIQUIDITY"
    # "auto" named: rests at its limit, as auto does with a limit order that does not cross.
    assert named_auto.report.ord_status == OrdStatus.NEW
    assert [(c.price, c.qty, c.done) for c in named_auto.children] == [("49", "10", False)]


def test_explicit_auto_is_routed_by_auto_again_after_a_restart(tmp_path):
    """Recovery sends a working order to the venues again by the strategy it named."""
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    path.write_text(config_text(port, tmp_path / "journal", extra=SWEEP_DEFAULT))
    with ThreadedEngine(path), Client(endpoint) as client:
        assert _routed(client, "auto", strategy="auto").report.ord_status == OrdStatus.NEW
    with ThreadedEngine(path), Client(endpoint) as client:
        client.drain(0.3)  # (as a sweep it would be canceled by now)
        client.status("auto", account="DEMO1")
        again = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
    assert again.report.ord_status == OrdStatus.NEW
    # The child before the restart (gone with its venue), then the one sent again.
    assert [(c.price, c.qty, c.done) for c in again.children] == \
        [("49", "10", True), ("49", "10", False)]


def test_a_post_only_order_naming_no_strategy_rests_under_a_sweep_default(tmp_path):
    """post_only means rest: an order naming no strategy takes a default that cannot rest
    (sweep) as auto, across a restart too, and is not swept away."""
    port = free_port()
    path, endpoint = tmp_path / "engine.toml", f"tcp://127.0.0.1:{port}"
    path.write_text(config_text(port, tmp_path / "journal", extra=SWEEP_DEFAULT))
    with ThreadedEngine(path), Client(endpoint) as client:
        rested = _routed(client, "po", post_only=True)
    assert rested.report.ord_status == OrdStatus.NEW
    assert [(c.price, c.qty, c.done) for c in rested.children] == [("49", "10", False)]
    with ThreadedEngine(path), Client(endpoint) as client:
        client.drain(0.3)  # (routed again as a sweep it would be canceled by now)
        client.status("po", account="DEMO1")
        again = client.recv_until(lambda m: isinstance(m, OrderStatusReply), 5)[-1]
    assert again.report.ord_status == OrdStatus.NEW
    assert [(c.price, c.done) for c in again.children] == [("49", True), ("49", False)]


# ---------------------------------------------------------------- review prrev
PASSIVE_DEFAULT = '[router]\nstrategy = "passive"\n'


@pytest.mark.parametrize("kind", ["market", "ioc"])
def test_an_immediate_order_naming_no_strategy_trades_under_a_passive_default(tmp_path, kind):
    """A MARKET or IOC order cannot rest: under a passive default it was refused
    INVALID_STRATEGY ("router: INVALID_STRATEGY", naming no strategy the client had
    sent), every such order of every client, as a scheduled default would have refused
    every order. It is routed by auto (a sweep), as a post-only order naming none under
    a default that cannot rest is."""
    from ext.types import Side
    from engine.messages import ExecType
    with serving(tmp_path, extra=PASSIVE_DEFAULT) as (engine, endpoint), \
            Client(endpoint) as client:
        market = engine.service.venues.market
        engine.call(lambda: market.submit("NEXA", "AAA", Side.SELL, 10, 5000, account=77))
        engine.call(lambda: market.submit("NEXA", "AAA", Side.BUY, 10, 4990, account=77))
        time.sleep(0.3)  # (past the venue's latency: a reference price, and the offer)
        price, tif = (None, "day") if kind == "market" else ("50.00", "ioc")
        client.new_order("AAA", "buy", "10", price, account="DEMO1", cl_ord_id=kind,
                         time_in_force=tif)
        reports = client.recv_until(lambda m: isinstance(m, ExecutionReport)
                                    and m.exec_type in (ExecType.FILL, ExecType.REJECTED), 5)
        done = reports[-1]
        assert (done.exec_type, done.cum_qty, done.reject_name) == (ExecType.FILL, "10", None)
        # A limit order naming none still takes the default: it rests, passive.
        rested = _routed(client, "rests")
        assert rested.report.ord_status == OrdStatus.NEW and not rested.children[0].done
