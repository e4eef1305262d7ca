"""Image and face metrics. Each metric object names the network it uses (``network``).

Small images are upscaled to ``DETECT_SIZE`` before face detection and identity embedding.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gdpw.common.errors import MissingAssetError

DETECT_SIZE = 256


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().flatten(1).mean(1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (B,) of images in [0, 1] with a Gaussian window (Wang et al. 2004)."""
    c1, c2 = 0.01**2, 0.03**2
    x = torch.arange(window, dtype=a.dtype) - (window - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = (g / g.sum()).to(a.device)
    k = (g[:, None] * g[None, :]).expand(a.shape[1], 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, k, groups=a.shape[1])

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def to_uint8_upscaled(img: torch.Tensor, size: int = DETECT_SIZE) -> np.ndarray:
    """(3, H, W) in [0, 1] to (size, size, 3) uint8 for detectors."""
    if img.shape[-1] != size:
        img = F.interpolate(img[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    return np.ascontiguousarray((img.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8))


class IdentityEmbedder:
    """dlib's face-recognition ResNet (from ``face_recognition_models``): 128-d identity vectors."""

    network = "dlib ResNet-29 face recognition (face_recognition_models)"

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError:
            raise MissingAssetError("CSIM needs dlib: pip install dlib-bin face_recognition_models") from None
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise MissingAssetError("CSIM needs the face_recognition_models package (dlib's model files)")
        models = Path(list(spec.submodule_search_locations)[0]) / "models"
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._rec = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def embed(self, img: torch.Tensor) -> np.ndarray | None:
        """Unit identity vector of the largest face, or None when no face is found."""
        rgb = to_uint8_upscaled(img)
        dets = self._detector(rgb, 1)
        if not dets:
            return None
        box = max(dets, key=lambda r: r.area())
        vec = np.asarray(self._rec.compute_face_descriptor(rgb, self._shape(rgb, box)))
        return vec / np.linalg.norm(vec)


def csim(embedder: IdentityEmbedder, a: torch.Tensor, b: torch.Tensor) -> float | None:
    ea, eb = embedder.embed(a), embedder.embed(b)
    if ea is None or eb is None:
        return None
    return float(np.dot(ea, eb))


def fid_weights_path(explicit: str | None) -> Path:
    return Path(explicit or os.environ.get("GDPW_FID_WEIGHTS", "weights/pt_inception-2015-12-05-6726825d.pth"))


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets (N, D) and (M, D).

    The trace of sqrt(cov_a cov_b) is the sum of the square roots of its eigenvalues. With no more
    samples than features (a small evaluation: 2048 Inception features) they come from the N x M
    cross-Gram matrix instead of two D x D eigendecompositions: cov_a cov_b has the nonzero
    eigenvalues of (A B^T)(B A^T) / ((N - 1)(M - 1)), A and B the centred features, so the trace
    is the sum of A B^T's singular values over sqrt((N - 1)(M - 1)). Both are exact.
    """
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    n, m, d = a.shape[0], b.shape[0], a.shape[1]
    if max(n, m) <= d:
        ca, cb = a - mu_a, b - mu_b
        tr_a, tr_b = (ca**2).sum() / (n - 1), (cb**2).sum() / (m - 1)
        tr_sqrt = torch.linalg.svdvals(ca @ cb.T).sum() / ((n - 1) * (m - 1)) ** 0.5
        return float(((mu_a - mu_b) ** 2).sum() + tr_a + tr_b - 2 * tr_sqrt)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    # trace of sqrt(cov_a cov_b) from the eigenvalues of sqrt(cov_a) cov_b sqrt(cov_a)
    ev_a, vec_a = torch.linalg.eigh(cov_a)
    sqrt_a = vec_a @ torch.diag(ev_a.clamp_min(0).sqrt()) @ vec_a.T
    middle = sqrt_a @ cov_b @ sqrt_a
    tr_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * tr_sqrt)
