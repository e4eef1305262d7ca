"""Training a ``FlameRegressor`` where the truth is known.

Synthetic heads of the model in use (``gdpw.data.synth``: one random identity per clip, its
expressions, jaw, gaze, head pose and camera sampled, a random light and background) are rendered
and read back by MediaPipe; each frame with a face is an example (MediaPipe's outputs in, the
parameters that made the frame out). Examples are made by a job (``gdpw.common.jobs``: chunks of
clips, each written atomically to a cache folder, so an interrupted run resumes and the local
pool or Ray can share the work); the network is then fitted on the CPU in a minute. Identities
are split: the accuracy stored with the regressor is on identities it never saw.

    regressor = train_regressor(HeadConfig(flame="generic_model.pkl"), RegressorConfig(), cache_dir)
    regressor.save("generic_model.regressor.npz")
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from gdpw.common.config import validate
from gdpw.common.crop import CropBox
from gdpw.common.files import atomic_write
from gdpw.common.jobs import Job, Runner, run_job
from gdpw.flame import FLAME, HeadConfig

from .detect import MediaPipeDetector
from .regressor import (
    LANDMARKS,
    OUTPUTS,
    FlameRegressor,
    RegressorNet,
    apply_motion,
    camera_to_output,
    face_features,
    head_fingerprint,
    pair_input,
    pair_target,
)


@dataclass(frozen=True)
class RegressorConfig:
    """The synthetic examples and the fit of a FLAME regressor."""

    clips: int = 400  # synthetic clips, one identity each
    frames_per_clip: int = 12  # frames per clip, 0.4 s apart (unlike a video's, nearly independent)
    size: int = 256  # rendered image side in pixels
    heldout: float = 0.15  # share of identities kept out of the fit for the stated accuracy
    clips_per_chunk: int = 10  # clips per cached file (the unit of work of the example job)
    steps: int = 4000  # Adam steps
    batch: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.1
    hidden: int = 128
    noise: float = 0.01  # landmark noise added while fitting (in units of the landmarks' RMS radius)
    seed: int = 0

    def __post_init__(self) -> None:
        validate(self)


# -- examples ----------------------------------------------------------------------------------
@dataclass
class Examples:
    """MediaPipe's reading of rendered frames and the parameters that made them."""

    feats: np.ndarray  # (N, D) face features (``face_features``)
    frames: np.ndarray  # (N, 3) the landmarks' centre and radius in image NDC
    targets: np.ndarray  # (N, K) expression, jaw, eyes, global pose, camera (``camera_to_output``'s form)
    identity: np.ndarray  # (N,) clip index (one identity per clip)
    names: tuple[str, ...]  # blendshape names

    @classmethod
    def cat(cls, parts: list[Examples]) -> Examples:
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("feats", "frames", "targets", "identity")),
                   parts[0].names)


def _synth_config(cfg: RegressorConfig):  # type: ignore[no-untyped-def]
    from gdpw.data.synth import SynthConfig

    return SynthConfig(size=cfg.size, frames_per_clip=cfg.frames_per_clip, fps=2.5, seed=cfg.seed + 9001)


@dataclass
class Reader:
    """What a worker of the example job loads once: the head model and MediaPipe."""

    flame: FLAME
    detector: MediaPipeDetector

    def close(self) -> None:
        self.detector.close()


def load_reader(head: HeadConfig) -> Reader:
    return Reader(head.load(), MediaPipeDetector(max_faces=1))


def _chunk(cfg: RegressorConfig, folder: Path, reader: Reader, start: int) -> int:
    """Render and read clips ``start`` .. ``start + clips_per_chunk``; write their examples."""
    from gdpw.data.synth import make_motion, render_clip

    flame, detector = reader.flame, reader.detector
    synth = _synth_config(cfg)
    box = CropBox(0.0, 0.0, float(cfg.size))  # the renders' NDC is the image's
    feats, frames, targets, ids, names = [], [], [], [], None
    for clip in range(start, min(cfg.clips, start + cfg.clips_per_chunk)):
        params, camera = make_motion(flame, synth, clip, 0)
        params["neck_pose"][:] = 0.0  # the fitters' head pose is the global pose alone
        rendered = render_clip(flame, synth, clip, 0, motion=(params, camera))
        p = rendered.params
        for t, image in enumerate(rendered.images):
            faces = detector.detect(image)
            if not faces or faces[0].pose is None or not faces[0].blendshapes:
                continue
            names = names or tuple(sorted(faces[0].blendshapes))
            f, frame = face_features(faces[0], box, names)
            feats.append(f)
            frames.append(frame)
            cam = camera_to_output(p.camera[t : t + 1].numpy(), frame[None])[0]
            targets.append(np.concatenate([p.expression[t], p.jaw_pose[t], p.eye_pose[t], p.global_pose[t], cam]))
            ids.append(clip)
    with atomic_write(folder / f"chunk-{start:05d}.npz") as fh:
        np.savez(fh, feats=np.array(feats, np.float32).reshape(len(feats), -1), frames=np.array(frames, np.float32).reshape(-1, 3),
                 targets=np.array(targets, np.float32).reshape(len(targets), -1),
                 identity=np.array(ids, np.int64), names=np.array(names or ()))
    return len(feats)


def collect_examples(head: HeadConfig, cfg: RegressorConfig, folder: Path, runner: Runner | None = None,
                     progress: bool = True) -> Examples:
    """The examples of ``cfg``'s clips, made by a job into ``folder`` (chunks already there are reused)."""
    folder = folder / f"seed{cfg.seed}-size{cfg.size}-frames{cfg.frames_per_clip}"
    folder.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, cfg.clips, cfg.clips_per_chunk))
    path = lambda s: folder / f"chunk-{s:05d}.npz"  # noqa: E731
    job = Job("render and read", starts, key=lambda s: path(s).name, setup=partial(load_reader, head),
              run=partial(_chunk, cfg, folder), done=lambda s: path(s).is_file(), close=Reader.close)
    run_job(job, runner or Runner(), progress)
    parts = []
    for s in starts:
        with np.load(path(s), allow_pickle=False) as z:
            if len(z["identity"]):
                parts.append(Examples(z["feats"], z["frames"], z["targets"], z["identity"],
                                      tuple(str(n) for n in z["names"])))
    if not parts:
        from .regressor import RegressorError

        raise RegressorError("MediaPipe found no face in any synthetic render: cannot train a regressor")
    return Examples.cat(parts)


# -- fitting -----------------------------------------------------------------------------------
def clip_rows(identity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each example, the first row and the row count of its clip (a clip's rows are contiguous)."""
    _, first, pos, count = np.unique(identity, return_index=True, return_inverse=True, return_counts=True)
    return first[pos], count[pos]


def fit_regressor(flame: FLAME, data: Examples, cfg: RegressorConfig, progress: bool = True) -> FlameRegressor:
    """The network fitted on pairs of frames of the training clips; its accuracy measured on the
    held-out identities' clips, each frame read against its clip's first frame (as live tracking does)."""
    from tqdm import tqdm

    gen = torch.Generator().manual_seed(cfg.seed)
    held = data.identity >= np.quantile(data.identity, 1 - cfg.heldout)
    x, y = torch.from_numpy(data.feats), torch.from_numpy(data.targets)
    first, count = (torch.from_numpy(a) for a in clip_rows(data.identity))
    rows = torch.from_numpy(np.nonzero(~held)[0])
    n_exp = flame.n_expression

    def pairs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = rows[torch.randint(len(rows), (n,), generator=gen)]
        b = first[a] + (torch.rand(n, generator=gen) * count[a]).long()
        return a, b

    a, b = pairs(50_000)
    xin, yout = pair_input(x[a], x[b]), pair_target(y[a], y[b], n_exp)
    in_mean, in_std = xin.mean(0), xin.std(0).clamp_min(1e-3)
    out_mean, out_std = yout.mean(0), yout.std(0).clamp_min(1e-3)
    noise = torch.zeros(x.shape[1])
    noise[LANDMARKS] = cfg.noise
    net = RegressorNet(xin.shape[1], yout.shape[1], cfg.hidden)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    for _ in tqdm(range(cfg.steps), desc="fit regressor", unit="step", disable=not progress):
        a, b = pairs(cfg.batch)
        fa = x[a] + noise * torch.randn(len(a), x.shape[1], generator=gen)
        fb = x[b] + noise * torch.randn(len(b), x.shape[1], generator=gen)
        pred = net((pair_input(fa, fb) - in_mean) / in_std)
        loss = torch.nn.functional.smooth_l1_loss(pred, (pair_target(y[a], y[b], n_exp) - out_mean) / out_std, beta=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    regressor = FlameRegressor(net.eval(), in_mean, in_std, out_mean, out_std, data.names, flame.n_shape,
                               flame.n_expression, head_fingerprint(flame), {})
    if held.any():
        regressor.accuracy = heldout_accuracy(regressor, data, held)
    return regressor


def heldout_accuracy(regressor: FlameRegressor, data: Examples, held: np.ndarray) -> dict[str, float]:
    """Each ``held`` frame but its clip's first read against the first (given its true parameters):
    mean absolute errors per output block (radians for poses, relative for the camera scale,
    NDC-scaled translation) and the expression's mean correlation with the truth."""
    first, _ = clip_rows(data.identity)
    rows = np.nonzero(held & (np.arange(len(held)) != first))[0]
    ref = first[rows]
    x, y, frame = torch.from_numpy(data.feats), torch.from_numpy(data.targets), torch.from_numpy(data.frames[rows])
    with torch.no_grad():
        out = apply_motion(regressor.motion(x[rows], x[ref]), y[ref], regressor.n_expression)
    pred, truth = regressor.split(out, frame), regressor.split(y[rows], frame)
    out_: dict[str, float] = {"frames": float(len(rows)), "identities": float(len(np.unique(data.identity[rows])))}
    for k in OUTPUTS:
        if k == "camera":
            out_["camera_scale_rel"] = float(((pred[k][:, 0] - truth[k][:, 0]).abs() / truth[k][:, 0]).mean())
            out_["camera_trans_ndc"] = float(((pred[k][:, 1:] - truth[k][:, 1:]) * truth[k][:, :1]).abs().mean())
        else:
            out_[f"{k}_mae"] = float((pred[k] - truth[k]).abs().mean())
    out_["jaw_open_mae"] = float((pred["jaw_pose"][:, 0] - truth["jaw_pose"][:, 0]).abs().mean())
    out_["head_rotation_deg"] = float(np.degrees(float((pred["global_pose"] - truth["global_pose"]).norm(dim=1).mean())))
    corr = [np.corrcoef(pred["expression"][:, i], truth["expression"][:, i])[0, 1] for i in range(regressor.n_expression)]
    out_["expression_r"] = float(np.nanmean(corr))
    out_["jaw_open_r"] = float(np.corrcoef(pred["jaw_pose"][:, 0], truth["jaw_pose"][:, 0])[0, 1])
    return out_


def train_regressor(head: HeadConfig, cfg: RegressorConfig, cache: Path, runner: Runner | None = None,
                    progress: bool = True) -> FlameRegressor:
    """Examples made (or reused from ``cache``), then the network fitted: the whole recipe."""
    data = collect_examples(head, cfg, cache, runner, progress)
    return fit_regressor(head.load(), data, cfg, progress)
