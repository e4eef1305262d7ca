"""gdpw's dataset format, the official GDPW layout, and the (source, driving) pair sampler.

gdpw format: a folder with ``dataset.json`` and one ``.npz`` shard per clip::

    dataset.json  {"format": "gdpw-dataset", "version": 1, "image_size": 64, "num_verts": 5023,
                   "clips": [{"name", "identity", "split", "frames", "file"}, ...]}
    clips/<name>.npz  images (T, H, W, 3) uint8, verts (T, V, 3) float32 image-space FLAME
                      vertices, and the clip's FLAME parameters (``FlameSequence.to_numpy``:
                      shape, expression, global_pose, neck_pose, jaw_pose, eye_pose, camera)

``image_size`` and ``num_verts`` are facts of the dataset: training and evaluation read them
and check the config, the FLAME model and the checkpoint against them.

Shards load independently, so a training set may list folders on several disks (``roots``).
The official layout (``person/video/clip/%07d_img.jpg`` beside ``%07d_posed_vertx.lz4``) is
readable through ``OfficialClipSource``.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from gdpw.common.errors import DatasetError
from gdpw.common.files import atomic_write
from gdpw.flame import FlameSequence

FORMAT = "gdpw-dataset"
VERSION = 1

@dataclass(frozen=True)
class ClipInfo:
    name: str
    identity: str
    split: str
    frames: int
    path: Path


def write_clip(path: Path, images: np.ndarray, verts: np.ndarray, params: FlameSequence) -> None:
    """Write one clip shard atomically."""
    with atomic_write(path) as fh:
        np.savez_compressed(fh, images=images, verts=verts, **params.to_numpy())


def write_index(root: Path, clips: Sequence[ClipInfo], image_size: int, num_verts: int, extra: dict[str, Any] | None = None) -> None:
    """Write ``dataset.json`` atomically."""
    index = {
        "format": FORMAT,
        "version": VERSION,
        "image_size": image_size,
        "num_verts": num_verts,
        **(extra or {}),
        "clips": [
            {"name": c.name, "identity": c.identity, "split": c.split, "frames": c.frames, "file": str(c.path.relative_to(root))}
            for c in clips
        ],
    }
    with atomic_write(root / "dataset.json") as fh:
        fh.write(json.dumps(index, indent=1).encode())


def read_index(root: str | os.PathLike[str]) -> tuple[dict[str, Any], list[ClipInfo]]:
    root = Path(root)
    path = root / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"not a gdpw dataset: {path} is missing (make one with 'gdpw synth' or 'gdpw preprocess')")
    try:
        index = json.loads(path.read_text())
        if index.get("format") != FORMAT:
            raise DatasetError(f"{path}: format is {index.get('format')!r}, expected {FORMAT!r}")
        clips = [ClipInfo(c["name"], c["identity"], c["split"], int(c["frames"]), root / c["file"]) for c in index["clips"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        if isinstance(err, DatasetError):
            raise
        raise DatasetError(f"{path}: malformed index ({type(err).__name__}: {err})") from None
    return index, clips


def load_clip(path: Path) -> dict[str, np.ndarray]:
    """All arrays of a shard; raises DatasetError for a corrupt or incomplete one."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, zlib.error) as err:
        raise DatasetError(f"{path}: unreadable clip shard ({type(err).__name__}: {err})") from None
    for key in ("images", "verts"):
        if key not in data:
            raise DatasetError(f"{path}: clip shard has no {key!r}")
    images, verts = data["images"], data["verts"]
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DatasetError(f"{path}: images must be (T, H, W, 3) uint8, got {images.shape} {images.dtype}")
    if verts.ndim != 3 or verts.shape[0] != images.shape[0] or verts.shape[2] != 3:
        raise DatasetError(f"{path}: verts must be (T, V, 3) matching the images, got {verts.shape}")
    if not np.isfinite(verts).all():
        raise DatasetError(f"{path}: verts hold non-finite values")
    return data


def clip_params(data: dict[str, np.ndarray], path: Path) -> FlameSequence:
    """The FLAME parameters of a loaded shard."""
    try:
        return FlameSequence.from_numpy(data)
    except (KeyError, ValueError) as err:
        raise DatasetError(f"{path}: no usable FLAME parameters ({err})") from None


class ClipSource(Protocol):
    """Where clips come from: gdpw folders or the official layout."""

    image_size: int  # crop side in pixels
    num_verts: int  # vertices of the FLAME model the clips were fitted with
    recipe: str  # how the faces were cropped: "gdpw" or "official"

    def clips(self) -> list[ClipInfo]: ...

    def frames(self, clip: ClipInfo, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Images (n, H, W, 3) uint8 and image-space vertices (n, V, 3) of frames ``ids``."""
        ...


class GdpwClipSource:
    """Clips of one or more gdpw dataset folders, filtered by split."""

    def __init__(self, roots: Sequence[str | os.PathLike[str]], split: str | None = None, cache_size: int = 8) -> None:
        self._clips: list[ClipInfo] = []
        recipes: set[str] = set()
        facts = set()
        for root in roots:
            index, clips = read_index(root)
            facts.add((index.get("image_size"), index.get("num_verts")))
            recipes.add(index.get("crop", "gdpw"))
            self._clips += [c for c in clips if split is None or c.split == split]
        if len(facts) > 1 or len(recipes) > 1:
            raise DatasetError(f"the dataset folders differ in (image size, vertex count): {sorted(facts, key=str)} "
                               f"or crop recipe: {sorted(recipes)}")
        self.image_size, self.num_verts = next(iter(facts), (0, 0))
        self.recipe = next(iter(recipes), "gdpw")
        if not self._clips:
            raise DatasetError(f"no clips of split {split!r} in {', '.join(map(str, roots))}")
        self._cache: dict[Path, dict[str, np.ndarray]] = {}
        self._cache_size = cache_size

    def clips(self) -> list[ClipInfo]:
        return self._clips

    def frames(self, clip: ClipInfo, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        data = self._cache.get(clip.path)
        if data is None:
            data = load_clip(clip.path)
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[clip.path] = data
        idx = list(ids)
        return data["images"][idx], data["verts"][idx].astype(np.float32)


class OfficialClipSource:
    """The official GDPW layout: ``root/person/video/clip/%07d_img.jpg`` + ``%07d_posed_vertx.lz4``.

    Each ``.lz4`` is an LZ4 frame holding float32 (V, 3) image-space vertices. Needs the ``lz4``
    package and Pillow. Persons listed in ``heldout`` form the 'test' split.
    """

    def __init__(self, root: str | os.PathLike[str], split: str | None = None, heldout: Iterable[str] = ()) -> None:
        self.root = Path(root)
        held = set(heldout)
        clips = []
        for clip_dir in sorted(p for p in self.root.glob("*/*/*") if p.is_dir()):
            n = len(list(clip_dir.glob("*_img.jpg")))
            if n < 2:
                continue
            person = clip_dir.parts[-3]
            sp = "test" if person in held else "train"
            if split is None or sp == split:
                clips.append(ClipInfo("/".join(clip_dir.parts[-3:]), person, sp, n, clip_dir))
        if not clips:
            raise DatasetError(f"no clips with at least two frames under {self.root}")
        self._clips = clips
        images, verts = self.frames(clips[0], [0])
        self.image_size, self.num_verts = int(images.shape[1]), int(verts.shape[1])
        self.recipe = "official"  # the official layout is the released models' training data

    def clips(self) -> list[ClipInfo]:
        return self._clips

    def frames(self, clip: ClipInfo, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        try:
            import lz4.frame
        except ImportError:
            raise DatasetError("reading the official layout needs the lz4 package: pip install lz4") from None
        from PIL import Image

        names = sorted(p.name[: -len("_img.jpg")] for p in clip.path.glob("*_img.jpg"))
        images, verts = [], []
        for i in ids:
            stem = clip.path / names[i]
            try:
                images.append(np.asarray(Image.open(f"{stem}_img.jpg").convert("RGB")))
                raw = lz4.frame.decompress(Path(f"{stem}_posed_vertx.lz4").read_bytes())
                verts.append(np.frombuffer(raw, dtype=np.float32).reshape(-1, 3))
            except (OSError, RuntimeError, ValueError) as err:
                raise DatasetError(f"{stem}: unreadable frame ({type(err).__name__}: {err})") from None
        return np.stack(images), np.stack(verts)


def mirror_map(template: torch.Tensor, tol: float = 1e-4) -> torch.Tensor:
    """For each vertex, the vertex at its mirror position across x = 0: (V,) indices (the official
    ``flame_verts_flip_mapping.npy``, built from the model where the user has no such file)."""
    mirrored = template * torch.tensor([-1.0, 1.0, 1.0])
    d = torch.cdist(mirrored, template)
    dist, idx = d.min(dim=1)
    if dist.max() > tol:
        raise ValueError(f"template is not mirror-symmetric (worst vertex off by {dist.max():.2e})")
    return idx


def load_mirror_map(path: str | os.PathLike[str], num_verts: int) -> torch.Tensor:
    """A vertex flip mapping file (the official ``FLAME/flame_verts_flip_mapping.npy``: (V,) integers)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: not a vertex flip mapping ({type(err).__name__}: {err})") from None
    if arr.shape != (num_verts,) or arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() >= num_verts:
        raise DatasetError(f"{path}: a flip mapping must hold {num_verts} vertex indices, got {arr.shape} {arr.dtype}")
    idx = torch.from_numpy(arr.astype(np.int64))
    if not torch.equal(idx[idx], torch.arange(num_verts)):
        raise DatasetError(f"{path}: the flip mapping is not its own inverse")
    return idx


def flip_pair(images: torch.Tensor, verts: torch.Tensor, mirror: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror images (N, 3, H, W) and their NDC vertices (N, V, 3) left-right: the official flip
    (``cv2.flip``, ``verts[mapping]``, then x -> W - x in pixels, which is x -> -x in NDC)."""
    return images.flip(-1), verts[:, mirror] * torch.tensor([-1.0, 1.0, 1.0])


GREY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


def _grey(img: torch.Tensor) -> torch.Tensor:
    r, g, b = img.unbind(-3)
    return (GREY[0] * r + GREY[1] * g + GREY[2] * b).unsqueeze(-3)


def _rgb_to_hsv(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, g, b = img.unbind(-3)
    v, _ = img.max(-3)
    lo, _ = img.min(-3)
    chroma = v - lo
    flat = chroma == 0
    s = chroma / torch.where(flat, torch.ones_like(v), v)
    c = torch.where(flat, torch.ones_like(chroma), chroma)
    rc, gc, bc = (v - r) / c, (v - g) / c, (v - b) / c
    h = torch.where(v == r, bc - gc, torch.where(v == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(flat, torch.zeros_like(h), h)
    return torch.remainder(h / 6.0, 1.0), s, v


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    sector = torch.floor(h * 6.0)
    f = h * 6.0 - sector
    i = sector.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros(*h.shape[:-2], 3, *h.shape[-2:], dtype=h.dtype, device=h.device)
    for k, rgb in enumerate(table):
        out = torch.where((i == k).unsqueeze(-3), torch.stack(rgb, -3), out)
    return out


JitterOp = tuple[str, float]


@dataclass(frozen=True)
class ColorJitter:
    """torchvision's ``ColorJitter(brightness, contrast, saturation, hue)`` as the official trainer uses it
    (all 0.1): factors uniform in [1 - x, 1 + x], a hue shift uniform in [-hue, hue] turns of the colour
    wheel, applied in a random order, with one draw for both images of a pair."""

    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.1

    def draw(self, rng: np.random.Generator) -> list[JitterOp]:
        amounts = {"brightness": self.brightness, "contrast": self.contrast, "saturation": self.saturation, "hue": self.hue}
        ops = []
        for k in rng.permutation(4):
            name = list(amounts)[int(k)]
            amount = amounts[name]
            if amount > 0:
                centre = 0.0 if name == "hue" else 1.0
                ops.append((name, float(rng.uniform(centre - amount, centre + amount))))
        return ops

    @staticmethod
    def apply(img: torch.Tensor, ops: list[JitterOp]) -> torch.Tensor:
        """Images (..., 3, H, W) in [0, 1] through ``ops``; contrast blends with each image's own mean grey."""
        for name, f in ops:
            if name == "brightness":
                img = (img * f).clamp(0, 1)
            elif name == "contrast":
                img = (f * img + (1 - f) * _grey(img).mean(dim=(-3, -2, -1), keepdim=True)).clamp(0, 1)
            elif name == "saturation":
                img = (f * img + (1 - f) * _grey(img)).clamp(0, 1)
            else:
                h, s, v = _rgb_to_hsv(img)
                img = _hsv_to_rgb(torch.remainder(h + f, 1.0), s, v)
        return img


@dataclass(frozen=True)
class PairSamplerConfig:
    flip_prob: float = 0.5
    jitter: float = 0.1  # brightness, contrast and saturation jitter (0 disables), as torchvision's ColorJitter
    hue: float = 0.1  # hue jitter, in turns of the colour wheel


class PairDataset(torch.utils.data.Dataset):
    """(source, driving) pairs, sampled as the official data pipeline does: every pass over the
    identities visits each once in a shuffled order, takes one of its clips at random and two
    distinct frames of it in random order; the pair is flipped and colour-jittered alike.

    Index ``i`` always gives the same pair (deterministic in ``seed`` and ``i``), so a training
    run resumes exactly by continuing from its sample count. A corrupt shard is skipped (a
    random other identity is drawn) and counted in ``sample["skipped"]``.
    """

    def __init__(
        self,
        source: ClipSource,
        length: int,
        seed: int = 0,
        aug: PairSamplerConfig | None = None,
        mirror: torch.Tensor | None = None,
    ) -> None:
        self.source = source
        self.length = length
        self.seed = seed
        self.aug = aug or PairSamplerConfig(flip_prob=0.0, jitter=0.0, hue=0.0)
        self.jitter = ColorJitter(self.aug.jitter, self.aug.jitter, self.aug.jitter, self.aug.hue)
        self.mirror = mirror
        by_id: dict[str, list[ClipInfo]] = {}
        for c in source.clips():
            if c.frames >= 2:
                by_id.setdefault(c.identity, []).append(c)
        self.identities = sorted(by_id)
        self.by_identity = by_id
        if not self.identities:
            raise DatasetError("no clip has two frames to pair")
        if self.aug.flip_prob > 0 and mirror is None:
            raise ValueError("horizontal flips need the vertex mirror map")

    def __len__(self) -> int:
        return self.length

    def identity(self, index: int) -> str:
        """The identity of sample ``index``: pass ``index // n`` visits the n identities in a shuffled order."""
        n = len(self.identities)
        order = np.random.default_rng([self.seed, index // n, 1]).permutation(n)
        return self.identities[int(order[index % n])]

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, index])
        skipped = 0
        ident = self.identity(index)
        for _ in range(100):
            clip = self.by_identity[ident][rng.integers(len(self.by_identity[ident]))]
            s, d = rng.choice(clip.frames, size=2, replace=False)
            try:
                images, verts = self.source.frames(clip, [int(s), int(d)])
                break
            except DatasetError:
                skipped += 1
                ident = self.identities[rng.integers(len(self.identities))]
        else:
            raise DatasetError("100 corrupt samples in a row; is the dataset readable?")
        img = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        v = torch.from_numpy(verts)
        if rng.uniform() < self.aug.flip_prob:
            assert self.mirror is not None
            img, v = flip_pair(img, v, self.mirror)
        img = self.jitter.apply(img, self.jitter.draw(rng))
        return {"img_s": img[0], "img_d": img[1], "verts_s": v[0], "verts_d": v[1], "skipped": skipped}
