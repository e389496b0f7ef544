"""A bounded queue in front of the model: at most ``concurrency`` answers at a time.

A local model generates one answer at a time (its lock would make the rest wait unseen); a remote
one can take several. Requests beyond ``concurrency`` wait in a queue of ``queue_size``; when the
queue is full a request is refused at once (429), and one that waited ``wait_seconds`` without a
turn is refused too (503), so a client is never left hanging on an overloaded server.
"""

from __future__ import annotations

import asyncio

from chinese_mixtral_rag.errors import ServerBusy


class Gate:
    """Turns for generation: ``async with gate.turn(): ...`` or ``enter``/``leave``."""

    def __init__(self, concurrency: int, queue_size: int, wait_seconds: float) -> None:
        self.concurrency = max(concurrency, 1)
        self.queue_size = max(queue_size, 0)
        self.wait_seconds = wait_seconds
        self._free = asyncio.Semaphore(self.concurrency)
        self.admitted = 0
        """Answers running or waiting; counted before any await, so a burst cannot slip past."""
        self.busy = 0

    @property
    def waiting(self) -> int:
        return self.admitted - self.busy

    async def enter(self) -> None:
        """Wait for a turn, or raise :class:`~chinese_mixtral_rag.errors.ServerBusy`."""
        if self.admitted >= self.concurrency + self.queue_size:
            raise ServerBusy(
                429,
                f"The server is busy: {self.busy} answer(s) running and {self.waiting} waiting "
                "(the queue is full). Retry in a few seconds.",
                retry_after=5,
            )
        self.admitted += 1
        try:
            await asyncio.wait_for(self._free.acquire(), self.wait_seconds)
        except asyncio.TimeoutError as exc:  # builtin TimeoutError only from 3.11
            self.admitted -= 1
            raise ServerBusy(
                503,
                f"No turn within {self.wait_seconds:g} s: the model is answering other requests. "
                "Retry later.",
                retry_after=int(self.wait_seconds) or 1,
            ) from exc
        except BaseException:
            self.admitted -= 1
            raise
        self.busy += 1

    def leave(self) -> None:
        self.busy -= 1
        self.admitted -= 1
        self._free.release()
