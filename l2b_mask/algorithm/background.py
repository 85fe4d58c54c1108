"""Background threads that overlap disk I/O with compute.

The model holds the cores; reading the next block (a positioned read, which releases the
GIL) and writing the last one happen beside it, so the inference never waits on disk. Queues
are bounded, so memory stays a few blocks whatever the scene length, and an exception in the
thread is re-raised in the caller, never lost.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate `items` produced by a background thread, at most `depth` ahead."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(_Failure(exc))
        finally:
            # A generator's clean-up (closing its files) runs here, on the thread that opened
            # them: netCDF-C is not thread-safe, so a granule is only ever touched by one thread.
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="l2b-mask-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=5)


class BackgroundWriter(Generic[T]):
    """Calls `write(item)` for each submitted item in order, on one background thread."""

    def __init__(self, write: Callable[[T], None], depth: int = 2) -> None:
        self._write = write
        self._q: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="l2b-mask-writer", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (item := self._q.get()) is not _DONE:
            if self._failure is None:
                try:
                    self._write(item)  # type: ignore[arg-type]
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                    self._failure = exc

    def submit(self, item: T) -> None:
        if self._failure is not None:
            raise self._failure
        self._q.put(item)

    def close(self) -> None:
        """Wait for every submitted item to be written; re-raise a write failure."""
        self._q.put(_DONE)
        self._thread.join()
        if self._failure is not None:
            raise self._failure

    def __enter__(self) -> BackgroundWriter[T]:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:  # the caller is failing already: stop quietly, its exception wins
            self._q.put(_DONE)
            self._thread.join()
