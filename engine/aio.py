"""Small asyncio helpers the engine's services share."""
from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Future | None) -> None:
    """Cancel ``task`` (if any) and return once it has finished.

    Waiting matters: a task left to finish after its resources are closed
    (a poll on a socket, say) would then touch them closed.
    """
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
