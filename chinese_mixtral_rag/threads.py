"""Blocking iterators consumed from async code, each in a thread of its own.

Why not LangChain's ``run_in_executor`` per item: a backend allows one generation at a time per
thread (:class:`~chinese_mixtral_rag.backends.base.GenerationLock`), and llama.cpp's state
belongs to the thread driving it. Here one thread owns the iterator from start to close.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_DONE = object()


async def iterate_in_thread(make: Callable[[], Iterator[T]]) -> AsyncGenerator[T, None]:
    """Run a blocking iterator in its own thread and yield its items without blocking the loop.

    The thread owns the iterator from start to close, so an early exit or cancellation of the
    consumer stops generation cleanly (the backend's lock is released).
    """
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()
    cancelled = threading.Event()

    def send(item: Any, error: BaseException | None = None) -> None:
        try:
            loop.call_soon_threadsafe(items.put_nowait, (item, error))
        except RuntimeError:  # the loop is gone: nobody is listening any more
            cancelled.set()

    def produce() -> None:
        try:
            iterator = make()
            try:
                for item in iterator:
                    send(item)
                    if cancelled.is_set():
                        break
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:
            send(_DONE, exc)
        else:
            send(_DONE)

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(produce,), name="cmrag-astream", daemon=True).start()
    try:
        while True:
            item, error = await items.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        cancelled.set()
