"""A learned FLAME regressor: what MediaPipe gives per face (478 landmarks, 52 blendshapes, the
facial transformation matrix) to FLAME expression, jaw, eyes, head pose and camera in one pass of
a small network, where the landmark fitter needs tens of optimiser steps.

It reads motion, not identity: its input is a frame's MediaPipe outputs beside a reference frame's
of the same face (the differences of landmarks and blendshapes, the rotation between the two
transformation matrices, and the reference's own rotation and blendshapes), and its output is how
the FLAME parameters moved from the reference's. The reference's parameters come from the landmark
fitter (once per stream), so the identity, which renders of one head model cannot cover, is fitted
and never regressed; a real face's own landmark quirks cancel in the differences.

It is trained where the truth is known: renders of the head model in use (``gdpw.data.synth``:
sampled identities, expressions, poses, lighting and backgrounds) read back by MediaPipe, pairs of
frames of one clip (``gdpw.fit.regressor_train``; ``gdpw fit --train-regressor``). Landmarks are
centred and divided by their RMS radius, and the camera is predicted relative to them, so input
and output are in any crop's NDC.

    regressor = FlameRegressor.from_file(path, flame)
    ref = regressor.reference(reference_face, reference_box, reference_fit)   # once per stream
    fit = regressor.predict(face, box, ref)                                   # one frame

The file is an ``.npz`` of plain arrays (no pickles) with the network, its normalisation, the
blendshape names, a fingerprint of the head model it was made for and its held-out accuracy.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gdpw.common.crop import CropBox
from gdpw.common.errors import GdpwError
from gdpw.flame import FLAME, FlameSequence
from gdpw.flame.lbs import batch_rodrigues, matrix_to_axis_angle

from .detect import FaceLandmarks

NUM_POINTS = 478
OUTPUTS = ("expression", "jaw_pose", "eye_pose", "global_pose", "camera")  # the output's blocks, in order
LANDMARKS = slice(0, 2 * NUM_POINTS)  # where each part of ``face_features`` lies
ROTATION = slice(2 * NUM_POINTS, 2 * NUM_POINTS + 9)
SCORES = slice(2 * NUM_POINTS + 9, None)


class RegressorError(GdpwError):
    """A regressor file that cannot be used (missing, corrupt, or made for another head model)."""


def head_fingerprint(flame: FLAME) -> str:
    """A short hash of a head model's template, faces and blendshapes: a regressor is tied to one model."""
    h = hashlib.sha256()
    for t in (flame.v_template, flame.faces, flame.shapedirs):
        h.update(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes())
    return h.hexdigest()[:16]


def face_rotation(face: FaceLandmarks) -> np.ndarray:
    """(3, 3) the rotation of MediaPipe's facial transformation matrix (camera axes: x right, y up,
    z towards the viewer, as FLAME's world)."""
    assert face.pose is not None
    r = face.pose[:3, :3]
    return r / np.cbrt(max(np.linalg.det(r), 1e-12))


def face_features(face: FaceLandmarks, box: CropBox, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The network's face input and the landmarks' frame in the box's NDC.

    Returns the features (478 * 2 centred and scaled landmarks, the 9 entries of the transformation
    matrix's rotation, the blendshape scores in ``names``' order) and (centre x, centre y, radius).
    """
    pts = box.to_ndc(face.points[:NUM_POINTS]).astype(np.float64)
    centre = pts.mean(0)
    radius = float(np.sqrt(((pts - centre) ** 2).sum(1).mean()))
    rot = np.zeros(9) if face.pose is None else face_rotation(face)
    scores = [face.blendshapes.get(n, 0.0) for n in names]
    feats = np.concatenate([((pts - centre) / radius).reshape(-1), np.ravel(rot), scores])
    return feats.astype(np.float32), np.array([centre[0], centre[1], radius], np.float32)


def camera_to_output(camera: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """(N, 3) orthographic cameras as the network predicts them: log of the scale over the
    landmarks' radius, and the translation less the part the landmarks' centre explains."""
    s = camera[:, 0]
    return np.stack([np.log(s / frame[:, 2]), camera[:, 1] - frame[:, 0] / s, camera[:, 2] + frame[:, 1] / s], 1)


def output_to_camera(out: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """``camera_to_output``'s inverse."""
    s = frame[:, 2] * out[:, 0].exp()
    return torch.stack([s, out[:, 1] + frame[:, 0] / s, out[:, 2] - frame[:, 1] / s], 1)


def pair_input(feats: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """(N, D) network inputs from frames' and their references' ``face_features``: the landmarks'
    and scores' differences, the rotation from the reference to the frame, and the reference's
    rotation and scores."""
    rot, rot_ref = feats[:, ROTATION].view(-1, 3, 3), ref[:, ROTATION].view(-1, 3, 3)
    return torch.cat([feats[:, LANDMARKS] - ref[:, LANDMARKS], (rot @ rot_ref.transpose(1, 2)).flatten(1),
                      feats[:, SCORES] - ref[:, SCORES], ref[:, ROTATION], ref[:, SCORES]], 1)


def _head(n_expression: int) -> slice:
    """Where the global pose lies in the outputs (after expression, jaw and eyes)."""
    return slice(n_expression + 9, n_expression + 12)


def pair_target(target: torch.Tensor, ref: torch.Tensor, n_expression: int) -> torch.Tensor:
    """(N, K) how parameters (``OUTPUTS`` in order, cameras in ``camera_to_output``'s form) moved
    from ``ref``: differences, but the head rotation as the axis-angle of ``R R_ref^T``."""
    g = _head(n_expression)
    delta = target - ref
    rel = batch_rodrigues(target[:, g]) @ batch_rodrigues(ref[:, g]).transpose(1, 2)
    return torch.cat([delta[:, : g.start], matrix_to_axis_angle(rel), delta[:, g.stop :]], 1)


def apply_motion(delta: torch.Tensor, ref: torch.Tensor, n_expression: int, head: torch.Tensor | None = None) -> torch.Tensor:
    """``pair_target``'s inverse: the parameters ``delta`` moved from ``ref``; ``head`` (N, 3)
    given is the head pose instead of ``ref``'s turned by ``delta``'s."""
    g = _head(n_expression)
    out = ref + delta
    if head is None:
        head = matrix_to_axis_angle(batch_rodrigues(delta[:, g]) @ batch_rodrigues(ref[:, g]))
    return torch.cat([out[:, : g.start], head, out[:, g.stop :]], 1)


class RegressorNet(nn.Module):
    """A small MLP on standardised inputs and outputs."""

    def __init__(self, inputs: int, outputs: int, hidden: int = 256) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(inputs, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                    nn.Linear(hidden, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@dataclass(frozen=True)
class Reference:
    """A reference frame made ready for reading frames against it (``FlameRegressor.reference``):
    what ``predict`` needs of it every frame, computed once."""

    fit: FlameSequence  # its one-frame fit (camera in its box's NDC)
    features: torch.Tensor  # (1, D) its ``face_features``
    outputs: torch.Tensor  # (1, K) its fit as the network's outputs (``FlameRegressor.join``)
    rotation: np.ndarray  # (3, 3) its ``face_rotation``
    pose: torch.Tensor  # (1, 3, 3) its fit's head rotation


@dataclass
class FlameRegressor:
    """A trained regressor and what it needs to be used: input and output normalisation, the
    blendshape names, the head model it was made for and its held-out accuracy."""

    net: RegressorNet
    in_mean: torch.Tensor  # (D,) of ``pair_input``
    in_std: torch.Tensor  # (D,)
    out_mean: torch.Tensor  # (K,) of ``pair_target``
    out_std: torch.Tensor  # (K,)
    names: tuple[str, ...]  # blendshape names, in input order
    n_shape: int
    n_expression: int
    head: str  # head_fingerprint of the model it was trained for
    accuracy: dict[str, float]  # held-out figures (mean absolute errors, correlations)

    @property
    def sizes(self) -> dict[str, int]:
        """Each output block's width."""
        return dict(zip(OUTPUTS, (self.n_expression, 3, 6, 3, 3)))

    def motion(self, feats: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """(N, K) how the parameters moved (``pair_target``'s form) from (N, D) frame and reference features."""
        return self.net((pair_input(feats, ref) - self.in_mean) / self.in_std) * self.out_std + self.out_mean

    def split(self, out: torch.Tensor, frame: torch.Tensor) -> dict[str, torch.Tensor]:
        """Absolute outputs (``OUTPUTS`` in order) as FLAME fields, the camera in the landmarks' NDC."""
        parts = dict(zip(self.sizes, torch.split(out, list(self.sizes.values()), 1)))
        parts["camera"] = output_to_camera(parts["camera"], frame)
        return parts

    def join(self, fit: FlameSequence, frame: np.ndarray) -> torch.Tensor:
        """(T, K) a fit's parameters as outputs (``split``'s inverse; ``frame``: the landmarks' (T, 3))."""
        cam = camera_to_output(fit.camera.numpy(), frame)
        return torch.cat([fit.expression, fit.jaw_pose, fit.eye_pose, fit.global_pose, torch.from_numpy(cam).float()], 1)

    @torch.no_grad()
    def reference(self, face: FaceLandmarks, box: CropBox, fit: FlameSequence) -> Reference:
        """``face`` (in ``box``), whose fit is ``fit`` (its first frame; camera in ``box``'s NDC), as
        the reference of ``predict``."""
        feats, frame = face_features(face, box, self.names)
        fit = fit.select([0])
        rotation = np.eye(3) if face.pose is None else face_rotation(face)
        return Reference(fit, torch.from_numpy(feats)[None], self.join(fit, frame[None]), rotation,
                         batch_rodrigues(fit.global_pose))

    @torch.no_grad()
    def predict(self, face: FaceLandmarks, box: CropBox, ref: Reference, head: torch.Tensor | None = None) -> FlameSequence:
        """``face``'s one-frame fit (camera in ``box``'s NDC): ``ref``'s (its shape kept) moved as
        the network reads the two faces; ``head`` (1, 3) given is the head pose instead of the network's."""
        feats, frame = face_features(face, box, self.names)
        delta = self.motion(torch.from_numpy(feats)[None], ref.features)
        parts = self.split(apply_motion(delta, ref.outputs, self.n_expression, head), torch.from_numpy(frame)[None])
        return FlameSequence(ref.fit.shape.clone(), parts["expression"], parts["global_pose"], parts["jaw_pose"],
                             parts["eye_pose"], parts["camera"])

    @staticmethod
    def head_rotation(face: FaceLandmarks, ref: Reference) -> torch.Tensor:
        """(1, 3) ``ref``'s head pose turned as MediaPipe's transformation matrices turned from
        ``ref``'s face to ``face``: on real faces within a degree of the landmark fit, where the
        network, trained on renders, reads mouth motion as pitch."""
        turn = torch.from_numpy(face_rotation(face) @ ref.rotation.T).float()
        return matrix_to_axis_angle(turn[None] @ ref.pose)

    # -- files --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        from gdpw.common.files import atomic_write

        arrays = {f"net.{k}": v.detach().numpy() for k, v in self.net.state_dict().items()}
        with atomic_write(path) as fh:
            np.savez_compressed(
                fh, **arrays, in_mean=self.in_mean.numpy(), in_std=self.in_std.numpy(), out_mean=self.out_mean.numpy(),
                out_std=self.out_std.numpy(), names=np.array(self.names), n_shape=np.int64(self.n_shape),
                n_expression=np.int64(self.n_expression), head=np.array(self.head),
                accuracy_keys=np.array(list(self.accuracy)), accuracy_values=np.array(list(self.accuracy.values()), np.float64))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], flame: FLAME) -> FlameRegressor:
        """Load a regressor made for ``flame``; ``RegressorError`` (one line) when it cannot be used."""
        path = Path(path)
        if not path.is_file():
            raise RegressorError(f"FLAME regressor not found: {path} (make one: gdpw fit --train-regressor)")
        try:
            with np.load(path, allow_pickle=False) as z:
                state = {k[4:]: torch.from_numpy(z[k]) for k in z.files if k.startswith("net.")}
                first, last = state["layers.0.weight"], state["layers.4.weight"]
                net = RegressorNet(first.shape[1], last.shape[0], first.shape[0])
                net.load_state_dict(state)
                out = cls(net.eval(), *(torch.from_numpy(z[k]).float() for k in ("in_mean", "in_std", "out_mean", "out_std")),
                          tuple(str(n) for n in z["names"]), int(z["n_shape"]), int(z["n_expression"]), str(z["head"]),
                          dict(zip((str(k) for k in z["accuracy_keys"]), (float(v) for v in z["accuracy_values"]))))
        except (OSError, ValueError, KeyError, RuntimeError, EOFError, zipfile.BadZipFile) as err:
            raise RegressorError(f"{path}: not a FLAME regressor ({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
        if out.head != head_fingerprint(flame) or out.n_shape != flame.n_shape or out.n_expression != flame.n_expression:
            raise RegressorError(f"{path}: made for another head model (retrain it: gdpw fit --train-regressor)")
        width = 2 * NUM_POINTS + 2 * (9 + len(out.names))
        if out.in_mean.numel() != width or out.out_mean.numel() != sum(out.sizes.values()):
            raise RegressorError(f"{path}: its network does not fit its head model ({out.in_mean.numel()} inputs)")
        if not all(torch.isfinite(p).all() for p in (*net.parameters(), out.in_std, out.out_std)):
            raise RegressorError(f"{path}: holds NaN or infinite weights")
        return out
