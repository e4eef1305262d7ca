"""What the command line prints for errors users can fix: one line, with the flag that fixes it."""

from __future__ import annotations

import errno

from gdpw.common.errors import FaceIndexError, FlameModelError, GdpwError, MultipleFacesError

# what the command line adds to a library error: the flag that fixes it
HINTS: dict[type[GdpwError], str] = {
    MultipleFacesError: "choose one with --face-index (0 = largest)",
    FaceIndexError: "--face-index counts from 0 = the largest face",
    FlameModelError: "a FLAME model needs --landmark-embedding for landmark fitting; DECA needs --flame generic_model.pkl",
}

# operating-system errors that are the user's to fix (disk space, permissions, a folder for a file), not bugs
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.EFBIG}


def user_message(err: GdpwError | OSError) -> str:
    """The error's line, with the flag that fixes it when there is one."""
    if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or err} (files written before are intact)"
    hint = next((h for cls, h in HINTS.items() if isinstance(err, cls)), None)
    return f"{err}; {hint}" if hint else str(err)
