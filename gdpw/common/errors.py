"""gdpw's errors. Each carries one line for users and names no command-line flag: the CLI adds
flags (see ``gdpw.cli.main``), and callers decide control flow by type, never by message.

``GdpwError`` is a ``ValueError`` so that code catching bad values keeps working; ``gdpw``'s
``main`` catches only these (and ``FileNotFoundError``), so an internal bug keeps its traceback.
"""

from __future__ import annotations


class GdpwError(ValueError):
    """An error the user can fix (bad input, missing or wrong asset); the message is one line."""


class UsageError(GdpwError):
    """A command line that asks for something impossible (a bad combination of arguments)."""


class ConfigError(GdpwError):
    """A configuration value or key that gdpw does not accept."""


class MissingAssetError(GdpwError):
    """A model file or package the user has to bring (MediaPipe's task, DECA, VGG, ...)."""


class CheckpointError(GdpwError):
    """A checkpoint file that cannot be used."""


class FlameFileError(GdpwError):
    """A FLAME model or landmark-embedding file that cannot be used."""


class FlameModelError(GdpwError):
    """A FLAME model that cannot do what was asked (no landmark embedding, too few components)."""


class DatasetError(GdpwError):
    """A dataset folder or shard that cannot be read, or that does not fit the run."""


class VideoError(GdpwError):
    """An image or video that cannot be read or written."""


class FaceDetectionError(GdpwError):
    """No usable face in an image."""


class NoFaceError(FaceDetectionError):
    """No face was found (or it was too small to use)."""


class MultipleFacesError(FaceDetectionError):
    """Several faces were found and none was chosen."""

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.count = count


class FaceIndexError(FaceDetectionError):
    """The chosen face index does not exist in the image."""
