"""Hand work to a consumer running on a background thread, so that producing and consuming overlap.

    with Background(lambda frames: write_video(out, frames, fps)) as writer:
        for frames, _ in animator.animate_stream(...):   # generation stays on this thread ...
            writer.put_all(frames)                       # ... while the writer thread encodes
    n = writer.result                                    # write_video's return value

The heavy PyTorch work stays on the calling thread (its thread pools are set up there: the same
fitting runs 20-35 % slower on a second thread on a 2-core CPU); the consumer (video encoding,
which releases the GIL in libx264) runs beside it. An error on either side stops both: the
consumer's is raised by the next ``put``, the producer's ends the consumer's input with it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class Background(Generic[T]):
    """``consume`` (a function of an iterable) on a thread, fed by ``put``; at most ``depth`` items queued."""

    def __init__(self, consume: Callable[[Iterable[T]], Any], depth: int = 8) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._ended = False  # the consumer has seen the end of its input
        self.result: Any = None
        self._thread = threading.Thread(target=self._run, args=(consume,), daemon=True)
        self._thread.start()

    def _items(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                self._ended = True
                return
            if isinstance(item, _Raised):  # the producer failed: the consumer stops with its error
                raise item.error
            yield item  # type: ignore[misc]

    def _run(self, consume: Callable[[Iterable[T]], Any]) -> None:
        try:
            self.result = consume(self._items())
        except BaseException as err:
            self._error = err
        finally:
            while not self._ended:  # keep a producer from blocking on a full queue until it ends the input
                self._ended = self._queue.get() is _DONE

    def put(self, item: T) -> None:
        """Queue ``item`` (blocks while the queue is full); raises the consumer's error if it failed."""
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def put_all(self, items: Iterable[T]) -> None:
        for item in items:
            self.put(item)

    def finish(self, error: BaseException | None = None) -> Any:
        """End the input (with the producer's ``error``, if any), wait for the consumer and return
        its result, or raise its error."""
        self._queue.put(_DONE if error is None else _Raised(error))
        if error is not None:
            self._queue.put(_DONE)  # for a consumer that had already failed and drains the queue
        self._thread.join()
        if self._error is not None and self._error is not error:
            raise self._error
        return self.result

    def __enter__(self) -> Background[T]:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self.finish()
        else:
            try:
                self.finish(exc)
            except BaseException:
                pass  # the producer's own error is the one that propagates


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error
