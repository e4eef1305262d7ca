"""ArcFace's IResNet (insightface ``arcface_torch``), with its module names so that its released
``backbone.pth`` files (r18 ... r100) load unchanged, and its five-point alignment to 112x112.

The depth is read from the file (blocks per stage); the network maps an aligned RGB face in
[0, 1] (scaled to [-1, 1] as arcface_torch does) to a 512-d embedding, compared by cosine (CSIM).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gdpw.common.errors import CheckpointError

from .weights import load_checked, read_weights

ALIGNED = 112
# arcface_torch's template for the eyes, nose tip and mouth corners (image left first) at 112x112
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]])
WIDTHS = (64, 128, 256, 512)
ARCFACE_FILES = "insightface arcface_torch's backbone.pth (e.g. ms1mv3_arcface_r100_fp16)"


class IBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """``blocks`` per stage: (2, 2, 2, 2) r18, (3, 4, 14, 3) r50, (3, 13, 30, 3) r100."""

    def __init__(self, blocks: tuple[int, int, int, int] = (3, 13, 30, 3), embedding: int = 512) -> None:
        super().__init__()
        self.blocks = blocks
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (n, w) in enumerate(zip(blocks, WIDTHS)):
            self.add_module(f"layer{i + 1}", nn.Sequential(*(IBasicBlock(cin if j == 0 else w, w, 2 if j == 0 else 1) for j in range(n))))
            cin = w
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.fc = nn.Linear(512 * 7 * 7, embedding)
        self.features = nn.BatchNorm1d(embedding, eps=1e-5)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_file(cls, path: str | Path) -> IResNet:
        state = read_weights(path, "ArcFace weights", ARCFACE_FILES)
        blocks = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5))
        if 0 in blocks or "fc.weight" not in state:
            raise CheckpointError(f"{path}: not ArcFace IResNet weights (stages {blocks}, fc.weight "
                                  f"{'present' if 'fc.weight' in state else 'missing'})")
        emb = int(state["fc.weight"].shape[0])
        return load_checked(cls(blocks, emb), state, path, "ArcFace IResNet")  # type: ignore[arg-type]

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """Aligned faces (B, 3, 112, 112) in [0, 1] to unit embeddings (B, 512)."""
        x = self.prelu(self.bn1(self.conv1(faces * 2 - 1)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.features(self.fc(self.bn2(x).flatten(1)))
        return F.normalize(x, dim=1)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (3, 3) taking points ``src`` (N, 2) to ``dst`` (Umeyama 1991)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(cov) < 0:
        sign[1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / s.var(0).sum()
    m = np.eye(3)
    m[:2, :2] = scale * rot
    m[:2, 2] = mu_d - scale * rot @ mu_s
    return m


def five_points(ibug68: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip and mouth corners (image left first) from 68 iBUG landmarks."""
    p = np.asarray(ibug68, np.float64)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


def align_face(image: torch.Tensor, points: np.ndarray) -> torch.Tensor:
    """(3, H, W) in [0, 1] to ArcFace's (3, 112, 112) crop with the five ``points`` on the template
    (bilinear, black beyond the image, as ``cv2.warpAffine`` in insightface's ``norm_crop``)."""
    inv = np.linalg.inv(similarity_transform(points, TEMPLATE))
    h, w = image.shape[-2:]
    ys, xs = np.meshgrid(np.arange(ALIGNED, dtype=np.float64), np.arange(ALIGNED, dtype=np.float64), indexing="ij")
    src = np.stack([xs, ys, np.ones_like(xs)], -1) @ inv.T  # pixel centres of the crop in the image
    grid = np.stack([(2 * src[..., 0] + 1) / w - 1, (2 * src[..., 1] + 1) / h - 1], -1)
    g = torch.from_numpy(grid).to(image)[None]
    return F.grid_sample(image[None], g, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


class ArcFaceEmbedder:
    """CSIM's identity vectors from a user-brought ArcFace, aligned on MediaPipe's landmarks."""

    def __init__(self, net: IResNet, path: str | Path) -> None:
        self.net = net
        self.network = f"ArcFace IResNet (blocks {list(net.blocks)}) from {Path(path).name}, five-point aligned on MediaPipe landmarks"

    @torch.no_grad()
    def embed(self, image: torch.Tensor, ibug68: np.ndarray) -> np.ndarray:
        return self.net(align_face(image, five_points(ibug68))[None])[0].numpy()
