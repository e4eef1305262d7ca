"""FLAME parameters over time: one identity, T frames of expression, poses and camera.

``FlameSequence`` is the one type the fitter returns, the animator transfers and renders, edits
change, dataset shards and ``gdpw fit`` files store, and evaluation reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .camera import orthographic
from .flame import FLAME, FlameParams

# the per-frame fields, in FLAME's pose order, then the camera
FRAME_FIELDS = ("expression", "global_pose", "neck_pose", "jaw_pose", "eye_pose", "camera")
POSE_WIDTHS = {"global_pose": 3, "neck_pose": 3, "jaw_pose": 3, "eye_pose": 6, "camera": 3}

Index = int | slice | Sequence[int] | torch.Tensor


@dataclass
class FlameSequence:
    """T frames of one person; every per-frame field is (T, n), ``shape`` (n_shape,) is shared.

    ``neck_pose`` and ``landmark_error`` default to zeros. Cameras are orthographic
    ``[scale, tx, ty]`` (see ``gdpw.flame.camera``) in the NDC of the crop they were fitted in.
    """

    shape: torch.Tensor  # (n_shape,)
    expression: torch.Tensor  # (T, n_exp)
    global_pose: torch.Tensor  # (T, 3) axis-angle
    jaw_pose: torch.Tensor  # (T, 3)
    eye_pose: torch.Tensor  # (T, 6) left then right eye
    camera: torch.Tensor  # (T, 3)
    neck_pose: torch.Tensor | None = None  # (T, 3); zeros when None
    landmark_error: torch.Tensor | None = None  # (T,) RMS landmark error of a fit (NDC); zeros when None

    def __post_init__(self) -> None:
        t = int(self.camera.shape[0])
        if self.neck_pose is None:
            self.neck_pose = self.global_pose.new_zeros(t, 3)
        if self.landmark_error is None:
            self.landmark_error = self.camera.new_zeros(t)
        for k in FRAME_FIELDS:
            v = getattr(self, k)
            if v.ndim != 2 or v.shape[0] != t or (k in POSE_WIDTHS and v.shape[1] != POSE_WIDTHS[k]):
                raise ValueError(f"FlameSequence.{k} must be ({t}, {POSE_WIDTHS.get(k, 'n')}), got {tuple(v.shape)}")
        if self.shape.ndim != 1:
            raise ValueError(f"FlameSequence.shape must be (n_shape,), got {tuple(self.shape.shape)}")

    def __len__(self) -> int:
        return int(self.camera.shape[0])

    # -- selection ----------------------------------------------------------------------------
    def select(self, idx: Index) -> FlameSequence:
        """Frames ``idx`` (an int keeps a one-frame sequence)."""
        sel = [idx] if isinstance(idx, int) else idx
        return self.replace(**{k: getattr(self, k)[sel] for k in (*FRAME_FIELDS, "landmark_error")})

    @staticmethod
    def cat(parts: Sequence[FlameSequence], shape: torch.Tensor | None = None) -> FlameSequence:
        """Frames of ``parts`` one after the other; the shape of the first part unless given."""
        first = parts[0]
        return first.replace(shape=first.shape if shape is None else shape,
                             **{k: torch.cat([getattr(p, k) for p in parts]) for k in (*FRAME_FIELDS, "landmark_error")})

    def repeat(self, n: int) -> FlameSequence:
        """A one-frame sequence held for ``n`` frames."""
        return self.select([0] * n)

    def replace(self, **changes: Any) -> FlameSequence:
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str) -> FlameSequence:
        return self.replace(**{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)})

    def clone(self) -> FlameSequence:
        return self.replace(**{f.name: getattr(self, f.name).clone() for f in dataclasses.fields(self)})

    # -- geometry -----------------------------------------------------------------------------
    def params(self, idx: Index | None = None) -> FlameParams:
        """The FLAME layer's input for frames ``idx`` (all when None)."""
        seq = self if idx is None else self.select(idx)
        n = len(seq)
        return FlameParams(shape=seq.shape.expand(n, -1), expression=seq.expression, global_pose=seq.global_pose,
                           neck_pose=seq.neck_pose, jaw_pose=seq.jaw_pose, eye_pose=seq.eye_pose)

    def image_vertices(self, flame: FLAME, idx: Index | None = None) -> torch.Tensor:
        """(n, V, 3) image-space vertices of frames ``idx``, on ``flame``'s device."""
        seq = (self if idx is None else self.select(idx)).to(flame.v_template.device)
        return orthographic(flame(seq.params()).vertices, seq.camera)

    # -- files --------------------------------------------------------------------------------
    def to_numpy(self) -> dict[str, np.ndarray]:
        """float32 arrays by field name (what ``np.savez`` stores)."""
        return {f.name: getattr(self, f.name).detach().cpu().numpy().astype(np.float32) for f in dataclasses.fields(self)}

    @classmethod
    def from_numpy(cls, data: dict[str, np.ndarray] | Any) -> FlameSequence:
        """Read ``to_numpy``'s arrays (an npz file's too). ``shape`` may be per frame (T, n), as
        in dataset shards: the first row is taken. Missing neck pose and errors are zeros."""
        missing = [k for k in ("shape", *FRAME_FIELDS) if k not in data and k != "neck_pose"]
        if missing:
            raise KeyError(f"FLAME parameters lack {missing}")
        shape = np.asarray(data["shape"], dtype=np.float32)
        fields = {k: torch.from_numpy(np.asarray(data[k], dtype=np.float32))
                  for k in (*FRAME_FIELDS, "landmark_error") if k in data}
        return cls(shape=torch.from_numpy(shape[0] if shape.ndim == 2 else shape), **fields)
