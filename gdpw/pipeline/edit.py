"""Editing FLAME parameters: head pose, jaw, expression, gaze, shape; sweeps; frontalisation."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from gdpw.common.config import from_dict
from gdpw.common.crop import CropRecipe
from gdpw.common.errors import ConfigError
from gdpw.flame import FlameSequence
from gdpw.flame.lbs import (
    axis_angle_to_euler_yxz,
    batch_rodrigues,
    euler_to_axis_angle,
    euler_yxz_to_axis_angle,
    matrix_to_axis_angle,
)


@dataclass(frozen=True)
class EditSpec:
    """Changes to a fitted face. Angles in degrees; pose changes are relative to the fit."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    jaw: float = 0.0  # extra jaw opening, degrees
    gaze_x: float = 0.0  # eye rotation, degrees (right is positive)
    gaze_y: float = 0.0
    expression: dict[int, float] = field(default_factory=dict)  # component -> value (replaces the fit's)
    shape: dict[int, float] = field(default_factory=dict)  # component -> value (replaces the fit's)
    frontalize: bool = False  # start from a frontal head pose

    def __post_init__(self) -> None:
        for name in ANGLES:
            value = getattr(self, name)
            if not math.isfinite(value) or abs(value) > MAX_ANGLE:
                raise ConfigError(f"{name} must be a number of degrees within +-{MAX_ANGLE:g}, got {value}")
        for what, comps in (("expression", self.expression), ("shape", self.shape)):
            for k, v in comps.items():
                if k < 0 or not math.isfinite(v) or abs(v) > MAX_COEFFICIENT:
                    raise ConfigError(f"{what} component {k}={v}: components are indices >= 0 with values "
                                      f"within +-{MAX_COEFFICIENT:g} (standard deviations)")

    @classmethod
    def from_json(cls, path: str | Path) -> EditSpec:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"edit file not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: not a JSON edit file ({err})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: an edit file holds a JSON object of edit fields, not a {type(data).__name__}")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EditSpec:
        return from_dict(cls, data, what="edit")


ANGLES = ("yaw", "pitch", "roll", "jaw", "gaze_x", "gaze_y")
MAX_ANGLE = 180.0
MAX_COEFFICIENT = 10.0


def parse_sweep(text: str) -> tuple[str, float, float, int]:
    """'yaw:-30:30:15' -> ('yaw', -30.0, 30.0, 15), checked: a sweepable field, finite ends, 2+ steps."""
    parts = text.split(":")
    try:
        if len(parts) != 4:
            raise ValueError
        name, start, stop, steps = parts[0], float(parts[1]), float(parts[2]), int(parts[3])
    except ValueError:
        raise ConfigError(f"--sweep takes FIELD:START:STOP:STEPS (e.g. yaw:-30:30:15), got {text!r}") from None
    if name not in ANGLES:
        raise ConfigError(f"cannot sweep {name!r}; sweep one of {', '.join(ANGLES)}")
    if steps < 2 or steps > 1000:
        raise ConfigError(f"a sweep needs 2 to 1000 steps, got {steps}")
    EditSpec(**{name: start}), EditSpec(**{name: stop})  # the same bounds as single edits
    return name, start, stop, steps


def parse_components(text: str | None) -> dict[int, float]:
    """'0=1.5,3=-1' -> {0: 1.5, 3: -1.0}."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        k, sep, v = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[int(k)] = float(v)
        except ValueError:
            raise ConfigError(f"expected INDEX=VALUE (e.g. 0=1.5), got {item!r}") from None
    return out


def apply_edit(fit: FlameSequence, edit: EditSpec, frame: int = 0, convention: CropRecipe = "gdpw") -> FlameSequence:
    """A one-frame fit with ``edit`` applied to frame ``frame`` of ``fit``.

    Head and jaw angles follow the recipe: gdpw turns the head about the world's axes (yaw, then
    pitch, then roll composed onto the fit's rotation) and opens the jaw about its x axis; the
    official ``face_edit_demo`` adds to the extrinsic 'yxz' Euler angles of the head (yaw, pitch,
    roll) and of the jaw (the opening is the angle about x).
    """
    rad = math.pi / 180
    exp = fit.expression[frame : frame + 1].clone()
    for k, v in edit.expression.items():
        if not 0 <= k < exp.shape[1]:
            raise ConfigError(f"expression component {k} out of range (0..{exp.shape[1] - 1})")
        exp[0, k] = v
    shape = fit.shape.clone()
    for k, v in edit.shape.items():
        if not 0 <= k < shape.shape[0]:
            raise ConfigError(f"shape component {k} out of range (0..{shape.shape[0] - 1})")
        shape[k] = v
    base = torch.zeros(1, 3) if edit.frontalize else fit.global_pose[frame : frame + 1]
    jaw = fit.jaw_pose[frame : frame + 1].clone()
    if convention == "official":
        turn = torch.tensor([[edit.yaw, edit.pitch, edit.roll]], dtype=base.dtype) * rad
        pose = euler_yxz_to_axis_angle(axis_angle_to_euler_yxz(base) + turn)
        jaw = euler_yxz_to_axis_angle(axis_angle_to_euler_yxz(jaw) + torch.tensor([[0.0, edit.jaw * rad, 0.0]], dtype=jaw.dtype))
    else:
        turn = euler_to_axis_angle(torch.tensor([edit.yaw * rad]), torch.tensor([edit.pitch * rad]), torch.tensor([edit.roll * rad]))
        pose = matrix_to_axis_angle(batch_rodrigues(turn) @ batch_rodrigues(base))
        jaw[0, 0] += edit.jaw * rad
    eye = fit.eye_pose[frame : frame + 1].clone()
    eye[0, [1, 4]] += edit.gaze_x * rad
    eye[0, [0, 3]] += edit.gaze_y * rad
    return fit.select(frame).replace(shape=shape, expression=exp, global_pose=pose, jaw_pose=jaw, eye_pose=eye)


def sweep(fit: FlameSequence, base: EditSpec, name: str, start: float, stop: float, steps: int,
          convention: CropRecipe = "gdpw") -> FlameSequence:
    """Frames that move edit field ``name`` from ``start`` to ``stop`` and back."""
    if name not in {f.name for f in fields(EditSpec)} or name in ("expression", "shape", "frontalize"):
        raise ConfigError(f"cannot sweep {name!r}; sweep one of yaw, pitch, roll, jaw, gaze_x, gaze_y")
    values = torch.linspace(start, stop, steps).tolist()
    values = values + values[::-1][1:]
    frames = [apply_edit(fit, replace(base, **{name: v}), convention=convention) for v in values]
    return FlameSequence.cat(frames)
