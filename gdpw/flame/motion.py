"""Motion files: a driving performance without the driver's face.

``gdpw fit --input talk.mp4 -o talk.motion.npz`` writes one; ``gdpw animate --driving
talk.motion.npz`` and ``gdpw edit --save-motion`` read and write them. A motion file holds, per
frame, the FLAME expression, the head, neck, jaw and eye poses and the orthographic camera, plus
the frame rate, the crop it was fitted in (size and recipe) and what the FLAME model was (vertex
and component counts), so that it is refused for another model. No image data, and no identity
(shape): the source's identity is used whenever a motion file drives a portrait.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gdpw.common.errors import FlameFileError
from gdpw.common.files import atomic_write

from .flame import FLAME
from .sequence import FRAME_FIELDS, FlameSequence

FORMAT = "gdpw-motion"
VERSION = 1
SUFFIX = ".motion.npz"


@dataclass
class MotionFile:
    params: FlameSequence  # shape is zeros: a motion file carries no identity
    fps: float
    crop_size: int  # the crop the cameras' NDC refers to (pixels)
    recipe: str  # the crop recipe the cameras were fitted in: "gdpw" or "official"


def is_motion_file(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(SUFFIX)


def save_motion(path: str | os.PathLike[str], params: FlameSequence, flame: FLAME, fps: float, crop_size: int,
                recipe: str = "gdpw") -> None:
    """Write ``params`` (its shape left out) as a motion file for ``flame``."""
    meta = {"format": FORMAT, "version": VERSION, "fps": float(fps), "crop_size": int(crop_size), "recipe": recipe,
            "num_verts": flame.num_verts, "n_expression": int(params.expression.shape[1])}
    arrays = {k: getattr(params, k).detach().cpu().numpy().astype(np.float32) for k in FRAME_FIELDS}
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.array(json.dumps(meta)), **arrays)
    with atomic_write(path) as fh:
        fh.write(buf.getvalue())


def load_motion(path: str | os.PathLike[str], flame: FLAME) -> MotionFile:
    """Read a motion file and check it fits ``flame``; one-line errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"motion file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in FRAME_FIELDS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise FlameFileError(f"{path}: not a readable motion file ({type(err).__name__}: {err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        found = meta if isinstance(meta, dict) else {}
        raise FlameFileError(f"{path}: not a gdpw motion file (format {found.get('format')!r}, version {found.get('version')!r})")
    fps, crop_size, recipe = _meta_fields(path, meta)
    if meta["num_verts"] != flame.num_verts or not 0 < meta["n_expression"] <= flame.n_expression:
        raise FlameFileError(f"{path}: motion of a FLAME model with {meta['num_verts']} vertices and {meta['n_expression']} "
                             f"expression components; this one has {flame.num_verts} and {flame.n_expression}")
    tensors = {}
    for k, v in arrays.items():
        if v.ndim != 2 or not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
            raise FlameFileError(f"{path}: {k} must be a 2-D array of numbers, got {v.dtype} of shape {v.shape}")
        tensors[k] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
    expression = tensors["expression"]
    if expression.shape[1] != meta["n_expression"]:
        raise FlameFileError(f"{path}: expression has {expression.shape[1]} components, its meta says {meta['n_expression']}")
    # a model with fewer components than this one: the missing ones are zero (FLAME's mean)
    tensors["expression"] = torch.nn.functional.pad(expression, (0, flame.n_expression - expression.shape[1]))
    try:
        params = FlameSequence(torch.zeros(flame.n_shape), *(tensors[k] for k in
                               ("expression", "global_pose", "jaw_pose", "eye_pose", "camera")),
                               neck_pose=tensors["neck_pose"])
    except ValueError as err:
        raise FlameFileError(f"{path}: inconsistent motion arrays ({err})") from None
    if len(params) == 0 or not all(torch.isfinite(getattr(params, k)).all() for k in FRAME_FIELDS):
        raise FlameFileError(f"{path}: a motion file needs at least one frame of finite values")
    return MotionFile(params, fps, crop_size, recipe)


def _meta_fields(path: Path, meta: dict[str, object]) -> tuple[float, int, str]:
    """The frame rate, crop size and recipe of a motion file's meta, each checked."""
    missing = [k for k in ("fps", "crop_size", "num_verts", "n_expression") if k not in meta]
    if missing:
        raise FlameFileError(f"{path}: the motion file's meta lacks {', '.join(missing)}")
    fps, crop_size, recipe = meta["fps"], meta["crop_size"], meta.get("recipe", "gdpw")
    counts_ok = all(type(meta[k]) is int for k in ("crop_size", "num_verts", "n_expression"))
    if not (isinstance(fps, (int, float)) and 0 < fps <= 1000 and counts_ok and 0 < crop_size <= 8192
            and recipe in ("gdpw", "official")):
        raise FlameFileError(f"{path}: the motion file's meta has bad values (fps {fps!r}, crop_size {crop_size!r}, "
                             f"recipe {recipe!r}, num_verts {meta['num_verts']!r}, n_expression {meta['n_expression']!r})")
    return float(fps), int(crop_size), str(recipe)
