"""Small asyncio helpers the engine's services share."""
from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


def log_if_it_dies(task: asyncio.Task, what: str) -> asyncio.Task:
    """Log ``task``'s error, with its traceback, the moment it dies of one; returns ``task``.

    A background task's exception is otherwise only seen when someone awaits
    it: the engine would go on without its clock (``/healthz`` says so) and
    with nothing in the log to say why.
    """
    def done(finished: asyncio.Task) -> None:
        exc = None if finished.cancelled() else finished.exception()
        if exc is not None:
            log.error("%s stopped on an error: %s", what, exc, exc_info=exc)
    task.add_done_callback(done)
    return task


async def cancel_and_wait(task: asyncio.Future | None) -> None:
    """Cancel ``task`` (if any) and return once it has finished; never raises its error.

    Waiting matters: a task left to finish after its resources are closed
    (a poll on a socket, say) would then touch them closed. A task that had
    already died of an error was logged when it died (:func:`log_if_it_dies`);
    one that fails while it stops is logged here. Either way the caller's stop
    goes on to close what it must (the sockets, the journal).
    """
    if task is None:
        return
    if task.done():
        if not task.cancelled():
            task.exception()  # (retrieved: asyncio would complain of it at exit)
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:  # noqa: BLE001 - see the docstring
        log.exception("a task failed as it was stopped")
