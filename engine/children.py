"""Child processes of the engine: started so that they die with it.

Role: the gateways (``isolation = "process"``) and the checkpoint writer
(:mod:`engine.checkpoint`) run in children the engine starts with
multiprocessing's ``spawn`` (a forked child would inherit ZeroMQ contexts and
an event loop it must not use). Both need the same two things: a child that
the kernel kills when the engine's process ends, and a start that does not
tie that signal to a short-lived thread.
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import logging
import multiprocessing
import os
import queue
import signal
import threading

log = logging.getLogger(__name__)

#: ``prctl`` option: the signal a process gets when its parent ends (linux/prctl.h).
PR_SET_PDEATHSIG = 1

_spawn_requests: queue.SimpleQueue | None = None
_spawn_lock = threading.Lock()


def spawn_child(process: multiprocessing.process.BaseProcess) -> None:
    """Start ``process`` from a thread that lives as long as this process.

    Linux sends the parent-death signal (:func:`die_with_parent`) when the
    *thread* that forked the child ends, not the process: a gateway started
    from a short-lived thread (a worker of an executor, a test's helper)
    would be killed when that thread finished. One daemon thread forks every
    child, so the signal comes only when the engine's process ends.
    """
    global _spawn_requests
    with _spawn_lock:
        if _spawn_requests is None:
            _spawn_requests = queue.SimpleQueue()
            threading.Thread(target=_spawn_loop, args=(_spawn_requests,), name="child-spawner",
                             daemon=True).start()
    done: concurrent.futures.Future = concurrent.futures.Future()
    _spawn_requests.put((process, done))
    done.result()


def _spawn_loop(requests: queue.SimpleQueue) -> None:
    # What this thread starts inherits its signal mask: multiprocessing's
    # resource tracker, started with the first child, ignores SIGINT and
    # SIGTERM but not SIGHUP, so a SIGHUP to the engine's process group (a
    # key reload) killed it. Blocked here, it never reaches the tracker (nor
    # the children, which ignore it anyway).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    while True:
        process, done = requests.get()
        try:
            process.start()
        except BaseException as exc:  # noqa: BLE001 - raised again in the thread that asked
            done.set_exception(exc)
        else:
            done.set_result(None)


def die_with_parent(parent: int) -> bool:
    """Have the kernel SIGKILL this process the moment the engine's process ends.

    Without it a child whose engine was killed (``kill -9``, the OOM killer)
    would keep the gateway's ports bound and its cursor file in use until it
    noticed (``gateways.base.PARENT_CHECK_S``), and an engine restarted at once (as a
    supervisor does) could not bind them. SIGKILL rather than SIGTERM: the
    child has nothing to save that a kill loses (the cursor file is replaced
    whole and lags at most ``cursor_interval_ms``, which at-least-once
    delivery re-sends; a PostgreSQL transaction rolls back, NATS drops
    re-sent ids), while a graceful stop could wait out a NATS flush or a
    back-off, and no library in the child can catch or delay a SIGKILL.

    Parameters
    ----------
    parent : int
        The engine's pid, as the engine gave it: if the engine ended before
        the signal was armed, nothing will send it.

    Returns
    -------
    bool
        False if the engine is already gone (the caller exits at once).
        Where ``prctl`` does not exist (not Linux), the child relies on its
        periodic check alone.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        prctl = None
    if prctl is not None:
        prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    # Checked after arming: an engine that died before then sent no signal,
    # and this child has been handed to another parent already.
    return os.getppid() == parent
