"""FAN (Bulat and Tzimiropoulos 2017), the 68-point landmark network of the ``face-alignment``
package (AKD in FOMM and its followers), with that package's module names so that its 2D-FAN-4
weights load unchanged, and its crop and heatmap decoding.

The package's pipeline, followed step by step:
1. a face box (x0, y0, x1, y1) gives the centre (box centre, raised by 0.12 of its height) and the
   scale ((width + height) / 195);
2. the image is cropped to a square of side 200 * scale about the centre (integer corners, black
   beyond the image) and resized to 256x256 (bilinear);
3. the network returns 68 heatmaps at 64x64 per hourglass; the last one is decoded: the arg-max,
   moved a quarter pixel towards the larger neighbour, minus half a pixel, and mapped back to
   the image with the crop's inverse, truncated to whole pixels (as the package does).
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gdpw.common.errors import CheckpointError

from .weights import load_checked

CROP = 256
HEATMAP = 64
BOX_SCALE = 195.0  # the face detectors' reference scale in face-alignment
CENTRE_RAISE = 0.12
FAN_FILES = "face-alignment's 2D-FAN-4 weights (2DFAN4-cd938726ad.zip, TorchScript, or a state dict)"


class ConvBlock(nn.Module):
    """Pre-activation block whose three 3x3 convs (widths out/2, out/4, out/4) are concatenated."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout // 2, 3, padding=1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout // 2), nn.Conv2d(cout // 2, cout // 4, 3, padding=1, bias=False)
        self.bn3, self.conv3 = nn.BatchNorm2d(cout // 4), nn.Conv2d(cout // 4, cout // 4, 3, padding=1, bias=False)
        self.downsample = None
        if cin != cout:
            self.downsample = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(F.relu(self.bn1(x)))
        b = self.conv2(F.relu(self.bn2(a)))
        c = self.conv3(F.relu(self.bn3(b)))
        skip = x if self.downsample is None else self.downsample(x)
        return torch.cat([a, b, c], 1) + skip


class HourGlass(nn.Module):
    """Recursive hourglass of ``depth`` levels: ``b1_L`` keeps the resolution, ``b2_L`` goes down,
    the next level (or ``b2_plus_1`` at the bottom), then ``b3_L`` and a nearest upsampling."""

    def __init__(self, depth: int, width: int) -> None:
        super().__init__()
        self.depth = depth
        for level in range(depth, 0, -1):
            for name in ("b1", "b2", "b3"):
                self.add_module(f"{name}_{level}", ConvBlock(width, width))
        self.add_module("b2_plus_1", ConvBlock(width, width))

    def level(self, n: int, x: torch.Tensor) -> torch.Tensor:
        low = getattr(self, f"b2_{n}")(F.avg_pool2d(x, 2, stride=2))
        low = self.level(n - 1, low) if n > 1 else self.b2_plus_1(low)
        up = F.interpolate(getattr(self, f"b3_{n}")(low), scale_factor=2, mode="nearest")
        return getattr(self, f"b1_{n}")(x) + up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.level(self.depth, x)


class FAN(nn.Module):
    """``stacks`` hourglasses (4 in 2D-FAN-4); ``forward`` returns each stack's 68 heatmaps at 1/4 size."""

    def __init__(self, stacks: int = 4, points: int = 68) -> None:
        super().__init__()
        self.stacks = stacks
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64)
        self.conv2, self.conv3, self.conv4 = ConvBlock(64, 128), ConvBlock(128, 128), ConvBlock(128, 256)
        for i in range(stacks):
            self.add_module(f"m{i}", HourGlass(4, 256))
            self.add_module(f"top_m_{i}", ConvBlock(256, 256))
            self.add_module(f"conv_last{i}", nn.Conv2d(256, 256, 1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(256))
            self.add_module(f"l{i}", nn.Conv2d(256, points, 1))
            if i < stacks - 1:
                self.add_module(f"bl{i}", nn.Conv2d(256, 256, 1))
                self.add_module(f"al{i}", nn.Conv2d(points, 256, 1))
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_file(cls, path: str | Path) -> FAN:
        """The package's 2D-FAN-4 weights: its TorchScript archive or a state dict (``module.`` prefixes dropped)."""
        state = _read_fan_state(Path(path))
        stacks = len({k.split(".")[0] for k in state if k.startswith("top_m_")})
        if stacks == 0:
            raise CheckpointError(f"{path}: not FAN weights (no 'top_m_*' keys)")
        return load_checked(cls(stacks), state, path, "FAN")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Crops (B, 3, 256, 256) in [0, 1] to the heatmaps of each stack (B, 68, 64, 64)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.conv4(self.conv3(F.avg_pool2d(self.conv2(x), 2, stride=2)))
        prev, outs = x, []
        for i in range(self.stacks):
            h = getattr(self, f"top_m_{i}")(getattr(self, f"m{i}")(prev))
            h = F.relu(getattr(self, f"bn_end{i}")(getattr(self, f"conv_last{i}")(h)))
            heat = getattr(self, f"l{i}")(h)
            outs.append(heat)
            if i < self.stacks - 1:
                prev = prev + getattr(self, f"bl{i}")(h) + getattr(self, f"al{i}")(heat)
        return outs


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.split("/")[1:2] == ["code"] for name in zf.namelist())


def _read_fan_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"FAN weights not found: {path} ({FAN_FILES})")
    try:
        if _is_torchscript(path):  # the package ships TorchScript; its tensors are read through torch.jit
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state: Any = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt files raise many types
        raise CheckpointError(f"{path}: not readable FAN weights ({type(err).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not FAN weights")
    return {k.removeprefix("module."): v for k, v in state.items()}


def box_centre_scale(box: tuple[float, float, float, float]) -> tuple[np.ndarray, float]:
    """The package's centre and scale of a face box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    centre = np.array([x1 - (x1 - x0) / 2.0, y1 - (y1 - y0) / 2.0])
    centre[1] -= (y1 - y0) * CENTRE_RAISE
    return centre, (x1 - x0 + y1 - y0) / BOX_SCALE


def _crop_corners(centre: np.ndarray, scale: float) -> tuple[list[int], list[int]]:
    """Image pixels of the crop's corners (1, 1) and (256, 256): the package builds its transform in
    float32, inverts it with ``torch.inverse`` and truncates, so this does the same."""
    h = 200.0 * scale
    t = torch.eye(3)
    t[0, 0] = t[1, 1] = CROP / h
    t[0, 2], t[1, 2] = CROP * (-centre[0] / h + 0.5), CROP * (-centre[1] / h + 0.5)
    inv = torch.inverse(t)
    ul = (inv @ torch.tensor([1.0, 1.0, 1.0]))[:2].int().tolist()
    br = (inv @ torch.tensor([float(CROP), float(CROP), 1.0]))[:2].int().tolist()
    return ul, br


def crop_face(image: np.ndarray, centre: np.ndarray, scale: float) -> torch.Tensor:
    """(H, W, 3) uint8 image to the network's (3, 256, 256) crop in [0, 1]."""
    ul, br = _crop_corners(centre, scale)
    canvas = np.zeros((br[1] - ul[1], br[0] - ul[0], 3), np.uint8)
    ht, wd = image.shape[:2]
    nx, ny = (max(1, -ul[0] + 1), min(br[0], wd) - ul[0]), (max(1, -ul[1] + 1), min(br[1], ht) - ul[1])
    ox, oy = (max(1, ul[0] + 1), min(br[0], wd)), (max(1, ul[1] + 1), min(br[1], ht))
    canvas[ny[0] - 1 : ny[1], nx[0] - 1 : nx[1]] = image[oy[0] - 1 : oy[1], ox[0] - 1 : ox[1], :3]
    t = torch.from_numpy(canvas).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(CROP, CROP), mode="bilinear", align_corners=False)
    return (t[0].round().clamp(0, 255) / 255).contiguous()


def decode_heatmaps(heat: torch.Tensor, centre: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (68, 64, 64) to landmarks in the 256 crop (float) and in the image (whole pixels)."""
    hm = heat.detach().float().cpu().numpy()
    c, h, w = hm.shape
    idx = hm.reshape(c, h * w).argmax(1)
    px, py = idx % w, idx // w
    pts = np.stack([px + 1, py + 1], 1).astype(np.float32)
    for j in range(c):
        x, y = int(px[j]), int(py[j])
        if 0 < x < HEATMAP - 1 and 0 < y < HEATMAP - 1:
            d = np.array([hm[j, y, x + 1] - hm[j, y, x - 1], hm[j, y + 1, x] - hm[j, y - 1, x]])
            pts[j] += (np.sign(d) * 0.25).astype(np.float32)
    pts -= np.float32(0.5)
    side = 200.0 * scale
    img = (pts.astype(np.float64) * side / h + centre[None] - side / 2).astype(np.int32)
    return pts * 4, img.astype(np.float64)


class FanLandmarks:
    """68 landmarks of the face in a box, as face-alignment's ``get_landmarks_from_image`` gives them."""

    network = "FAN (face-alignment 2D-FAN-4)"

    def __init__(self, net: FAN) -> None:
        self.net = net

    @torch.no_grad()
    def __call__(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        centre, scale = box_centre_scale(box)
        heat = self.net(crop_face(image, centre, scale)[None])[-1][0]
        return decode_heatmaps(heat, centre, scale)[1]
