"""The engine service: builds the pipeline from one configuration and runs it on uvloop.

Start-up order follows the data: venues (the embedded simulator unless
configured otherwise) define the instruments; risk gets those instruments'
grids plus the ``[risk]`` limits; the router is sized for the venues; the
journal opens (repairing a torn tail) and is replayed into the order table
and the risk state; then intake starts taking orders. Shutdown runs the other
way: intake stops taking orders, in-flight work finishes, every reply the
journal holds goes out, then the sockets close and the journal closes.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Callable

import msgspec

import gateways
from engine.aio import cancel_and_wait, log_if_it_dies
from engine import checkpoint
from engine.busy import BusyFlag
from engine.config import (Config, ConfigError, SecurityConfig, core_risk, core_router,
                           load_config, parse_config, risk_config, trading_day)
from engine.history import GatewayTradeStore, TradeHistory
from engine.intake import (ALL_ACCOUNTS, PLAINTEXT_CLIENT, EndpointError, IntakeServer,
                           client_names)
from engine.journal import JournalError, JournalFailedError, JournalWriter
from engine.metrics import Metrics, MetricsServer, setup_logging
from engine.pipeline import Pipeline
from engine.recovery import record_units, recover, resume_working
from sim.config import load_config as load_sim_config
from sim.realtime import RealtimeVenues

log = logging.getLogger(__name__)

#: The embedded default configuration: engine on the simulator, local plaintext.
DEFAULT_CONFIG = Path(__file__).with_name("configs") / "default.toml"
#: ``/healthz`` answers 503 once the event loop has not run the router's tick
#: (every 50 ms at most) for this long: a loop held up answers no client.
LOOP_STALL_S = 2.0
#: Entries (orders, client ids) one step takes out of the order table of what a day roll
#: forgot (``OrderTable.forget_some``): a few milliseconds of the event loop however many
#: the roll forgot (docs/engine.md, Operations).
FORGET_STEP = 2_000


def _freeze_after_full_collection(phase: str, info: dict) -> None:
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


def bound_gc_pauses() -> None:
    """Keep full garbage collections short while serving.

    A collection traverses every tracked object of the generations it
    collects, and its pause lands on whatever order is in flight. Orders and
    their children are not tracked at all (see ``engine.orders.Order``); on
    top of that, what is alive at start-up (modules, the recovered order
    table) and whatever survives a full collection is frozen
    (``gc.freeze``), so each full collection only traverses what was made
    since the last one. Measured with 60,000 orders in memory: a full
    collection of everything took 378 ms with tracked orders and 34 ms
    without; young collections went from 1.5 ms to 0.15 ms (median). A cycle
    among frozen objects is never collected: a small leak traded for bounded
    pauses, as long-running CPython services commonly do.
    """
    gc.collect()
    gc.freeze()
    if _freeze_after_full_collection not in gc.callbacks:
        gc.callbacks.append(_freeze_after_full_collection)


def build_venues(cfg: Config) -> RealtimeVenues:
    """The venues of ``cfg``'s ``[sim]`` (the embedded simulator), not started yet."""
    sim = dict(cfg.sim)
    sim_cfg = load_sim_config(sim.pop("config", None))
    venues = RealtimeVenues(sim_cfg, speed=float(sim.pop("speed", 1.0)),
                            duration=sim.pop("duration", None), start_at=sim.pop("start_at", None))
    if sim:
        raise ConfigError(f"unknown key 'sim.{sorted(sim)[0]}'")
    return venues


def build_pipeline(cfg: Config, venues: RealtimeVenues, journal: JournalWriter | None, *,
                   metrics=None, reload_limits=None,
                   history_position: Callable[[], int] = lambda: 0) -> Pipeline:
    """The pipeline of ``cfg`` over ``venues``: risk, router, order table, trade history.

    The service's, and the checkpoint writer's (:mod:`engine.checkpoint`), which
    replays the journal into one with no journal to write (``journal`` None).
    """
    market = venues.market
    instruments = {inst.symbol: inst for inst in market.instruments}
    return Pipeline(instruments=instruments, risk=core_risk(cfg, market.instruments),
                    router=core_router(cfg, len(market.venues), len(instruments)),
                    venues=venues, journal=journal, metrics=metrics,
                    history=TradeHistory(cfg.history.max_fills_per_account,
                                         position=history_position,
                                         max_fills_per_request=cfg.history.max_fills_per_request),
                    reload_limits=reload_limits, trading_day=trading_day(cfg),
                    max_orders=cfg.orders.max_orders,
                    max_replaces_per_order=cfg.orders.max_replaces_per_order,
                    keep_done_days=cfg.orders.keep_done_days)


class EngineService:
    """Kronos Exec as a running service.

    Parameters
    ----------
    config : Config
        The parsed configuration (``engine.config.load_config``).
    config_path : str or Path, optional
        Where it came from: ``ReloadLimits`` re-reads its ``[risk]`` table.

    Attributes
    ----------
    stop_requested : asyncio.Event
        Set when the service must stop by itself (the journal failed); its
        runner then calls :meth:`stop`. ``run`` also sets it on SIGINT/SIGTERM.
    exit_code : int
        0, or 1 once the service stopped on a failure.
    """

    def __init__(self, config: Config, config_path: str | Path | None = None):
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        self.metrics = Metrics()
        self.venues: RealtimeVenues | None = None
        self.pipeline: Pipeline | None = None
        self.intake: IntakeServer | None = None
        self.journal: JournalWriter | None = None
        self.metrics_server: MetricsServer | None = None
        self._ticker: asyncio.Task | None = None
        self._loop_seen = time.monotonic()  # the router tick's last run (_health)
        self._forgetting = False  # (a chain of _forget_step calls is under way)
        self._gateway_watch: asyncio.Task | None = None
        #: a gateway's child being started again (``_watch_gateways``), off the loop
        self._reviving: asyncio.Future | None = None
        #: the child writing a checkpoint (engine.checkpoint), and the roll record it was
        #: last started for
        self._checkpointer = None
        self._checkpoint_start: asyncio.Future | None = None  # (starting it, off the loop)
        self._checkpoint_seq = 0
        self._stopping = False
        self.gateways: list = []
        self.recovered = None
        self.busy: BusyFlag | None = None
        self.stop_requested = asyncio.Event()
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Build every component, recover from the journal, then open intake.

        A start that fails part way (an endpoint taken, a journal that cannot
        be replayed) stops what it had started, gateway processes and the
        journal included, before the error propagates.
        """
        try:
            await self._start()
        except BaseException:
            try:
                await self.stop(grace_s=0)
            except Exception:  # the start's own error is the one to report
                log.exception("engine: cleaning up after a failed start")
            raise

    async def _start(self) -> None:
        cfg = self.config
        self.venues = build_venues(cfg)
        market = self.venues.market
        self._loop = asyncio.get_running_loop()
        self.journal = JournalWriter(cfg.journal.dir, fsync=cfg.journal.fsync,
                                     group_commit_us=cfg.journal.group_commit_us,
                                     rotate_bytes=cfg.journal.rotate_bytes, buffered=True,
                                     on_sync=self.metrics.journal_sync.observe,
                                     on_failure=self._journal_failed)
        if cfg.metrics.port:
            # Bound before gateways and intake open, so a taken port stops the
            # start with nothing to undo; /healthz says 503 until serving.
            try:
                self.metrics_server = MetricsServer(self.metrics, cfg.metrics.host,
                                                    cfg.metrics.port, health=self._health).start()
            except OSError as exc:
                raise EndpointError(f"metrics: cannot bind {cfg.metrics.host}:{cfg.metrics.port}: "
                                    f"{exc.strerror or exc}") from None
            self.metrics.venues_open.set_function(self.venues.open_count)
        # Made before the gateways start: they find it beside the journal.
        try:
            self.busy = BusyFlag.in_journal(cfg.journal.dir, create=True)
        except OSError as exc:  # a full disk
            raise JournalError(f"cannot make the busy flag beside the journal: "
                               f"{exc.strerror or exc}") from exc
        if self.journal.repaired is not None:
            log.warning("journal: dropped a torn last record: %s", self.journal.repaired)
        self.pipeline = build_pipeline(cfg, self.venues, self.journal, metrics=self.metrics,
                                       reload_limits=self._reload_limits,
                                       history_position=lambda: self.journal.last_seq)
        self.metrics.orders_held.set_function(lambda: len(self.pipeline.orders))
        self.metrics.serve_at_zero(info.name for info in market.venues)
        # Recovery runs before the venues' clock starts: rerouted orders'
        # reports can only come back once the sessions they belong to exist.
        self.recovered = recover(self.pipeline, cfg.journal.dir, cfg.intake.resend_ring_size,
                                 client_names(cfg.security), checkpoints=True)
        # Before anything else of this run: the grids its records' ticks and lots count in.
        record_units(self.pipeline, self.recovered)
        # Gateways follow the journal from their own processes: they are
        # handed its directory and never touch the loop. Their cursors live
        # inside it: a cursor counts in this journal's seqs, and goes with it.
        self.gateways = gateways.from_config(cfg.gateways, cfg.journal.dir,
                                             Path(cfg.journal.dir) / "gateways")
        if cfg.history.store is not None:
            # (the configuration check made sure it names a postgres gateway storing fills)
            store = next(g for g in self.gateways if g.name == cfg.history.store)
            self.pipeline.trade_store = GatewayTradeStore(store)
        for gateway in self.gateways:
            try:
                gateway.start()
            except gateways.base.GatewayBindError as exc:
                # Reported like intake's and metrics' ports: one line, exit 1
                # (cmd_serve); start() stops the gateways already running.
                raise EndpointError(str(exc)) from None
        self.intake = IntakeServer.from_config(cfg, self.pipeline, metrics=self.metrics,
                                               busy=self.busy)
        await self.intake.start()
        self._warn_unmatched_names(cfg.security)
        for rs in self.recovered.sessions:
            session = self.intake.restore_session(rs.session_id, rs.principal, rs.seq, rs.messages,
                                                  rs.marks)
            if session is not None:
                # Its opt-in holds across the restart: if the client does not
                # come back within the heartbeat timeout, its orders are canceled.
                session.cancel_on_disconnect = rs.cancel_on_disconnect
                self.pipeline.sessions[rs.session_id] = session
        resume_working(self.pipeline, self.recovered)
        await self.venues.start()
        self._ticker = log_if_it_dies(asyncio.get_running_loop().create_task(
            self._tick(), name="router-tick"),
            "engine: the router's clock (schedules, acknowledgement timeouts, reprices)")
        if any(gateway.config.isolation == "process" for gateway in self.gateways):
            self._gateway_watch = log_if_it_dies(asyncio.get_running_loop().create_task(
                self._watch_gateways(), name="gateway-watch"), "engine: the gateways' watch")
        bound_gc_pauses()
        log.info("engine: serving on %s (%d venues, %d instruments, journal %s fsync=%s)",
                 ", ".join(self.endpoints), len(market.venues), len(market.instruments),
                 cfg.journal.dir, cfg.journal.fsync)

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful shutdown: refuse new orders, finish in-flight work, send every reply, close.

        An acknowledgement whose record is in the journal must reach its
        client, so the sockets close only after the last reply is sent:

        1. intake refuses new orders and replaces (``ENGINE_SHUTTING_DOWN``)
           and keeps answering everything else;
        2. under ``fsync = "group"`` the replies waiting for the committer are
           released now, and every later batch is synced before it is sent;
        3. for ``grace_s`` (default ``[intake] shutdown_grace_ms``) the engine
           serves on (requests on their way are answered, cancels reach the
           venues), then the router's clock and the venues stop;
        4. intake closes its sockets (ZeroMQ lingers to deliver what was
           sent), then the journal is synced and closed.

        After a journal failure no reply can be sent any more: there is no
        grace period, and the journal is closed without a sync.
        """
        journal_failed = self.journal is not None and self.journal.failure is not None
        if grace_s is None:
            grace_s = self.config.intake.shutdown_grace_ms / 1000
        if journal_failed:
            grace_s = 0
        log.info("engine: stopping")
        self._stopping = True  # no gateway child is started again from here on
        if self.intake is not None:
            self.intake.begin_shutdown()
        if self.journal is not None and self.journal.fsync == "group" and not journal_failed:
            try:
                await self._end_group_commit()
            except JournalFailedError:
                pass  # reported (_journal_failed); the sockets must close all the same
            except OSError as exc:  # a short write (a full disk): the stop must go on
                self._last_records_lost(exc)
        if self.intake is not None and grace_s > 0:
            await asyncio.sleep(grace_s)
        for task in (self._ticker, self._gateway_watch):
            await cancel_and_wait(task)
        if self._checkpoint_start is not None:
            self._checkpointer = (await asyncio.gather(self._checkpoint_start,
                                                       return_exceptions=True))[0]
            self._checkpoint_start = None
        if isinstance(self._checkpointer, BaseProcess):
            # Its work is a replay the next roll (or a restart) does again: not waited for.
            self._checkpointer.kill()
            self._checkpointer.join(5)
        self._checkpointer = None
        if self._reviving is not None:
            # A child being started again: let the start finish, so that the
            # gateway's stop below finds the child it has to stop.
            await asyncio.gather(self._reviving, return_exceptions=True)
        if self.venues is not None:
            await self.venues.stop()
        if self.intake is not None:
            # Replies queued by the last venue reports flush on the next loop
            # turn; once the sockets are closed they could not be sent.
            await asyncio.sleep(0)
            await self.intake.stop()
        if self.journal is not None:
            try:
                try:
                    if self.journal.failure is None:
                        if self.pipeline is not None:
                            self.pipeline.journal_children()  # what the last venue reports did
                        # Under "none" too: a graceful stop is durable, and durable.seq
                        # says so (a journal cut short after it is then refused).
                        self.journal.seal()
                finally:
                    self.journal.close()
            except JournalFailedError:
                pass  # reported (_journal_failed)
            except OSError as exc:
                self._last_records_lost(exc)
        for gateway in self.gateways:
            gateway.stop()
        if self.busy is not None:
            self.busy.lower()
            self.busy.close()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        log.info("engine: stopped")

    async def __aenter__(self) -> "EngineService":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def _end_group_commit(self, max_rounds: int = 100) -> None:
        """Release every reply the group commit holds, then sync each batch before it is sent.

        Under ``group`` the pipeline hands a batch's replies back to the loop
        only once the committer has synced the batch, up to a commit window
        later; replies still held when intake closes its sockets are lost
        while their orders stay in the journal. Under ``always`` the pipeline
        sends a batch's replies as soon as its flush returns, so a request
        intake still reads while it closes is answered before the close.
        The switch must not let such a batch overtake replies still queued
        on the loop (the client would see its ``seq`` out of order): with
        the committer stopped, the journal is synced and the loop turned
        until a whole turn starts with every record durable and adds none,
        and then every release has run.
        """
        journal = self.journal
        journal.stop_group_commit()
        for _ in range(max_rounds):
            settled = journal.durable_seq == journal.last_seq
            seq = journal.last_seq
            journal.sync()
            await asyncio.sleep(0)
            if settled and journal.last_seq == seq:
                break
        else:
            log.warning("engine: requests kept coming while stopping; switching the journal to "
                        "fsync=always with replies possibly still queued")
        journal.switch_to_always()

    def _journal_failed(self, error: JournalFailedError) -> None:
        """The journal failed (any thread): stop taking orders and stop, exit code 1.

        Fail stop rather than trade on: nothing written from now on could be
        acknowledged, so orders would be acted on and never answered.
        """
        self.exit_code = 1
        log.error("engine: stopping: %s", error)
        try:
            self._loop.call_soon_threadsafe(self._begin_fail_stop)
        except RuntimeError:  # the loop is already closed: the service has stopped
            pass

    def _begin_fail_stop(self) -> None:
        if self.intake is not None:
            self.intake.begin_shutdown()
        self.stop_requested.set()

    # ------------------------------------------------------------ helpers

    @property
    def endpoints(self) -> list[str]:
        """Every bound client endpoint (CURVE first, then plaintext)."""
        return self.intake.endpoints + self.intake.plaintext_endpoints if self.intake else []

    def _fresh_config(self) -> Config:
        """The configuration file read again, with every load-time check (ConfigError) but
        the resolution of host names: this runs on the event loop, which must not wait on
        DNS, and the endpoints are not bound again (see ``load_config``'s ``resolve``)."""
        if self.config_path is None:
            raise ConfigError("started without a configuration file")
        return default_config() if self.config_path == DEFAULT_CONFIG else \
            load_config(self.config_path, resolve=False)

    def _reload_limits(self) -> dict:
        return risk_config(self._fresh_config(), self.venues.market.instruments)

    def reload_security(self) -> bool:
        """Take the file's ``[security]`` clients and entitlements (``serve`` does on SIGHUP).

        The whole file is read and checked as at start; a file that does not
        pass changes nothing (one error line). Otherwise the allow-list and
        every key's accounts and admin right are replaced, for the sessions
        already open too (``IntakeServer.update_security``): a removed key
        cannot connect, and its open sessions' requests are refused
        ``NOT_AUTHORIZED``. The server's own key and the endpoints need a
        restart. Returns whether the new keys are in force.
        """
        before = self.intake.client_rights()
        server_key_file = self.intake.security.server_secret_key_file
        try:
            fresh = self._fresh_config()
            self.intake.update_security(fresh.security)  # (all or nothing)
        except (ConfigError, OSError, ValueError) as exc:
            log.error("security reload refused, the keys in force stay: %s", exc)
            return False
        after = self.intake.client_rights()
        if fresh.security.server_secret_key_file != server_key_file:
            log.warning("security reload: server_secret_key_file changed; the server key "
                        "changes only with a restart")
        log.warning("security reloaded: %s", _rights_change(before, after))
        self._warn_unmatched_names(fresh.security)
        return True

    def _last_records_lost(self, exc: OSError) -> None:
        """A stop's last journal write failed (a full disk): said, and exit code 1. What it
        held was never acknowledged (replies go out only after their records are written)."""
        self.exit_code = 1
        log.error("engine: journal: the last records could not be written at shutdown: %s", exc)

    def _warn_unmatched_names(self, security: SecurityConfig) -> None:
        """Log each account a key is entitled to that risk has no limits for, and each
        ``[risk.sessions.<name>]`` that names no client key.

        Not refused when the file is read: an entitlement may be written
        before a ReloadLimits adds its account, a throttle table before the
        key is added to ``[security]``. Until then the account's orders are
        refused ``UNKNOWN_ACCOUNT``, and the table throttles no one (a
        misspelt name leaves the key it meant on the firm's sizes); the
        line says so.
        """
        keys = {client.name for client in security.clients} | {PLAINTEXT_CLIENT}
        for name in sorted(set(self.pipeline.risk.config.get("sessions", {})) - keys):
            log.warning("[risk.sessions.%s] names no client key (keys: %s; %r for the plaintext "
                        "endpoints): it throttles no one, and the key it was meant for draws on "
                        "the firm's throttle", name, ", ".join(sorted(keys)), PLAINTEXT_CLIENT)
        known = set(self.pipeline.risk.accounts) | {ALL_ACCOUNTS}
        holders = [("security.plaintext_accounts", PLAINTEXT_CLIENT, security.plaintext_accounts)]
        holders += [(f"security.clients[{i}]", client.name, client.accounts)
                    for i, client in enumerate(security.clients)]
        for where, name, accounts in holders:
            missing = sorted(set(accounts) - known)
            if missing:
                log.warning("%s (%s) is entitled to %s, which [risk.accounts] does not have: "
                            "their orders are refused UNKNOWN_ACCOUNT until a ReloadLimits "
                            "adds them", where, name, ", ".join(missing))

    def _health(self) -> tuple[bool, str]:
        """``/healthz``: whether the engine serves (503 if not), and whether its venues are open.

        Closed venues are the market's state, not the engine's: it still
        takes requests (new orders are refused ``NO_ROUTE``, cancels and
        status requests answered), so that is a 200 whose detail says so.
        A failed journal is a 503 from the moment it fails, before the stop;
        so is a full order table (``[orders] max_orders``), which refuses
        every new order until a restart. Called from the HTTP thread: it only
        reads.
        """
        failure = self.journal.failure if self.journal is not None else None
        if failure is not None:
            return False, f"not serving: {failure}"
        if self._ticker is None:
            return False, "not serving: starting"
        if self.intake.shutting_down:
            return False, "not serving: shutting down"
        if not self.venues.running:
            return False, "not serving: the venues' clock has stopped"
        if self._ticker.done():
            return False, "not serving: the router's clock has stopped"
        stalled = time.monotonic() - self._loop_seen
        if stalled > LOOP_STALL_S:
            # The tick runs every 50 ms at most: a loop that has not run it
            # for this long answers nobody, whatever the rest says.
            return False, f"not serving: the event loop has not run for {stalled * 1e3:.0f} ms"
        if self.pipeline.order_table_full:
            # Unlike closed venues, it lasts until an operator restarts the engine with
            # a larger bound: every new order is refused until then.
            return False, (f"not serving new orders: the order table is full ([orders] "
                           f"max_orders = {self.pipeline.max_orders}); they are refused "
                           f"ORDER_CAPACITY until a day roll forgets done orders "
                           f"([orders] keep_done_days) or a restart with a larger bound")
        total, open_now = len(self.venues.venues), self.venues.open_count()
        if open_now:
            return True, f"ok: serving, {open_now} of {total} venues open"
        why = "the session is over" if self.venues.session_over else "outside their trading hours"
        return True, f"ok: serving, venues closed ({why}): new orders are refused NO_ROUTE"

    async def _watch_gateways(self, period_s: float = 1.0) -> None:
        """Start a gateway's child process again when it dies (see ``Gateway.revive``).

        Off the loop: a child takes about a second to start. A gateway that
        cannot start again (its port taken meanwhile) is logged and tried
        again at the next look.
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period_s)
            for gateway in self.gateways:
                # (a look, on the loop; the start, off it). A child that died
                # with the engine's stop (a signal to the process group) is not
                # started again only to be stopped.
                if self._stopping or not gateway.died:
                    continue
                self._reviving = loop.run_in_executor(None, gateway.revive)
                try:
                    # Shielded: the stop cancels this task, not the start in flight.
                    await asyncio.shield(self._reviving)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - logged, tried again next time
                    log.error("gateway %s: cannot start its process again: %s", gateway.name, exc)
                finally:
                    if self._reviving.done():
                        self._reviving = None

    def _checkpoint_config(self) -> Config:
        """The configuration the checkpoint writer replays under: the start-up one with the
        file's ``[risk]`` and ``[security]`` as read now, since a ReloadLimits or a key
        reload may have taken in accounts or clients the journal now names (the start-up
        one alone where the file cannot be read)."""
        try:
            fresh = self._fresh_config()
        except (ConfigError, OSError):
            return self.config
        return msgspec.structs.replace(self.config, risk=fresh.risk, security=fresh.security)

    def _checkpoint_after_roll(self) -> None:
        """Look after the child that checkpoints the journal at the last roll (``[journal]
        checkpoint``): start it for a roll newer than the last one it was started for, once
        the one before has ended (then the next tick asks again), and say if one failed.

        Started off the loop (spawn writes the configuration to the child's pipe, which
        blocks until the child reads it); never raises: a failure to start it is logged,
        and the next roll tries again, the router's clock going on meanwhile.
        """
        try:
            starting = self._checkpoint_start
            if starting is not None:
                if not starting.done():
                    return
                self._checkpoint_start = None
                self._checkpointer = starting.result()
            child = self._checkpointer
            if child is not None:
                if child.is_alive():
                    return
                if child.exitcode:
                    log.warning("engine: the checkpoint writer exited with %s (its log says "
                                "why); a restart replays the journal from the checkpoint "
                                "before", child.exitcode)
                self._checkpointer = None
            if self.pipeline.last_roll_seq > self._checkpoint_seq:
                seq = self._checkpoint_seq = self.pipeline.last_roll_seq
                if self.config.journal.checkpoint:
                    self._checkpoint_start = self._loop.run_in_executor(
                        None, checkpoint.start_child, self._checkpoint_config(), seq)
        except Exception as exc:  # noqa: BLE001 - a fork refused (EAGAIN, ENOMEM)...
            log.warning("engine: could not start the checkpoint writer (%s); the next roll "
                        "tries again", exc)

    def _forget_step(self) -> None:
        """Take ``FORGET_STEP`` entries a day roll forgot out of the order table, then let
        the loop run what is ready before the next step (``call_soon``): the roll
        itself forgets in constant time (``OrderTable.begin_roll``), and taking out a
        million orders at once held the loop about a second."""
        if self.pipeline.orders.forget_some(FORGET_STEP):
            self._loop.call_soon(self._forget_step)
        else:
            self._forgetting = False

    async def _tick(self) -> None:
        """Drive the router's clock: schedules, acknowledgement timeouts, reprices.

        The router times with the wall clock, as everything the engine stamps;
        a step of it (``Pipeline.watch_clock``) moves the router's deadlines
        with it first.
        """
        while True:
            self._loop_seen = time.monotonic()
            now = time.time_ns()
            self.pipeline.watch_clock(now)
            wake = self.pipeline.tick(now)
            if self.pipeline.orders.leaving and not self._forgetting:
                self._forgetting = True
                self._loop.call_soon(self._forget_step)
            self._checkpoint_after_roll()
            delay = 0.05 if wake < 0 else min(max((wake - now) / 1e9, 0.001), 0.05)
            await asyncio.sleep(delay)


def _rights_change(before: dict, after: dict) -> str:
    """The reload's audit line: the clients added, removed, changed (accounts or admin) and
    renamed, from ``IntakeServer.client_rights`` before and after.

    Told apart by public key, which is what the allow-list admits, and named by client
    name: an entry renamed (its key kept) goes on trading, so it is not said to be removed
    and another added. (The plaintext clients have no key: named ``plaintext``.)
    """
    def by_key(rights: dict) -> dict:
        return {key or name: (name, granted) for name, (key, *granted) in rights.items()}
    old, new = by_key(before), by_key(after)
    added = sorted(new[key][0] for key in new.keys() - old.keys())
    removed = sorted(old[key][0] for key in old.keys() - new.keys())
    kept = old.keys() & new.keys()
    changed = sorted(new[key][0] for key in kept if old[key][1] != new[key][1])
    renamed = sorted(f"{old[key][0]!r} -> {new[key][0]!r}" for key in kept
                     if old[key][0] != new[key][0])
    line = f"clients added {added}, removed {removed}, changed {changed}"
    return line + (f", renamed [{', '.join(renamed)}]" if renamed else "")


class EngineThread:
    """An ``EngineService`` on its own uvloop loop in a background thread.

    For the demo, tests and benchmarks: ``with EngineThread(config) as eng:``
    serves until the block ends; ``eng.call(fn)`` runs ``fn`` on the
    engine's loop (the only thread that may touch its state).
    """

    def __init__(self, config: Config | Path, config_path: Path | None = None):
        if not isinstance(config, Config):
            config, config_path = load_config(config), Path(config)
        self.config = config
        self.config_path = config_path
        self.service: EngineService | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)

    def _run(self) -> None:
        import uvloop
        self._loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self.service = EngineService(self.config, self.config_path)
            self._loop.run_until_complete(self.service.start())
        except BaseException as exc:  # surfaced to the test thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        # A service that must stop by itself (a failed journal) ends the loop.
        watcher = self._loop.create_task(self.service.stop_requested.wait())
        watcher.add_done_callback(lambda task: task.cancelled() or self._loop.stop())
        self._loop.run_forever()
        watcher.cancel()
        self._loop.run_until_complete(self.service.stop())
        self._loop.close()
        self._stopped.set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Wait until the engine has stopped (by itself: see ``EngineService.stop_requested``)."""
        return self._stopped.wait(timeout)

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the engine's loop and return its result."""
        done = threading.Event()
        box = {}

        def run():
            try:
                box["value"] = fn(*args)
            except BaseException as exc:
                box["error"] = exc
            done.set()
        self._loop.call_soon_threadsafe(run)
        done.wait(10)
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def __enter__(self) -> "EngineThread":
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._loop.call_soon_threadsafe(self._loop.stop)
        except RuntimeError:  # closed: the service stopped by itself (see stop_requested)
            pass
        self._stopped.wait(30)


def load(path: str | Path | None) -> tuple[Config, Path]:
    """The configuration at ``path``, or the embedded default when ``path`` is None.

    An empty path is refused (``ConfigError``), not taken for "no file": a
    ``--config "$KRONOS_CONFIG"`` with the variable unset would otherwise
    start the default engine, on its port and journal, with no durability.
    """
    if path is None:
        return default_config(), DEFAULT_CONFIG
    if not str(path).strip():
        raise ConfigError("--config names no file (an empty path); leave --config out "
                          "for the embedded default")
    return load_config(path), Path(path)


def default_config(*snippets: str, base_dir: str | Path | None = None) -> Config:
    """The embedded default, with TOML snippets appended (tests, the demo).

    Its relative paths (the journal) are taken from the working directory,
    or ``base_dir``: the file itself lives inside the package.
    """
    text = DEFAULT_CONFIG.read_text() + "\n" + "\n".join(snippets)
    return parse_config(text, base_dir=base_dir or Path.cwd(), source=str(DEFAULT_CONFIG))


def raise_open_files_limit() -> None:
    """Raise the process's soft limit of open files to its hard limit.

    Every client connection holds a descriptor from its TCP accept, before
    any CURVE handshake, so the soft limit (often 1,024) is what a flood of
    connections has to exhaust to stop new clients, gateways' restarts and
    journal rotations. The hard limit is what the operator allowed.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open files limit from %d to %d: %s", soft, target, exc)
        return
    log.info("open files limit raised from %d to %d (the hard limit)", soft, target)


def run(config: Config, config_path: Path | None, duration: float | None = None) -> int:
    """Run the service on uvloop until interrupted (or for ``duration`` seconds).

    Returns the exit code: 0, or 1 when the service stopped on a failure
    (the journal could not make records durable).
    """
    import signal

    import uvloop

    from engine.cmd_serve import HELD_SIGNALS

    setup_logging(config.logging.level, json=config.logging.json)
    raise_open_files_limit()

    async def main() -> int:
        service = EngineService(config, config_path)
        loop = asyncio.get_running_loop()
        # Signals that arrive while the engine starts (a journal replay can
        # take minutes) are kept for after the start: SIGHUP's default action
        # ends the process, and SIGINT or SIGTERM then would skip the stop
        # (asyncio's own SIGINT handler cancels the start half-way). A stop
        # asked for during the start is done as soon as it is over.
        hups = []
        loop.add_signal_handler(signal.SIGHUP, hups.append, None)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, service.stop_requested.set)
        # `serve` held them until now: any that came arrive here.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
        await service.start()
        loop.add_signal_handler(signal.SIGHUP, service.reload_security)
        if hups:
            service.reload_security()
        try:
            await asyncio.wait_for(service.stop_requested.wait(), timeout=duration)
        except asyncio.TimeoutError:
            pass
        await service.stop()
        return service.exit_code

    return uvloop.run(main())
