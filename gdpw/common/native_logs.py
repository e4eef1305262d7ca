"""Native libraries' log lines (MediaPipe's absl and TensorFlow Lite's) written straight to the
process's stderr, which Python's logging cannot filter: hidden unless gdpw's logger is verbose."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

LOGGER = "gdpw"  # ``gdpw --verbose`` sets it to DEBUG


def verbose() -> bool:
    return logging.getLogger(LOGGER).isEnabledFor(logging.DEBUG)


@contextmanager
def native_stderr_hidden() -> Iterator[None]:
    """File descriptor 2 points at /dev/null inside the block (unless verbose), so the lines native
    code prints while, say, a MediaPipe graph starts are not shown; Python's own writes to
    ``sys.stderr`` are flushed before and resume after."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
