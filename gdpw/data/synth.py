"""Synthetic talking heads with known FLAME parameters.

Each identity is a demo head with a random shape, a procedural skin texture (tone, noise, blush,
brows, lips, eyes), hair and a clip-wide light; each clip adds a static background and shoulders
and smooth random trajectories of pose, jaw, gaze and expression, with blinks. Hair and
shoulders are not part of the FLAME mesh: hair is a shell over the scalp that moves with the head,
shoulders stay put, so the network has to handle them from context. Opening the jaw opens the
mouth: the lips' seam stretches, and where it does the dark inside of the mouth and the upper and
lower teeth show (``mouth_interior``).

Everything is deterministic in ``(seed, identity, clip)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gdpw.flame import FLAME, FlameParams, FlameSequence, orthographic
from gdpw.render import rasterize
from gdpw.render.patterns import vertex_normals
from gdpw.render.rasterizer import Fragments, interpolate

SKIN_TONES = np.array(
    [[0.96, 0.80, 0.69], [0.89, 0.68, 0.55], [0.78, 0.57, 0.44], [0.63, 0.43, 0.31], [0.45, 0.30, 0.21], [0.30, 0.20, 0.14]]
)
HAIR_COLOURS = np.array(
    [[0.08, 0.06, 0.05], [0.25, 0.15, 0.08], [0.55, 0.38, 0.20], [0.85, 0.70, 0.45], [0.55, 0.22, 0.10], [0.65, 0.65, 0.65]]
)
IRIS_COLOURS = np.array([[0.35, 0.20, 0.10], [0.20, 0.40, 0.65], [0.25, 0.45, 0.25], [0.45, 0.35, 0.20]])


@dataclass(frozen=True)
class SynthConfig:
    num_identities: int = 48
    clips_per_identity: int = 2
    frames_per_clip: int = 24
    size: int = 64
    supersample: int = 2
    fps: float = 10.0
    heldout_identities: int = 8  # the last identities form the 'test' split
    seed: int = 0
    gaze: float = 0.15  # amplitude of the eyes' rotation (rad); real drivers mostly look at the camera


@dataclass
class Identity:
    shape: np.ndarray  # (n_shape,)
    albedo: np.ndarray  # (V, 3) head and eyes
    hair_weight: np.ndarray  # (V,) in [0, 1] over the head
    hair_colour: np.ndarray  # (3,)
    hair_thickness: float


@dataclass
class Clip:
    """One rendered clip. Arrays are per frame (T, ...)."""

    images: np.ndarray  # (T, H, W, 3) uint8
    verts: np.ndarray  # (T, V, 3) image-space FLAME vertices (NDC x right, y down; depth)
    params: FlameSequence  # the FLAME parameters and orthographic cameras that made the frames


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _rng(cfg: SynthConfig, *keys: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, *keys])


def _low_freq_noise(rng: np.random.Generator, pts: np.ndarray, n: int = 4, freq: float = 30.0) -> np.ndarray:
    out = np.zeros(len(pts))
    for _ in range(n):
        k = rng.normal(size=3) * freq
        out += np.sin(pts @ k + rng.uniform(0, 2 * np.pi))
    return out / n


def make_identity(flame: FLAME, cfg: SynthConfig, index: int) -> Identity:
    rng = _rng(cfg, index, 1000)
    v = flame.v_template.numpy()
    n_head = int((flame.lbs_weights[:, 3:].sum(1) < 0.5).sum())
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    shape = rng.normal(scale=0.9, size=flame.n_shape)

    tone = SKIN_TONES[rng.integers(len(SKIN_TONES) - 1)]
    tone = tone + rng.uniform(0, 1) * (SKIN_TONES[min(len(SKIN_TONES) - 1, rng.integers(len(SKIN_TONES)))] - tone)
    albedo = np.tile(tone, (len(v), 1)) * (1 + 0.06 * _low_freq_noise(rng, v))[:, None]
    front = smoothstep(0.0, 0.05, z)

    def g(cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
        return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2)) * front

    blush = g(0.045, -0.02, 0.015, 0.012) + g(-0.045, -0.02, 0.015, 0.012)
    albedo += rng.uniform(0.0, 0.12) * blush[:, None] * np.array([0.6, -0.2, -0.2])
    lips = np.clip(g(0.0, -0.0545, 0.02, 0.009) * 1.6, 0, 1)
    lip_colour = tone * np.array([0.85, 0.5, 0.5]) + rng.uniform(-0.05, 0.1)
    albedo = albedo * (1 - lips[:, None]) + lip_colour * lips[:, None]
    brows = np.clip((g(0.032, 0.045, 0.017, 0.004) + g(-0.032, 0.045, 0.017, 0.004)) * 1.5, 0, 1)
    hair_colour = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]
    albedo = albedo * (1 - 0.8 * brows[:, None]) + 0.8 * brows[:, None] * hair_colour
    # eyes: pupil, iris and sclera by the angle from each eyeball's forward pole
    iris = IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))]
    joints = (flame.J_regressor @ flame.v_template).numpy()
    for j in (3, 4):
        ids = np.nonzero(flame.lbs_weights[:, j].numpy() > 0.5)[0]
        d = v[ids] - joints[j]
        ang = np.arccos(np.clip(d[:, 2] / np.linalg.norm(d, axis=1), -1, 1))
        limbus = np.clip((ang[:, None] - 0.45) / 0.15, 0, 1)  # the iris darkens towards its rim
        col = np.where(ang[:, None] < 0.3, 0.03, np.where(ang[:, None] < 0.6, iris * (1 - 0.5 * limbus), 0.92))
        albedo[ids] = col
    hairline = rng.uniform(0.045, 0.075)
    back = smoothstep(0.01, -0.03, z) * smoothstep(-0.07, -0.03, y)
    hair_weight = np.maximum(smoothstep(hairline - 0.01, hairline + 0.01, y), back)
    hair_weight[n_head:] = 0.0
    return Identity(shape, np.clip(albedo, 0, 1).astype(np.float32), hair_weight.astype(np.float32), hair_colour,
                    float(rng.uniform(0.006, 0.014)))


def smooth_trajectory(rng: np.random.Generator, t: np.ndarray, dims: int, amp: np.ndarray | float, speed: float) -> np.ndarray:
    """(T, dims) sums of three random sinusoids per dimension."""
    out = np.zeros((len(t), dims))
    for _ in range(3):
        f = rng.uniform(0.1, 0.6, size=dims) * speed
        ph = rng.uniform(0, 2 * np.pi, size=dims)
        out += np.sin(2 * np.pi * f * t[:, None] + ph) / 3
    return out * amp


def make_motion(flame: FLAME, cfg: SynthConfig, identity: int, clip: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = _rng(cfg, identity, clip)
    n = cfg.frames_per_clip
    t = np.arange(n) / cfg.fps
    global_pose = smooth_trajectory(rng, t, 3, np.array([0.3, 0.6, 0.15]), 1.0)
    neck_pose = smooth_trajectory(rng, t, 3, 0.08, 1.0)
    jaw = np.zeros((n, 3))
    jaw[:, 0] = 0.3 * np.clip(smooth_trajectory(rng, t, 1, 1.0, 2.0)[:, 0], 0, None)
    eye = np.repeat(smooth_trajectory(rng, t, 2, cfg.gaze, 1.5), 2, axis=1)[:, [0, 1, 2, 3]]
    eye_pose = np.zeros((n, 6))
    eye_pose[:, [0, 1, 3, 4]] = eye
    expression = np.clip(smooth_trajectory(rng, t, flame.n_expression, 1.2, 1.5) + 0.2, -0.3, 1.5)
    expression[:, 4:6] = 0.0
    for start in rng.choice(n, size=max(1, n // 12), replace=False):  # blinks
        for k, a in enumerate((0.6, 1.0, 0.5)):
            if start + k < n:
                expression[start + k, 4:6] = a
    params = {
        "shape": np.zeros((n, flame.n_shape)),
        "expression": expression,
        "global_pose": global_pose,
        "neck_pose": neck_pose,
        "jaw_pose": jaw,
        "eye_pose": eye_pose,
    }
    scale = rng.uniform(5.6, 6.6)
    camera = np.stack([np.full(n, scale), 0.01 * np.sin(t + rng.uniform(0, 6)), 0.02 + 0.008 * np.sin(0.7 * t)], 1)
    return params, camera


def head_turn(flame: FLAME, cfg: SynthConfig, identity: int, clip: int, yaw_degrees: float = 25.0,
              turns: float = 1.0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``make_motion``'s talking head turning left and right (``turns`` full periods of yaw over
    the clip, +-``yaw_degrees``) with the other head rotations small: a clip whose head motion is known."""
    params, camera = make_motion(flame, cfg, identity, clip)
    n = cfg.frames_per_clip
    params["global_pose"] = params["global_pose"] * 0.15
    params["global_pose"][:, 1] = np.deg2rad(yaw_degrees) * np.sin(2 * np.pi * turns * np.arange(n) / n)
    params["neck_pose"] = params["neck_pose"] * 0.0
    return params, camera


def _background(rng: np.random.Generator, size: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    c0, c1 = torch.tensor(rng.uniform(0.1, 0.9, 3)).float(), torch.tensor(rng.uniform(0.1, 0.9, 3)).float()
    ang = rng.uniform(0, 2 * np.pi)
    ramp = ((np.cos(ang) * xx + np.sin(ang) * yy) - min(0, np.cos(ang)) - min(0, np.sin(ang))).clamp(0, 1)
    img = c0[:, None, None] * (1 - ramp) + c1[:, None, None] * ramp
    for _ in range(4):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.2)
        blob = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r**2))
        img = img * (1 - 0.6 * blob) + 0.6 * blob * torch.tensor(rng.uniform(0, 1, 3)).float()[:, None, None]
    return img.clamp(0, 1)


def _shoulders(rng: np.random.Generator, size: int, cx: float) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    rx, top = rng.uniform(0.75, 0.95), rng.uniform(0.7, 0.85)
    inside = ((xx - cx) / rx) ** 2 + ((yy - (top + 0.55)) / 0.55) ** 2 <= 1.0
    colour = torch.tensor(rng.uniform(0.05, 0.9, 3)).float()
    shade = 1.0 - 0.25 * (yy - top).clamp(0, 1)
    return inside.float()[None], colour[:, None, None] * shade[None]


MOUTH_COLOUR = torch.tensor([0.22, 0.05, 0.06])
TEETH_COLOUR = torch.tensor([0.86, 0.83, 0.74])


def mouth_seam(flame: FLAME) -> tuple[torch.Tensor, torch.Tensor]:
    """The mouth's seam: (F,) weight of each face that spans the lips' parting (some corners moved by
    the jaw, some not, in the front of the face within the mouth's width), and (V,) jaw weight."""
    v = flame.v_template
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    jaw = flame.lbs_weights[:, 2]
    width = torch.as_tensor(smoothstep(0.026, 0.016, np.abs(x.numpy()))) * (z > 0) * (y > -0.07) * (y < -0.045)
    corners_jaw = jaw[flame.faces]
    spans = (corners_jaw.min(1).values < 0.95) & (corners_jaw.max(1).values > 0.05)
    return width[flame.faces].mean(1) * spans, jaw


def mouth_interior(flame: FLAME, verts_rest: torch.Tensor, verts: torch.Tensor, frags: Fragments, faces: torch.Tensor,
                   shade: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, H, W) opacity and (B, 3, H, W) colour of the open mouth. A seam face stretched to over
    1.5x its rest area opens (fully at 3x); across the opening, the jaw weight interpolated over the
    face tells upper teeth (top quarter) from lower teeth (bottom fifth) from the dark inside."""
    seam, jaw = mouth_seam(flame)

    def area(vs: torch.Tensor) -> torch.Tensor:
        tri = vs[..., flame.faces, :]
        return torch.linalg.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :]).norm(dim=-1)

    stretch = area(verts) / area(verts_rest).clamp_min(1e-12)
    opening = seam * ((stretch - 1.5) / 1.5).clamp(0, 1)  # (B, F)
    face = frags.face_map()  # (B, H, W) over ``faces`` (the FLAME faces first)
    own = (face >= 0) & (face < len(flame.faces))
    alpha = torch.where(own, opening.gather(1, face.clamp(0, len(flame.faces) - 1).flatten(1)).view_as(face), 0.0)
    jaw_all = torch.zeros(int(faces.max()) + 1)
    jaw_all[: flame.num_verts] = jaw
    w = interpolate(jaw_all[:, None], faces, frags)  # (B, 1, H, W)
    teeth = ((w < 0.25) | (w > 0.8)).float()
    colour = (teeth * TEETH_COLOUR[:, None, None] + (1 - teeth) * MOUTH_COLOUR[:, None, None]) * shade
    return alpha.unsqueeze(1), colour


def hair_shell(flame: FLAME, ident: Identity) -> tuple[torch.Tensor, torch.Tensor]:
    """Faces of the scalp that carry hair, and the ids of the vertices they use."""
    w = torch.as_tensor(ident.hair_weight)
    faces = flame.faces[(w[flame.faces] > 0.5).all(1)]
    ids = torch.unique(faces)
    remap = torch.full((flame.num_verts,), -1, dtype=torch.long)
    remap[ids] = torch.arange(ids.numel())
    return remap[faces], ids


def render_clip(flame: FLAME, cfg: SynthConfig, identity: int, clip: int,
                motion: tuple[dict[str, np.ndarray], np.ndarray] | None = None) -> Clip:
    """Clip ``clip`` of identity ``identity``; ``motion``: its parameters and cameras (default ``make_motion``'s)."""
    ident = make_identity(flame, cfg, identity)
    params, camera = motion or make_motion(flame, cfg, identity, clip)
    params["shape"][:] = ident.shape
    rng = _rng(cfg, identity, clip, 7)
    big = cfg.size * cfg.supersample
    background = _background(rng, big)
    sh_mask, sh_colour = _shoulders(rng, big, float(camera[0, 1] * camera[0, 0]))
    light = torch.tensor([rng.uniform(-0.6, 0.6), rng.uniform(0.1, 0.7), 1.0]).float()
    light = light / light.norm()
    shell_faces, shell_ids = hair_shell(flame, ident)
    nv = flame.num_verts

    with torch.no_grad():
        out = flame(FlameParams(**{k: torch.as_tensor(v).float() for k, v in params.items()}))
        cam = torch.as_tensor(camera).float()
        verts_world = out.vertices
        normals = vertex_normals(verts_world, flame.faces)
        shell = verts_world[:, shell_ids] + ident.hair_thickness * normals[:, shell_ids]
        all_world = torch.cat([verts_world, shell], 1)
        all_img = orthographic(all_world, cam)
        faces = torch.cat([flame.faces, shell_faces + nv])
        all_normals = torch.cat([normals, vertex_normals(shell, shell_faces)], 1)
        albedo = torch.cat([torch.as_tensor(ident.albedo), torch.as_tensor(ident.hair_colour).float().expand(len(shell_ids), 3)])
        shade = 0.35 + 0.65 * (all_normals @ light).clamp_min(0)
        colour = albedo * shade.unsqueeze(-1)
        frags = rasterize(all_img, faces, (big, big), cull="before")
        fg = interpolate(colour, faces, frags)
        rest = flame(FlameParams(shape=torch.as_tensor(ident.shape).float()[None])).vertices
        open_alpha, open_colour = mouth_interior(flame, rest, verts_world, frags, faces, interpolate(shade[..., None], faces, frags))
        fg = fg * (1 - open_alpha) + open_colour * open_alpha
        mask = frags.mask()
        scene = background * (1 - sh_mask) + sh_colour * sh_mask
        img = scene * (1 - mask) + fg
        img = F.avg_pool2d(img, cfg.supersample)
        images = (img.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
        verts = orthographic(verts_world, cam).numpy()
    seq = FlameSequence.from_numpy({**params, "camera": camera})
    return Clip(images, verts.astype(np.float32), seq)


# What a clip's pixels and parameters depend on besides its (identity, clip) index: a folder's
# existing shards are reused only when these match (more identities or clips may be added).
SHARD_FIELDS = ("frames_per_clip", "size", "supersample", "fps", "seed", "gaze")


def check_resumable(root: Path, cfg: SynthConfig) -> None:
    """Raise ``DatasetError`` when ``root`` holds clips rendered with another ``SHARD_FIELDS`` config
    (recorded in ``synth.json`` at the start of a run, or in an older folder's ``dataset.json``)."""
    from gdpw.common.errors import DatasetError

    made = None
    for name in ("synth.json", "dataset.json"):
        if (root / name).is_file():
            try:
                made = json.loads((root / name).read_text()).get("synth")
            except (json.JSONDecodeError, AttributeError, UnicodeDecodeError) as err:
                raise DatasetError(f"{root / name}: malformed ({type(err).__name__}: {err}); write to a new folder or delete it") from None
            break
    if not isinstance(made, dict):
        return
    mine = asdict(cfg)
    diff = [f"{k} {made.get(k, 'unrecorded')} -> {mine[k]}" for k in SHARD_FIELDS if made.get(k) != mine[k]]
    if diff:
        raise DatasetError(f"{root} holds clips rendered with another synth config ({', '.join(diff)}); "
                           "write to a new folder or delete it")


def write_synth_dataset(root: str | Path, cfg: SynthConfig, flame: FLAME | None = None, progress: bool = True) -> list:
    """Render every clip of ``cfg`` into a gdpw dataset folder; existing shards of the same config
    are kept (resumable), a folder made with another one is refused (``check_resumable``)."""
    from tqdm import tqdm

    from gdpw.common.files import atomic_write

    from .dataset import ClipInfo, write_clip, write_index

    root = Path(root)
    check_resumable(root, cfg)
    with atomic_write(root / "synth.json") as fh:
        fh.write(json.dumps({"synth": asdict(cfg)}, indent=1).encode())
    flame = flame or FLAME()
    clips = []
    jobs = [(i, c) for i in range(cfg.num_identities) for c in range(cfg.clips_per_identity)]
    for i, c in tqdm(jobs, desc="synth clips", disable=not progress, unit="clip"):
        name = f"id{i:04d}_c{c:02d}"
        split = "test" if i >= cfg.num_identities - cfg.heldout_identities else "train"
        path = root / "clips" / f"{name}.npz"
        if not path.exists():
            clip = render_clip(flame, cfg, i, c)
            write_clip(path, clip.images, clip.verts, clip.params)
        clips.append(ClipInfo(name, f"id{i:04d}", split, cfg.frames_per_clip, path))
    write_index(root, clips, cfg.size, flame.num_verts, {"synth": asdict(cfg), "fps": cfg.fps})
    return clips
