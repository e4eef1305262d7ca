"""Seconds spent per pipeline stage (``gdpw animate --profile``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class StageTimes(dict[str, float]):
    """Seconds by stage name, added up over calls. ``sync`` (``torch.cuda.synchronize`` for a GPU)
    runs at the end of every stage, so asynchronous work is counted where it was launched."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.sync = sync

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            self[name] = self.get(name, 0.0) + time.perf_counter() - start
