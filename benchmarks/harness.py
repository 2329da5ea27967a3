"""``kronos-exec bench``: every benchmark in one command, one report.

Runs each ``benchmarks/bench_*.py`` in sequence, each in its own process
(a crash, a hang or a leaked engine stays with that script), shows progress,
and keeps each script's closing JSON line. In full mode it also runs the
pytest-benchmark micro benchmarks and offers open-loop load
(:mod:`benchmarks.loadgen`) to an engine it starts, at several rates, with the
raw ZeroMQ echo at the same rates as the baseline. Everything lands in
``bench-report/``:

* ``results.json``: every figure, the machine and the commit, for
  ``kronos-exec bench --compare OLD.json``;
* ``report.md``: statuses, the figures beside their same-run baselines, plots;
* ``headline.md``: the README's headline table;
* ``*.png``: latency against offered load, latency CDFs from the HDR data,
  speed-ups over the pure-Python references, the ZeroMQ floor;
* ``logs/``: each script's stdout and stderr; ``loadgen/``: HDR histograms.

A script that exits non-zero, prints no JSON line or outruns its timeout is
recorded as such in the report and the results; the command then exits 1,
but it always writes the report. Timing is never a pass/fail criterion.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import math
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchmarks.common import cpu_model

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
#: Scripts the report expects; a missing one is reported as skipped. Others
#: found in the directory run too, after these.
EXPECTED = ["book", "risk", "router", "sim", "gateways", "e2e"]
#: Components that have a pure-Python reference to be compared with.
REFERENCE_COMPONENTS = ["book", "risk", "router", "sim"]
QUICK_TIMEOUT_S, FULL_TIMEOUT_S = 150.0, 900.0
LOADGEN_RATES = {"quick": [500, 2000], "full": [500, 1000, 2000, 4000]}
LOADGEN_SECONDS = {"quick": 1.0, "full": 3.0}
VERSIONED = ["numpy", "pyzmq", "msgspec", "uvloop", "Cython", "hdrhistogram", "pytest-benchmark"]
SCHEMA = 1


# ---------------------------------------------------------------- running


def closing_json(stdout: str) -> dict | None:
    """The JSON object on the last non-empty line of ``stdout``, or None."""
    for line in reversed(stdout.splitlines()):
        if line.strip():
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                return None
            return value if isinstance(value, dict) else None
    return None


def _tail(path: Path, limit: int = 400) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - limit))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def run_job(name: str, argv: list[str], *, timeout: float, log_dir: Path,
            on_output=None, expect_json: bool = True) -> dict:
    """Run one benchmark process to completion or timeout.

    Parameters
    ----------
    name : str
        Short name; the logs are ``<log_dir>/<name>.out`` and ``.err``.
    argv : list of str
        The command.
    timeout : float
        Seconds before the process group is terminated (then killed).
    log_dir : Path
        Where stdout and stderr go (files, so a chatty script never blocks
        on a full pipe).
    on_output : callable, optional
        Called with the last line of output about five times a second.
    expect_json : bool
        Whether the closing JSON line is required for status ``ok``.

    Returns
    -------
    dict
        ``status`` (``ok``, ``failed``, ``timeout`` or ``no-json``),
        ``seconds``, ``returncode``, ``figures`` (the JSON object or None),
        ``error`` (a short reason or None) and the log paths.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        # Own session: on timeout the whole group goes (bench_e2e starts an
        # engine and an echo server of its own).
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
        timed_out = False
        while proc.poll() is None:
            if time.monotonic() - start > timeout:
                timed_out = True
                _stop_group(proc)
                break
            if on_output is not None:
                on_output(_tail(out_path) or _tail(err_path))
            time.sleep(0.2)
    seconds = round(time.monotonic() - start, 2)
    stdout = out_path.read_text(errors="replace")
    figures = closing_json(stdout)
    result = {"status": "ok", "seconds": seconds, "returncode": proc.returncode,
              "figures": figures, "error": None, "stdout": str(out_path), "stderr": str(err_path)}
    if timed_out:
        result.update(status="timeout", error=f"no result within {timeout:g} s; stopped")
    elif proc.returncode != 0:
        result.update(status="failed", error=f"exit code {proc.returncode}: {_tail(err_path, 2000)}")
    elif expect_json and figures is None:
        result.update(status="no-json", error="the last line of output is not a JSON object")
    return result


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group ``proc`` leads, then SIGKILL what is left."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            # The leader is gone; its children may not be.
            os.killpg(proc.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def discover(bench_dir: Path, only: list[str] | None = None) -> list[tuple[str, Path | None]]:
    """``(name, script)`` for every ``bench_*.py``, expected ones first.

    An expected script that is not there (yet) comes back with ``None``.
    """
    found = {p.stem.removeprefix("bench_"): p for p in sorted(bench_dir.glob("bench_*.py"))}
    # Only the project's own directory promises the expected set.
    expected = EXPECTED if bench_dir.resolve() == BENCH_DIR else []
    names = only or expected + sorted(n for n in found if n not in expected)
    return [(n, found.get(n)) for n in names]


# ---------------------------------------------------------------- machine and commit


def machine_info() -> dict:
    """CPU model, cores, OS, Python, library versions and load at the start."""
    cpu = cpu_model()
    versions = {}
    for dist in VERSIONED:
        try:
            versions[dist.lower()] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist.lower()] = None
    try:
        import zmq
        versions["libzmq"] = zmq.zmq_version()
    except ImportError:
        versions["libzmq"] = None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
            "python": sys.version.split()[0], "versions": versions, "loadavg_at_start": load}


def commit_info(repo: Path = REPO) -> dict:
    """HEAD's hash and branch, and whether the work tree differs from it."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                                  check=False, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        # Not stripped at the front: porcelain lines start with a status column.
        return done.stdout.rstrip() if done.returncode == 0 else None

    status = git("status", "--porcelain")
    lines = status.splitlines() if status else []
    modified = [ln[3:] for ln in lines if not ln.startswith("??")]
    untracked = [ln[3:] for ln in lines if ln.startswith("??")]
    return {"commit": git("rev-parse", "HEAD"), "short": git("rev-parse", "--short", "HEAD"),
            "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(modified) if status is not None else None,
            "modified": modified, "untracked": untracked}


# ---------------------------------------------------------------- micro benchmarks and load


def run_micro(bench_dir: Path, out_dir: Path, timeout: float, on_output=None) -> dict:
    """pytest-benchmark over ``bench_dir``, its JSON in ``out_dir/micro.json``."""
    json_path = out_dir / "micro.json"
    argv = [sys.executable, "-m", "pytest", str(bench_dir), "--benchmark-only",
            f"--benchmark-json={json_path}", "-q", "-p", "no:cacheprovider"]
    result = run_job("micro", argv, timeout=timeout, log_dir=out_dir / "logs",
                     on_output=on_output, expect_json=False)
    result["figures"] = None
    if result["status"] == "ok" and json_path.exists():
        result["figures"] = micro_figures(orjson.loads(json_path.read_bytes()))
        result["json"] = str(json_path)
    return result


def micro_figures(data: dict) -> dict:
    """Median ns per call of each micro benchmark, and cython/reference ratios per group."""
    figures: dict = {}
    groups: dict[str, dict[str, float]] = {}
    for bench in data.get("benchmarks", []):
        median_ns = bench["stats"]["median"] * 1e9
        figures[f"{bench['name']}_median_ns"] = round(median_ns, 1)
        impl = (bench.get("params") or {}).get("cls")
        impl = bench["param"] if "param" in bench and bench["param"] else impl
        groups.setdefault(bench.get("group") or bench["name"], {})[str(impl)] = median_ns
    for group, impls in groups.items():
        if "cython" in impls and "reference" in impls and impls["cython"] > 0:
            key = group.replace(" ", "_").replace("-", "_")
            figures[f"{key}_ratio_vs_reference"] = round(impls["reference"] / impls["cython"], 2)
    return figures


def run_load(mode: str, out_dir: Path, rates: list[float], seconds: float, timeout: float,
             on_output=None) -> dict:
    """Loadgen at each rate against the ZeroMQ echo floor, then against an engine.

    Both servers are started here, one at a time (a 2-core machine cannot
    host both without each stealing the other's core), with bench_e2e's
    benchmark configuration for the engine (account BENCH, no throttle).
    """
    from benchmarks import bench_e2e  # its engine config and echo server: one definition

    load_dir = out_dir / "loadgen"
    runs: dict = {"floor": {}, "engine": {}}
    errors = []
    drain = 30.0 if mode == "full" else 15.0
    for target in ("floor", "engine"):
        port = bench_e2e.free_port()
        endpoint = f"tcp://127.0.0.1:{port}"
        work = load_dir / f"{target}-server"
        work.mkdir(parents=True, exist_ok=True)
        if target == "floor":
            server = subprocess.Popen([sys.executable, "-c", bench_e2e.ECHO_SERVER, endpoint],
                                      stdout=subprocess.PIPE, cwd=REPO)
            server.stdout.readline()
        else:
            try:
                server = bench_e2e.start_engine(port, work)
            except RuntimeError as exc:
                errors.append(f"engine did not start: {exc}")
                break
        try:
            for rate in rates:
                name = f"{target}-{rate:g}"
                argv = [sys.executable, "-m", "engine.cli", "loadgen", "--endpoint", endpoint,
                        "--rate", f"{rate:g}", "--duration", f"{seconds:g}", "--account", "BENCH",
                        "--drain", f"{drain:g}", "--out", str(load_dir / name)]
                if target == "floor":
                    argv.append("--floor")
                res = run_job(f"loadgen-{name}", argv, timeout=timeout, log_dir=out_dir / "logs",
                              on_output=on_output)
                # exit 1 = some requests unanswered: still a result, noted as such.
                if res["status"] == "failed" and res["returncode"] == 1 and res["figures"]:
                    res.update(status="ok", error=None)
                runs[target][f"{rate:g}"] = res
                if res["status"] != "ok":
                    errors.append(f"{name}: {res['status']}: {res['error']}")
        finally:
            server.kill()
            server.wait(10)
    return {"status": "ok" if not errors else "failed", "rates": rates, "seconds_per_rate": seconds,
            "runs": runs, "error": "; ".join(errors) or None}


# ---------------------------------------------------------------- figures


def flatten(figures: dict, prefix: str = "") -> dict:
    """Numeric figures as ``{"a.b": value}``; the machine block and text are left out."""
    out = {}
    for key, value in (figures or {}).items():
        if key in ("machine", "benchmark") and not prefix:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, (int, float)) and math.isfinite(value):
            out[name] = value
    return out


def all_figures(results: dict) -> dict:
    """Every numeric figure of a results.json, as ``{"bench.figure": value}``."""
    out = {}
    for name, res in results.get("benchmarks", {}).items():
        for key, value in flatten(res.get("figures")).items():
            out[f"{name}.{key}"] = value
    micro = results.get("micro") or {}
    for key, value in flatten(micro.get("figures")).items():
        out[f"micro.{key}"] = value
    load = results.get("loadgen") or {}
    for target, by_rate in (load.get("runs") or {}).items():
        for rate, res in by_rate.items():
            lat = ((res.get("figures") or {}).get("latency_us")) or {}
            for kind, stats in lat.items():
                for stat, value in stats.items():
                    if isinstance(value, (int, float)) and stat != "count":
                        out[f"loadgen.{target}.{rate}.{kind}_{stat}_us"] = value
    return out


def reference_ratios(results: dict) -> list[tuple[str, float]]:
    """``(label, x)`` for every speed-up over a pure-Python reference, in run order."""
    out = []
    for comp in REFERENCE_COMPONENTS:
        figures = (results["benchmarks"].get(comp) or {}).get("figures") or {}
        for key, value in figures.items():
            if "ratio" in key and "reference" in key and isinstance(value, (int, float)):
                # "ratio_vs_reference" -> "router", "c_ratio_vs_reference" -> "router c"
                what = key.replace("_vs_reference", "").replace("ratio", "").strip("_")
                out.append((f"{comp} {what}".strip(), float(value)))
    return out


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return "-"
    if isinstance(value, (int, float)):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if isinstance(value, float) else str(value)
    return str(value)


def _ratio(num, den) -> str:
    try:
        return f"{num / den:.2f}x"
    except (TypeError, ZeroDivisionError):
        return "-"


def unanswered_note(figures: dict | None, who: str = "") -> str:
    """`` (N of M unanswered: ...)`` for a loadgen summary with requests never answered.

    Such a run exits 1 and is kept as a result, but its histograms hold the
    answered requests only: the slowest are missing from its percentiles.
    """
    figures = figures or {}
    missing = figures.get("unanswered") or 0
    if not missing:
        return ""
    sent = sum((figures.get("sent") or {}).values())
    return f" ({who}{missing:,} of {sent:,} unanswered: percentiles of the answered only)"


def headline_rows(results: dict) -> list[list[str]]:
    """``[figure, value, same-run baseline, ratio]`` rows for the README."""
    b = {name: (res.get("figures") or {}) for name, res in results["benchmarks"].items()}
    rows = []

    def add(label, value, base_label, base, ratio):
        if value is not None:
            rows.append([label, _fmt(value), f"{base_label} {_fmt(base)}" if base is not None
                         else base_label, ratio])

    e2e = b.get("e2e", {})
    for rate in (1000, 10000):
        for p in ("50", "99"):
            v, f = e2e.get(f"ack_p{p}_us_at_{rate}"), e2e.get(f"floor_p{p}_us_at_{rate}")
            add(f"engine ack p{p} at {rate:,}/s, µs (bench_e2e)", v, "ZeroMQ echo", f,
                _ratio(v, f) + " the floor")
    single, floor_max = e2e.get("max_single_orders_per_s"), e2e.get("floor_max_msgs_per_s")
    add("engine single-order msgs/s, closed loop (bench_e2e)", single,
        "ZeroMQ echo, same client", floor_max, _ratio(single, floor_max) + " the floor")
    # The highest rate offered open loop that the engine kept up with (bench_e2e.keeps_up),
    # and its tail there: the closed loop's rate says nothing of the latency at it.
    sustainable = e2e.get("sustainable_rate_orders_per_s")
    add("engine max sustainable orders/s, open loop (bench_e2e)", sustainable,
        "closed loop", single, _ratio(sustainable, single) + " the closed loop")
    if sustainable:
        v, f = e2e.get("ack_p99_us_at_sustainable"), e2e.get("floor_p99_us_at_sustainable")
        add(f"engine ack p99 at the max sustainable {sustainable:,.0f}/s, µs (bench_e2e)", v,
            "ZeroMQ echo", f, _ratio(v, f) + " the floor")
    load = (results.get("loadgen") or {}).get("runs") or {}
    for rate, res in (load.get("engine") or {}).items():
        floor = ((load.get("floor") or {}).get(rate) or {}).get("figures") or {}
        eng = (res.get("figures") or {}).get("latency_us", {}).get("new", {})
        fl = floor.get("latency_us", {}).get("new", {})
        add(f"loadgen new-order ack p99 at {float(rate):,.0f}/s, µs"
            + unanswered_note(res.get("figures")) + unanswered_note(floor, "floor: "),
            eng.get("p99"), "ZeroMQ echo", fl.get("p99"),
            _ratio(eng.get("p99"), fl.get("p99")) + " the floor")
    book = b.get("book", {})
    add("book batch ops/s", book.get("batch_ops_per_s"), "Python reference",
        book.get("reference_ops_per_s"), _ratio(book.get("batch_ops_per_s"),
                                                book.get("reference_ops_per_s")) + " faster")
    add("book per-call ops/s", book.get("per_call_ops_per_s"), "Python reference",
        book.get("reference_ops_per_s"), _ratio(book.get("per_call_ops_per_s"),
                                                book.get("reference_ops_per_s")) + " faster")
    risk = b.get("risk", {})
    # The engine's own call (the session's gate), as issue 3's target asks.
    add("risk check, engine path, ns/order", risk.get("ns_per_order_engine_path"),
        "Python reference", risk.get("ns_per_order_engine_path_reference"),
        _ratio(risk.get("ns_per_order_engine_path_reference"),
               risk.get("ns_per_order_engine_path")) + " faster")
    router = b.get("router", {})
    add("router decision, ns (4 venues)", router.get("ns_per_decision"), "Python reference",
        router.get("ref_ns_per_decision"),
        _ratio(router.get("ref_ns_per_decision"), router.get("ns_per_decision")) + " faster")
    sim = b.get("sim", {})
    add("simulator events/s", sim.get("events_per_s"), "Python reference book",
        sim.get("reference_events_per_s"),
        _ratio(sim.get("events_per_s"), sim.get("reference_events_per_s")) + " faster")
    add("simulator cost per strategy order, compiled strategy, µs",
        sim.get("us_per_strategy_order_compiled"), "no same-run baseline", None, "-")
    # (No reference ratio here: the reference book's per-order figure is a
    # small difference of two long runs and swings, even below zero, in quick runs.)
    add("simulator cost per strategy order, Python strategy, µs",
        sim.get("us_per_strategy_order"), "no same-run baseline", None, "-")
    gw = b.get("gateways", {})
    add("ZeroMQ gateway events/s", gw.get("zmq_events_per_s"), "journal tail alone",
        gw.get("baseline_events_per_s"), _ratio(gw.get("zmq_events_per_s"),
                                                gw.get("baseline_events_per_s")) + " the tail's rate")
    return rows


def machine_line(results: dict) -> str:
    """One line naming the machine and the commit a run came from."""
    m, c = results["machine"], results["commit"]
    v = m["versions"]
    dirty = " (dirty tree)" if c.get("dirty") else ""
    return (f"{m['cpu']}, {m['cores']} cores, {m['os']}; Python {m['python']}, numpy {v['numpy']}, "
            f"pyzmq {v['pyzmq']} (libzmq {v['libzmq']}), msgspec {v['msgspec']}, uvloop "
            f"{v['uvloop']}, Cython {v['cython']}; commit {c.get('short')}{dirty}; "
            f"{results['mode']} run of {results['started']}")


def _md_table(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"]
    lines += ["| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in r) + " |"
              for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- plots


def make_plots(results: dict, out_dir: Path) -> list[str]:
    """Write the PNG plots the data allows; returns their file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    e2e = (results["benchmarks"].get("e2e") or {}).get("figures") or {}
    load = (results.get("loadgen") or {}).get("runs") or {}

    def load_points(target: str, kind: str, stat: str):
        pts = []
        for rate, res in (load.get(target) or {}).items():
            value = ((res.get("figures") or {}).get("latency_us", {}).get(kind, {})).get(stat)
            if value:
                pts.append((float(rate), value))
        return sorted(pts)

    # 1. latency percentiles against offered load, with the floor
    # (the fixed rates only: the maximum sustainable rate's figures end "_at_sustainable")
    e2e_rates = sorted(int(k.rsplit("_", 1)[1]) for k in e2e
                       if k.startswith("ack_p50_us_at_") and k.rsplit("_", 1)[1].isdigit())
    if e2e_rates or load.get("engine"):
        fig, ax = plt.subplots(figsize=(8, 5))
        for stat, style in (("p50", "o-"), ("p90", "s-"), ("p99", "^-"), ("p99.9", "v-")):
            pts = load_points("engine", "new", stat)
            if pts:
                ax.plot(*zip(*pts), style, label=f"engine new-order ack {stat} (loadgen)")
        for stat, style in (("p50", "o--"), ("p99", "^--")):
            pts = load_points("floor", "new", stat)
            if pts:
                ax.plot(*zip(*pts), style, color="grey", label=f"ZeroMQ echo floor {stat} (loadgen)")
        for key, label, style in (("ack_p50_us_at_", "engine ack p50 (bench_e2e)", "D:"),
                                  ("ack_p99_us_at_", "engine ack p99 (bench_e2e)", "X:"),
                                  ("floor_p99_us_at_", "ZeroMQ floor p99 (bench_e2e)", "x:")):
            pts = [(r, e2e[f"{key}{r}"]) for r in e2e_rates if e2e.get(f"{key}{r}")]
            if pts:
                ax.plot(*zip(*pts), style, label=label)
        sustainable = e2e.get("sustainable_rate_orders_per_s")
        if sustainable and e2e.get("ack_p99_us_at_sustainable"):
            ax.plot([sustainable], [e2e["ack_p99_us_at_sustainable"]], "*", markersize=12,
                    label="engine ack p99 at the max sustainable rate (bench_e2e)")
        ax.set(xscale="log", yscale="log", xlabel="offered load (requests/s, open loop)",
               ylabel="latency from scheduled send (µs)",
               title="Engine latency against offered load")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "latency_vs_load.png", dpi=110)
        plt.close(fig)
        made.append("latency_vs_load.png")

    # 2. latency CDFs from the HDR histograms, percentile axis stretched towards the tail
    hdr_series = []
    from benchmarks.loadgen import load_histogram
    for target in ("engine", "floor"):
        for rate, res in (load.get(target) or {}).items():
            for kind in ("new", "cancel", "replace"):
                path = ((res.get("figures") or {}).get("files") or {}).get(kind)
                if path and Path(path).exists():
                    hist = load_histogram(path)
                    if hist.get_total_count():
                        hdr_series.append((target, float(rate), kind, hist))
    if hdr_series:
        kinds = [k for k in ("new", "cancel", "replace") if any(s[2] == k for s in hdr_series)]
        fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4.5), squeeze=False)
        # One colour per rate; the floor dashed beside the engine at that rate.
        colours = {r: f"C{i}" for i, r in enumerate(sorted({s[1] for s in hdr_series}))}
        for ax, kind in zip(axes[0], kinds):
            for target, rate, k, hist in hdr_series:
                if k != kind:
                    continue
                total, cum, xs, ys = hist.get_total_count(), 0, [], []
                for item in hist.get_recorded_iterator():
                    cum += item.count_added_in_this_iter_step
                    # The maximum is drawn half a sample past the last
                    # percentile the sample size supports, not at infinity.
                    frac = min(cum / total, 1 - 0.5 / total)
                    xs.append(1 / (1 - frac))
                    ys.append(item.value_iterated_to)
                ax.step(xs, ys, where="post", linestyle="--" if target == "floor" else "-",
                        color=colours[rate], label=f"{target} {rate:,.0f}/s")
            ticks = [2, 10, 100, 1000, 10000]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(ticks, ["50%", "90%", "99%", "99.9%", "99.99%"])
            ax.set(xlabel="percentile", ylabel="latency (µs)", title=f"{kind} ack latency")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "latency_cdf.png", dpi=110)
        plt.close(fig)
        made.append("latency_cdf.png")

    # 3. speed-ups over the pure-Python references
    ratios = reference_ratios(results)
    if ratios:
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(ratios) + 1.5))
        labels, values = zip(*ratios)
        ax.barh(range(len(ratios)), values, color="tab:blue")
        ax.set_yticks(range(len(ratios)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.axvline(1.0, color="black", linewidth=0.8)
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:.1f}x", va="center", fontsize=8)
        ax.set(xlabel="speed-up over the pure-Python reference (same run)",
               title="Core throughput against the references")
        fig.tight_layout()
        fig.savefig(out_dir / "throughput_ratios.png", dpi=110)
        plt.close(fig)
        made.append("throughput_ratios.png")

    # 4. the ZeroMQ floor beside the engine, per offered load (bench_e2e)
    if e2e_rates:
        import numpy as np
        fig, ax = plt.subplots(figsize=(8, 4.5))
        x = np.arange(len(e2e_rates))
        series = [("floor p50", "floor_p50_us_at_"), ("floor p99", "floor_p99_us_at_"),
                  ("engine p50", "ack_p50_us_at_"), ("engine p99", "ack_p99_us_at_")]
        for j, (label, key) in enumerate(series):
            ax.bar(x + (j - 1.5) * 0.2, [e2e.get(f"{key}{r}") or 0 for r in e2e_rates], 0.2,
                   label=label, color=["#bbbbbb", "#777777", "tab:blue", "tab:red"][j])
        ax.set_xticks(x, [f"{r:,}/s" for r in e2e_rates])
        ax.set(yscale="log", ylabel="round trip (µs)", xlabel="offered load",
               title="Raw ZeroMQ echo floor against the engine (bench_e2e, TCP loopback)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "zmq_floor.png", dpi=110)
        plt.close(fig)
        made.append("zmq_floor.png")
    return made


# ---------------------------------------------------------------- report


def write_report(results: dict, out_dir: Path, plots: list[str]) -> None:
    """``report.md`` and ``headline.md`` from the results."""
    c, m = results["commit"], results["machine"]
    md = [f"# Kronos Exec benchmark report ({results['mode']})", "",
          f"Started {results['started']}, took {results['seconds']:,.0f} s. "
          "Every figure sits beside a baseline measured in the same run; on a shared machine "
          "only those ratios compare across runs.", "",
          "## Machine and commit", "",
          _md_table(["", ""], [
              ["CPU", f"{m['cpu']} ({m['cores']} cores)"], ["OS", m["os"]],
              ["Python", m["python"]],
              ["libraries", ", ".join(f"{k} {v}" for k, v in m["versions"].items())],
              ["load average at start", str(m["loadavg_at_start"])],
              ["commit", f"{c.get('commit')} on {c.get('branch')}"],
              ["tree", ("dirty: " + ", ".join(c["modified"][:10]) if c.get("dirty") else "clean")
               + (f"; {len(c['untracked'])} untracked file(s)" if c.get("untracked") else "")],
          ]), "", "## Status", ""]
    rows = []
    for name, res in results["benchmarks"].items():
        rows.append([name, res["status"], _fmt(res.get("seconds")), (res.get("error") or "")[:200]])
    for name in ("micro", "loadgen"):
        res = results.get(name)
        if res:
            rows.append([name, res["status"], _fmt(res.get("seconds")),
                         (res.get("error") or "")[:200]])
    md += [_md_table(["benchmark", "status", "seconds", "note"],
                     [[r[0], r[1], r[2], r[3].replace("|", "/").replace("\n", " ")]
                      for r in rows]), ""]
    head = headline_rows(results)
    if head:
        md += ["## Headline", "", _md_table(["figure", "value", "baseline (same run)", "ratio"],
                                            head), ""]
    ratios = reference_ratios(results)
    if ratios:
        md += ["## Core against the pure-Python references", "",
               _md_table(["figure", "speed-up"], [[k, f"{v:.1f}x"] for k, v in ratios]), ""]
    load = results.get("loadgen")
    if load and load.get("runs"):
        md += ["## Open-loop load (kronos-exec loadgen), µs from the scheduled send", "",
               f"{load['seconds_per_rate']:g} s per rate, mix new:cancel:replace 70:20:10, against an engine "
               "started with bench_e2e's configuration, and against the raw ZeroMQ echo at the "
               "same rate (the floor).", ""]
        lrows = []
        for rate, res in load["runs"].get("engine", {}).items():
            fig = res.get("figures") or {}
            floor = ((load["runs"].get("floor", {}).get(rate) or {}).get("figures") or {})
            for kind in ("new", "cancel", "replace"):
                lat = fig.get("latency_us", {}).get(kind, {})
                fl = floor.get("latency_us", {}).get(kind, {})
                lrows.append([f"{float(rate):,.0f}/s {kind}", lat.get("count"), lat.get("p50"),
                              lat.get("p90"), lat.get("p99"), lat.get("p99.9"), lat.get("max"),
                              fl.get("p99"), _ratio(lat.get("p99"), fl.get("p99")),
                              sum((fig.get("rejects") or {}).get(kind, {}).values()),
                              # (per run, not per kind: on the run's first row)
                              fig.get("unanswered") if kind == "new" else ""])
        md += [_md_table(["offered, request", "acks", "p50", "p90", "p99", "p99.9", "max",
                          "floor p99", "p99 / floor", "rejected", "unanswered (run)"], lrows), ""]
        notes = [f"{float(rate):,.0f}/s {target}{unanswered_note(res.get('figures'))}"
                 for target, by_rate in load["runs"].items() for rate, res in by_rate.items()
                 if unanswered_note(res.get("figures"))]
        if notes:
            md += ["Runs with requests never answered within the drain (their percentiles "
                   "leave the slowest out): " + "; ".join(notes) + ".", ""]
    for plot in plots:
        md += [f"![{plot}]({plot})", ""]
    md += ["## All figures", ""]
    for name, res in results["benchmarks"].items():
        flat = flatten(res.get("figures"))
        if flat:
            md += [f"### {name}", "", _md_table(["figure", "value"],
                                                [[k, v] for k, v in flat.items()]), ""]
    micro = results.get("micro") or {}
    if micro.get("figures"):
        md += ["### micro (pytest-benchmark, median)", "",
               _md_table(["figure", "value"], [[k, v] for k, v in micro["figures"].items()]), ""]
    md += ["## Comparing runs", "",
           "`kronos-exec bench --compare OLD/results.json` prints every figure's change against "
           "this run's `results.json`; micro benchmarks: `pytest benchmarks/ --benchmark-only "
           "--benchmark-autosave` on each commit, then `--benchmark-compare`. See "
           "docs/benchmarks.md.", ""]
    (out_dir / "report.md").write_text("\n".join(md))
    headline = ["| figure | value | baseline (same run) | ratio |", "|---|---:|---:|---:|"]
    headline += ["| " + " | ".join(r) + " |" for r in head]
    headline += ["", f"Measured on: {machine_line(results)}.", ""]
    (out_dir / "headline.md").write_text("\n".join(headline))


# ---------------------------------------------------------------- compare


#: Name parts (between underscores) of latencies and costs: times (``_s`` too, as
#: bench_recovery's ``checkpoint_restart_s`` and bench_gateways' ``gateway_cpu_s_zmq``;
#: a rate ends in ``_per_s``, read first) and memory.
_COST_UNITS = frozenset({"us", "ns", "ms", "s", "seconds", "latency", "mb"})
#: Figures that are a run's settings, not its results: no direction.
_SETTINGS = frozenset({"engine_seconds", "simulated_s"})
#: Ratios of a cost to its baseline's (bench_recovery: a restart's or a checkpoint
#: write's seconds over the whole replay's; bench_sim: CPU per simulated second with
#: the resting dark orders over without them), which their names do not say: lower
#: is better.
_COST_RATIOS = frozenset({"ratio_vs_whole_replay", "checkpoint_write_ratio_vs_whole_replay",
                          "checkpoint_write_from_nothing_ratio_vs_whole_replay",
                          "dark_resting_ratio"})


def lower_is_better(name: str) -> bool | None:
    """True for latencies and costs, False for rates and speed-ups, None when unknown.

    Read from the leaf name's parts, not its substrings: ``us_per_strategy_order``
    is a cost in µs, though it holds ``per_s`` (``per_strategy``).
    """
    leaf = name.rsplit(".", 1)[-1]
    if leaf in _SETTINGS:
        return None
    if leaf in _COST_RATIOS:
        return True
    parts = leaf.split("_")
    if leaf.endswith("_per_s"):
        return False
    if _COST_UNITS & set(parts):  # a cost, or a ratio of costs (p99 with / without a gateway)
        return True
    if "ratio" in parts or "vs" in parts:  # a speed-up over a baseline
        return False
    return None


def compare(old: dict, new: dict, threshold: float = 0.05) -> list[dict]:
    """Per figure present in both runs: old, new, relative change and a verdict.

    The verdict is ``better``/``worse`` beyond ``threshold`` (relative) when
    the figure's direction is known, else ``changed``, and ``~`` within it.
    """
    a, b = all_figures(old), all_figures(new)
    rows = []
    for key in sorted(a.keys() & b.keys()):
        va, vb = a[key], b[key]
        change = (vb - va) / abs(va) if va else math.copysign(math.inf, vb) if vb else 0.0
        if abs(change) <= threshold:
            verdict = "~"
        else:
            lower = lower_is_better(key)
            verdict = "changed" if lower is None else \
                ("better" if (change < 0) == lower else "worse")
        rows.append({"figure": key, "old": va, "new": vb, "change": change, "verdict": verdict})
    for key in sorted(a.keys() - b.keys()):
        rows.append({"figure": key, "old": a[key], "new": None, "change": None, "verdict": "gone"})
    for key in sorted(b.keys() - a.keys()):
        rows.append({"figure": key, "old": None, "new": b[key], "change": None, "verdict": "new"})
    return rows


def print_compare(old: dict, new: dict, rows: list[dict], console: Console,
                  changed_only: bool) -> None:
    """The comparison table, with both runs' machines and commits."""
    for label, res in (("old", old), ("new", new)):
        console.print(f"{label}: {machine_line(res)}")
    if old["machine"].get("cpu") != new["machine"].get("cpu") or \
            old["machine"].get("cores") != new["machine"].get("cores"):
        console.print("[bold]different machines: compare the ratios, not the absolute figures[/]")
    if old.get("mode") != new.get("mode"):
        console.print(f"[bold]{old.get('mode')} run against {new.get('mode')} run: sizes differ, "
                      "so only the ratios are comparable[/]")
    table = Table(title="Benchmark figures, old -> new")
    for col in ("figure", "old", "new", "change", ""):
        table.add_column(col, justify="left" if col in ("figure", "") else "right")
    style = {"better": "green", "worse": "red"}
    for r in rows:
        if changed_only and r["verdict"] == "~":
            continue
        change = "-" if r["change"] is None else f"{r['change']:+}" \
            if not math.isfinite(r["change"]) else f"{r['change'] * 100:+.1f}%"
        v = r["verdict"]
        # escape: pytest-benchmark names like "test_sweep[cython]" are not markup.
        table.add_row(escape(r["figure"]), _fmt(r["old"]), _fmt(r["new"]), change,
                      f"[{style[v]}]{v}[/]" if v in style else v)
    console.print(table)
    counts = {v: sum(1 for r in rows if r["verdict"] == v) for v in ("better", "worse", "changed")}
    console.print(f"{len(rows)} figures: {counts['better']} better, {counts['worse']} worse, "
                  f"{counts['changed']} changed without a known direction")


# ---------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``bench``'s options."""
    parser.add_argument("--quick", action="store_true",
                        help="each script's --quick, a short load run, no micro benchmarks")
    parser.add_argument("--out", default="bench-report", help="report directory (bench-report)")
    parser.add_argument("--only", help="comma-separated benchmark names (book,risk,...)")
    parser.add_argument("--timeout", type=float,
                        help=f"seconds per script before it is stopped and reported as timed out "
                             f"(default {QUICK_TIMEOUT_S:g} quick, {FULL_TIMEOUT_S:g} full)")
    parser.add_argument("--micro", action=argparse.BooleanOptionalAction, default=None,
                        help="run the pytest-benchmark micro benchmarks (default: full mode only)")
    parser.add_argument("--loadgen", action=argparse.BooleanOptionalAction, default=True,
                        help="offer open-loop load to an engine this command starts (default on)")
    parser.add_argument("--loadgen-rates", help="comma-separated offered rates for the load runs")
    parser.add_argument("--bench-dir", default=str(BENCH_DIR), help=argparse.SUPPRESS)
    parser.add_argument("--compare", metavar="OLD.json",
                        help="compare OLD.json with --new (no benchmarks run)")
    parser.add_argument("--new", metavar="NEW.json",
                        help="the newer results for --compare (default OUT/results.json)")
    parser.add_argument("--threshold", type=float, default=5.0,
                        help="percent change under which --compare calls a figure unchanged")
    parser.add_argument("--changed-only", action="store_true",
                        help="--compare lists only figures beyond the threshold")


def run(args: argparse.Namespace) -> int:
    """Run the benchmarks and write the report, or compare two results files."""
    console = Console(highlight=False, width=120)
    out_dir = Path(args.out)
    if args.compare:
        new_path = Path(args.new) if args.new else out_dir / "results.json"
        try:
            old, new = (orjson.loads(Path(p).read_bytes()) for p in (args.compare, new_path))
        except (OSError, orjson.JSONDecodeError) as exc:
            console.print(f"bench --compare: {exc}")
            return 2
        rows = compare(old, new, args.threshold / 100)
        print_compare(old, new, rows, console, args.changed_only)
        return 0

    mode = "quick" if args.quick else "full"
    timeout = args.timeout or (QUICK_TIMEOUT_S if args.quick else FULL_TIMEOUT_S)
    bench_dir = Path(args.bench_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    only = [n.strip() for n in args.only.split(",")] if args.only else None
    if only:
        # A typo would run nothing and pass: skipped is for an expected script not there.
        known = set(EXPECTED) | {p.stem.removeprefix("bench_") for p in bench_dir.glob("bench_*.py")}
        unknown = [n for n in only if n not in known]
        if unknown:
            console.print(f"bench --only: no benchmark {', '.join(map(repr, unknown))} "
                          f"(benchmarks: {', '.join(sorted(known))})")
            return 2
    scripts = discover(bench_dir, only)
    micro = args.micro if args.micro is not None else not args.quick
    micro = micro and any(bench_dir.glob("test_*.py"))
    rates = [float(r) for r in args.loadgen_rates.split(",")] if args.loadgen_rates \
        else LOADGEN_RATES[mode]
    results = {"schema": SCHEMA, "mode": mode,
               "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
               "machine": machine_info(), "commit": commit_info(), "benchmarks": {},
               "micro": None, "loadgen": None}
    started = time.monotonic()
    steps = len(scripts) + micro + bool(args.loadgen)

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        console=console, transient=False)
    with progress:
        task = progress.add_task("benchmarks", total=steps)

        def on_output(label):
            def show(line: str) -> None:
                progress.update(task, description=escape(f"{label}: {line[:70]}"))
            return show

        def done(name: str, res: dict) -> None:
            progress.advance(task)
            colour = "green" if res["status"] == "ok" else "red"
            seconds = f"{res['seconds']:.1f} s" if res.get("seconds") is not None else ""
            progress.console.print(f"[{colour}]{res['status']:>8}[/] {name} {seconds}"
                                   + (f"  ({escape(res['error'][:90])})" if res.get("error") else ""))

        for name, script in scripts:
            if script is None:
                res = {"status": "skipped", "seconds": None, "figures": None,
                       "error": f"benchmarks/bench_{name}.py is not there"}
            else:
                argv = [sys.executable, str(script)] + (["--quick"] if args.quick else [])
                res = run_job(name, argv, timeout=timeout, log_dir=out_dir / "logs",
                              on_output=on_output(name))
            results["benchmarks"][name] = res
            done(name, res)
        if micro:
            res = run_micro(bench_dir, out_dir, timeout, on_output("micro"))
            results["micro"] = res
            done("micro (pytest-benchmark)", res)
        if args.loadgen:
            t0 = time.monotonic()
            try:
                res = run_load(mode, out_dir, rates, LOADGEN_SECONDS[mode], timeout,
                               on_output("loadgen"))
            except Exception as exc:  # noqa: BLE001  (reported, never fatal to the report)
                res = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "runs": {}}
            res["seconds"] = round(time.monotonic() - t0, 2)
            results["loadgen"] = res
            done("loadgen", res)
        progress.update(task, description="done")

    results["seconds"] = round(time.monotonic() - started, 1)
    (out_dir / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    try:
        plots = make_plots(results, out_dir)
    except Exception as exc:  # noqa: BLE001  (a plot must not cost the report)
        console.print(f"[red]plots failed: {type(exc).__name__}: {exc}[/]")
        plots = []
    write_report(results, out_dir, plots)
    head = headline_rows(results)
    if head:
        table = Table(title="Headline (each against a baseline from the same run)")
        for col in ("figure", "value", "baseline (same run)", "ratio"):
            table.add_column(col, justify="left" if col == "figure" else "right")
        for r in head:
            table.add_row(*r)
        console.print(table)
    console.print(f"{results['seconds']:,.0f} s; report: {out_dir / 'report.md'}, "
                  f"results: {out_dir / 'results.json'}")
    statuses = [r["status"] for r in results["benchmarks"].values() if r["status"] != "skipped"]
    statuses += [results[k]["status"] for k in ("micro", "loadgen") if results[k]]
    summary = {"mode": mode, "seconds": results["seconds"],
               "statuses": {n: r["status"] for n, r in results["benchmarks"].items()},
               "report": str(out_dir / "report.md")}
    print(orjson.dumps(summary).decode(), flush=True)
    return 0 if all(s == "ok" for s in statuses) else 1
