"""Atomic file writes: a temporary file in the destination's folder, then a rename."""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from gdpw.common.errors import UsageError

PART = ".part"  # marks a temporary file of an atomic writer


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` (``.NAME.*.partSUFFIX``: the same suffix, so writers that
    open files by name pick the format from it). On success it is flushed to disk and replaces
    ``path`` (with the usual file mode); on any failure it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f"{PART}{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file open for writing, written as ``atomic_path`` writes."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        yield fh


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """``Path(path).write_text(text)`` (UTF-8), written as ``atomic_path`` writes."""
    with atomic_write(path) as fh:
        fh.write(text.encode())


def remove_partial(path: str | os.PathLike[str]) -> list[Path]:
    """Remove what a killed writer of ``path`` left behind (its ``atomic_path`` temporaries)."""
    path = Path(path)
    stale = sorted(path.parent.glob(f".{glob.escape(path.stem)}.*{PART}{glob.escape(path.suffix)}"))
    for item in stale:
        item.unlink(missing_ok=True)
    return stale


def check_output(output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None], folder: bool = False) -> Path:
    """Refuse, before any work, an output that would overwrite one of ``inputs`` or that is a
    folder where a file is written (``folder``: the output is a folder of results)."""
    out = Path(output)
    for item in inputs:
        if item is None:
            continue
        src = Path(item)
        if out.resolve() == src.resolve() or (out.exists() and src.exists() and os.path.samefile(out, src)):
            raise UsageError(f"the output {out} is an input; name another output so the input is kept")
    if out.is_dir() and not folder:
        raise UsageError(f"the output {out} is a folder; name a file in it")
    if out.exists() and not out.is_dir() and folder:
        raise UsageError(f"the output {out} is a file; name a folder for the results")
    return out
