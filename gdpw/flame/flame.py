"""The FLAME head model as a PyTorch layer (in the style of ``smplx``).

Joints: 0 global (root), 1 neck, 2 jaw, 3 left eye, 4 right eye. Buffers are registered from the
model file; ``forward`` takes explicit tensors and returns explicit tensors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .blendshapes import BlendshapeMap
from .io import FlameData, FlameFileError, LandmarkEmbedding, load_flame, load_landmark_embedding
from .lbs import batch_rodrigues, lbs

DEMO_HEAD = Path(__file__).resolve().parents[1] / "assets" / "demo_head.npz"
DEMO_REGRESSOR = DEMO_HEAD.parent / "demo_regressor.npz"  # the demo head's FLAME regressor (gdpw.fit.regressor)
NUM_JOINTS = 5


@dataclass
class FlameParams:
    """FLAME parameters of a batch; every field is (B, n). Missing fields are zeros."""

    shape: torch.Tensor | None = None
    expression: torch.Tensor | None = None
    global_pose: torch.Tensor | None = None  # (B, 3) axis-angle
    neck_pose: torch.Tensor | None = None  # (B, 3)
    jaw_pose: torch.Tensor | None = None  # (B, 3)
    eye_pose: torch.Tensor | None = None  # (B, 6) left then right eye

    def batch_size(self) -> int:
        for v in (self.shape, self.expression, self.global_pose, self.neck_pose, self.jaw_pose, self.eye_pose):
            if v is not None:
                return int(v.shape[0])
        return 1


@dataclass
class FlameOutput:
    vertices: torch.Tensor  # (B, V, 3)
    joints: torch.Tensor  # (B, 5, 3)
    landmarks: torch.Tensor | None = field(default=None)  # (B, L, 3) when an embedding is loaded


def resolve_flame_path(path: str | os.PathLike[str] | None) -> Path:
    """The given FLAME file, or the built-in demo head when ``path`` is None."""
    return DEMO_HEAD if path is None else Path(path)


class FLAME(nn.Module):
    """FLAME: shape and expression blendshapes, pose correctives and linear blend skinning."""

    def __init__(
        self,
        model: FlameData | str | os.PathLike[str] | None = None,
        n_shape: int | None = None,
        n_expression: int | None = None,
        landmark_embedding: LandmarkEmbedding | tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        data = model if isinstance(model, FlameData) else load_flame(resolve_flame_path(model))
        self.n_shape = data.n_shape if n_shape is None else min(n_shape, data.n_shape)
        self.n_expression = data.n_expression if n_expression is None else min(n_expression, data.n_expression)
        shape_dirs = data.shapedirs[:, :, : self.n_shape]
        exp_dirs = data.shapedirs[:, :, data.n_shape : data.n_shape + self.n_expression]
        f32 = torch.float32
        self.register_buffer("v_template", torch.as_tensor(data.v_template, dtype=f32))
        self.register_buffer("shapedirs", torch.as_tensor(np.concatenate([shape_dirs, exp_dirs], axis=2), dtype=f32))
        n_pose = data.posedirs.shape[2]
        self.register_buffer(
            "posedirs", torch.as_tensor(data.posedirs.reshape(-1, n_pose).T.copy(), dtype=f32)
        )  # ((J - 1) * 9, V * 3)
        self.register_buffer("J_regressor", torch.as_tensor(data.j_regressor, dtype=f32))
        self.register_buffer("lbs_weights", torch.as_tensor(data.weights, dtype=f32))
        parents = data.kintree_table[0].copy()
        parents[0] = -1
        self.register_buffer("parents", torch.as_tensor(parents, dtype=torch.long))
        self.register_buffer("faces", torch.as_tensor(data.faces, dtype=torch.long))
        if landmark_embedding is None and data.lmk_faces_idx is not None and data.lmk_bary_coords is not None:
            landmark_embedding = (data.lmk_faces_idx, data.lmk_bary_coords)
        if isinstance(landmark_embedding, tuple):
            landmark_embedding = LandmarkEmbedding(*landmark_embedding)
        emb = landmark_embedding

        def buffer(name: str, value: np.ndarray | None, dtype: torch.dtype) -> None:
            self.register_buffer(name, None if value is None else torch.as_tensor(value, dtype=dtype))

        buffer("lmk_faces_idx", None if emb is None else emb.faces, torch.long)
        buffer("lmk_bary_coords", None if emb is None else emb.bary, f32)
        buffer("dyn_lmk_faces_idx", None if emb is None else emb.dynamic_faces, torch.long)
        buffer("dyn_lmk_bary_coords", None if emb is None else emb.dynamic_bary, f32)
        names = data.expression_names
        self.expression_names = None if names is None else names[: self.n_expression]
        self.uvs = None if data.uvs is None else torch.as_tensor(data.uvs, dtype=f32)
        self.uv_faces = None if data.uv_faces is None else torch.as_tensor(data.uv_faces, dtype=torch.long)

    @property
    def num_verts(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def lid_components(self) -> tuple[int, ...]:
        """Expression components that close an eyelid (named ``blink*``: 1 closed, 0 at rest);
        none for FLAME's PCA expressions, whose components have no names."""
        return tuple(i for i, n in enumerate(self.expression_names or ()) if n.startswith("blink"))

    def _param(self, value: torch.Tensor | None, batch: int, width: int, name: str) -> torch.Tensor:
        if value is None:
            return self.v_template.new_zeros(batch, width)
        if value.ndim != 2 or value.shape[0] != batch:
            raise ValueError(f"FLAME {name} must be ({batch}, n), got {tuple(value.shape)}")
        if value.shape[1] > width:
            raise ValueError(f"FLAME {name} has {value.shape[1]} values, the model takes at most {width}")
        return nn.functional.pad(value.to(self.v_template), (0, width - value.shape[1]))

    def forward(self, params: FlameParams) -> FlameOutput:
        b = params.batch_size()
        shape = self._param(params.shape, b, self.n_shape, "shape")
        expression = self._param(params.expression, b, self.n_expression, "expression")
        pose = torch.cat(
            [
                self._param(params.global_pose, b, 3, "global_pose"),
                self._param(params.neck_pose, b, 3, "neck_pose"),
                self._param(params.jaw_pose, b, 3, "jaw_pose"),
                self._param(params.eye_pose, b, 6, "eye_pose"),
            ],
            dim=1,
        )
        betas = torch.cat([shape, expression], dim=1)
        verts, joints = lbs(
            betas, pose, self.v_template, self.shapedirs, self.posedirs, self.J_regressor, self.parents, self.lbs_weights
        )
        landmarks = None
        if self.lmk_faces_idx is not None and self.lmk_bary_coords is not None:
            landmarks = self.landmarks68(verts, pose[:, :3], pose[:, 3:6])
        return FlameOutput(verts, joints, landmarks)

    def landmark_embedding(self, global_pose: torch.Tensor,
                           neck_pose: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Triangle ids (B, L) and barycentric coordinates (B, L, 3) of the landmarks of heads in
        these poses: the static points, with the first 17 replaced by the yaw bin's jaw contour
        when the embedding has a dynamic contour (DECA's)."""
        assert self.lmk_faces_idx is not None and self.lmk_bary_coords is not None
        b = global_pose.shape[0]
        faces = self.lmk_faces_idx.expand(b, -1)
        bary = self.lmk_bary_coords.expand(b, -1, -1)
        if self.dyn_lmk_faces_idx is None or self.dyn_lmk_bary_coords is None:
            return faces, bary
        bins = contour_bins(global_pose, neck_pose)
        n = self.dyn_lmk_faces_idx.shape[1]
        return (torch.cat([self.dyn_lmk_faces_idx[bins], faces[:, n:]], 1),
                torch.cat([self.dyn_lmk_bary_coords[bins], bary[:, n:]], 1))

    def landmarks68(self, verts: torch.Tensor, global_pose: torch.Tensor, neck_pose: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, 3) landmarks of posed vertices, the jaw contour following the head's yaw when dynamic."""
        return self.landmarks(verts, *self.landmark_embedding(global_pose, neck_pose))

    def landmarks(self, verts: torch.Tensor, faces_idx: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
        """Points on the mesh given by triangle ids (L,) or (B, L) and barycentric coordinates
        (L, 3) or (B, L, 3): (B, L, 3)."""
        b = verts.shape[0]
        corners = self.faces[faces_idx].expand(b, -1, -1)  # (B, L, 3)
        tri = torch.gather(verts, 1, corners.reshape(b, -1, 1).expand(-1, -1, 3)).reshape(b, -1, 3, 3)
        return (tri * bary.expand(b, -1, -1)[..., None]).sum(dim=2)


def contour_bins(global_pose: torch.Tensor, neck_pose: torch.Tensor | None = None) -> torch.Tensor:
    """DECA's dynamic jaw-contour bin (B,) of heads in these poses: the yaw of the head's rotation
    (``global @ neck``) in whole degrees, 0..39 for 0..39 (and more), 40..78 for -1..-39 (and less)."""
    rot = batch_rodrigues(global_pose)
    if neck_pose is not None:
        rot = rot @ batch_rodrigues(neck_pose)
    yaw = torch.rad2deg(torch.atan2(-rot[:, 2, 0], torch.sqrt(rot[:, 0, 0] ** 2 + rot[:, 1, 0] ** 2)))
    deg = torch.round(yaw.clamp(max=39)).long()
    return torch.where(deg < 0, torch.where(deg < -39, torch.full_like(deg, 78), 39 - deg), deg)


@dataclass(frozen=True)
class HeadConfig:
    """Which head model: shared by every command that fits, renders or evaluates."""

    flame: str | None = None  # FLAME generic_model.pkl (2020/2023); default: the built-in demo head
    landmark_embedding: str | None = None  # 68-point landmark embedding for FLAME (DECA's landmark_embedding.npy, ...)
    dynamic_embedding: str | None = None  # with FLAME's flame_static_embedding.pkl: its flame_dynamic_embedding.npy
    blendshape_map: str | None = None  # MediaPipe blendshapes -> expression map (the demo head's: gdpw/assets/demo_blendshapes.npz)
    regressor: str | None = None  # FLAME regressor (.npz) for live tracking; default: the demo head's, or NAME.regressor.npz beside a FLAME model

    def load(self) -> FLAME:
        if self.dynamic_embedding and not self.landmark_embedding:
            raise FlameFileError("--dynamic-embedding goes with --landmark-embedding flame_static_embedding.pkl")
        embedding = (load_landmark_embedding(self.landmark_embedding, self.dynamic_embedding)
                     if self.landmark_embedding else None)
        return FLAME(self.flame, landmark_embedding=embedding)

    def load_blendshapes(self) -> BlendshapeMap | None:
        """The given blendshape map, or None (landmarks alone). Off by default: the demo head's map,
        learned on its renders, lowers the expression correlation on real drivers (docs/real_follow.md)."""
        return BlendshapeMap.from_file(self.blendshape_map) if self.blendshape_map is not None else None

    def regressor_path(self) -> Path:
        """Where the head's FLAME regressor is: the given file, the demo head's shipped one, or
        ``NAME.regressor.npz`` beside a FLAME model (``gdpw fit --train-regressor`` writes it there)."""
        if self.regressor is not None:
            return Path(self.regressor)
        return DEMO_REGRESSOR if self.flame is None else Path(self.flame).with_suffix(".regressor.npz")
