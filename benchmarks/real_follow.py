"""How well ``gdpw animate`` follows real drivers on real portraits, measured by MediaPipe.

For every portrait x driving clip (default: ``../shared/real_faces``), the portrait is animated as
``gdpw animate`` does (same ``AnimateConfig``), then MediaPipe's face landmarker runs on every
driving frame and every result frame, and three figures are printed side by side:

* head-pose error: yaw, pitch and roll from MediaPipe's facial transformation matrix, each
  relative to its clip's first frame, mean absolute difference between driver and result (degrees);
* expression correlation: Pearson correlation over frames between driver and result of jawOpen,
  mouthSmile (left + right), eyeBlink (left + right) and browInnerUp, averaged over the four
  (a channel that does not vary in one of them counts 0);
* sharpness: variance of the Laplacian of the face box resampled to 128 x 128 grey, result over
  source (1.0: as sharp as the portrait);
* jitter: the high-frequency motion of the result's 478 landmarks (RMS of their second difference
  over consecutive frames, in units of the face's size), over the driver's own on the same frames
  (1.0: as steady as the driver; a filter that lags shows below 1, shaking above);
* jitter floor: MediaPipe's own jitter reading the still portrait under 2 grey levels of pixel noise
  (24 copies), over the driver's on the same frames: the part of the result's jitter that is the
  detector's, not the animation's (a small face in a large photo reads noisily);
* head-scale wobble: the standard deviation over frames of the result's face size (the landmarks'
  RMS radius) over its mean, relative to the driver's (1.0: the size varies as the driver's does).

Frames where either face is not found are left out (their share is printed).

    python benchmarks/real_follow.py [--faces ../shared/real_faces] [--max-frames 120] [--live | --self] [--blendshape-map F]
        [--set track.fit.eyelid_weight=4 ...] [--tracking regressor|fitting] [--iterations N] [-o docs/real_follow.md]

``--live`` animates as ``gdpw live`` does (each frame tracked causally as it comes, none dropped;
``--tracking`` and ``--iterations`` are ``LiveConfig``'s).
``--self`` drives each clip's own first frame instead of the portraits (same identity): what is lost
then is the pipeline's, not the portrait's.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

CHANNELS = {"jawOpen": ("jawOpen",), "mouthSmile": ("mouthSmileLeft", "mouthSmileRight"),
            "eyeBlink": ("eyeBlinkLeft", "eyeBlinkRight"), "browInnerUp": ("browInnerUp",)}
SHARP_SIZE = 128


@dataclass
class FaceReading:
    angles: np.ndarray  # yaw, pitch, roll in degrees
    channels: np.ndarray  # the four expression channels
    sharpness: float
    points: np.ndarray  # (478, 2) landmarks in pixels
    index: int  # the frame's number in its clip

    @property
    def size(self) -> float:
        """The face's size: its landmarks' RMS distance from their centre (pixels)."""
        return float(np.sqrt(((self.points - self.points.mean(0)) ** 2).sum(1).mean()))


def euler_degrees(matrix: np.ndarray) -> np.ndarray:
    """Yaw (about y), pitch (about x), roll (about z) of a facial transformation matrix's rotation."""
    r = matrix[:3, :3] / np.linalg.norm(matrix[:3, 0])
    yaw = math.asin(max(-1.0, min(1.0, -r[2, 0])))
    return np.degrees([yaw, math.atan2(r[2, 1], r[2, 2]), math.atan2(r[1, 0], r[0, 0])])


def sharpness(image: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Variance of the 4-neighbour Laplacian of the face's square box (cut at the image border),
    resampled to 128 x 128 grey."""
    from PIL import Image

    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = image.shape[:2]
    square = (max(0.0, cx - side / 2), max(0.0, cy - side / 2), min(float(w), cx + side / 2), min(float(h), cy + side / 2))
    crop = Image.fromarray(image).convert("L").resize((SHARP_SIZE, SHARP_SIZE), Image.Resampling.BILINEAR, box=square)
    g = np.asarray(crop, dtype=np.float64)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def read_face(detector, image: np.ndarray, index: int = 0) -> FaceReading | None:  # type: ignore[no-untyped-def]
    faces = detector.detect(image)
    if not faces or faces[0].pose is None:
        return None
    face = faces[0]
    channels = np.array([sum(face.blendshapes.get(n, 0.0) for n in names) for names in CHANNELS.values()])
    return FaceReading(euler_degrees(face.pose), channels, sharpness(image, face.box()), face.points.astype(np.float64), index)


def high_frequency(readings: list[FaceReading]) -> float:
    """RMS of the landmarks' second difference over runs of three consecutive frames, each in units
    of the middle frame's face size (NaN without such a run)."""
    acc = [np.sqrt(((a.points + c.points - 2 * b.points) ** 2).sum(1).mean()) / b.size
           for a, b, c in zip(readings, readings[1:], readings[2:]) if c.index - a.index == 2]
    return float(np.sqrt(np.mean(np.square(acc)))) if acc else float("nan")


def reading_noise(detector, image: np.ndarray, copies: int = 24, grey_levels: float = 2.0) -> float:  # type: ignore[no-untyped-def]
    """``high_frequency`` of MediaPipe's readings of one still image under Gaussian pixel noise
    (seeded): the detector's own jitter on that face."""
    rng = np.random.default_rng(0)
    noisy = (np.clip(image + rng.normal(0.0, grey_levels, image.shape), 0, 255).astype(np.uint8) for _ in range(copies))
    readings = [read_face(detector, n, i) for i, n in enumerate(noisy)]
    return high_frequency([r for r in readings if r is not None])


def scale_wobble(readings: list[FaceReading]) -> float:
    """Standard deviation of the face size over frames, over its mean."""
    sizes = np.array([r.size for r in readings])
    return float(sizes.std() / sizes.mean())


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or a.std() < 1e-6 or b.std() < 1e-6:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def measure(animator, detector, source: np.ndarray, clip: Path, max_frames: int | None,  # type: ignore[no-untyped-def]
            source_noise: float, live: bool = False, live_cfg=None) -> dict[str, float]:
    """One pair's figures; ``source_noise``: the portrait's ``reading_noise`` (the same for all its drivers)."""
    from gdpw.data.video import read_video
    from gdpw.pipeline.live import LiveSession

    frames, info = read_video(clip, max_frames)
    start = time.perf_counter()
    if live:  # frame by frame as a camera would give them (causal tracking), none dropped
        session = LiveSession(animator, source, live_cfg)
        results = [session.step(f, i / info.fps).image for i, f in enumerate(frames)]
    else:
        results = list(animator.animate(source, list(frames), fps=info.fps).frames)
    seconds = time.perf_counter() - start
    src = read_face(detector, source)
    pairs = [(read_face(detector, d, i), read_face(detector, r, i)) for i, (d, r) in enumerate(zip(frames, results))]
    kept = [(d, r) for d, r in pairs if d is not None and r is not None]
    if src is None or len(kept) < 3:
        raise RuntimeError(f"faces found in too few frames ({len(kept)})")
    drv = np.stack([d.angles for d, _ in kept])
    res = np.stack([r.angles for _, r in kept])
    pose_err = float(np.abs((drv - drv[0]) - (res - res[0])).mean())
    corr = {name: correlation(np.array([d.channels[i] for d, _ in kept]), np.array([r.channels[i] for _, r in kept]))
            for i, name in enumerate(CHANNELS)}
    sharp = float(np.mean([r.sharpness for _, r in kept]) / max(src.sharpness, 1e-9))
    drivers, shown = [d for d, _ in kept], [r for _, r in kept]
    return {"pose_err": pose_err, **corr, "expression": float(np.mean(list(corr.values()))), "sharpness": sharp,
            "jitter": high_frequency(shown) / high_frequency(drivers),
            "jitter_floor": source_noise / high_frequency(drivers), "wobble": scale_wobble(shown) / scale_wobble(drivers),
            "kept": len(kept) / len(pairs), "fps": len(frames) / seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faces", default=str(Path(__file__).resolve().parents[2] / "shared" / "real_faces"))
    p.add_argument("--checkpoint", help="default: the shipped demo generator")
    p.add_argument("--max-frames", type=int, default=120, help="driving frames per clip (default 120)")
    p.add_argument("--detail", type=int, help="AnimateConfig.detail (0: the generator's resolution only)")
    p.add_argument("--blendshape-map", help="HeadConfig.blendshape_map: MediaPipe's blendshapes as expression observations "
                   "(the demo head's: gdpw/assets/demo_blendshapes.npz)")
    p.add_argument("--live", action="store_true", help="the live pipeline (gdpw live): causal tracking frame by frame")
    p.add_argument("--tracking", choices=["fitting", "regressor"], help="with --live: LiveConfig.tracking (default: its default)")
    p.add_argument("--iterations", type=int, help="with --live: LiveConfig.iterations (L-BFGS steps per frame)")
    p.add_argument("--self", action="store_true", help="each clip drives its own first frame (same identity) instead of the portraits")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an AnimateConfig field by its dotted path, e.g. track.fit.eyelid_weight=4 (repeatable)")
    p.add_argument("-o", "--output", help="also write the table to this markdown file")
    args = p.parse_args()
    from gdpw.common.config import apply_overrides, from_dict, to_dict
    from gdpw.data.video import read_image, read_video
    from gdpw.fit import MediaPipeDetector
    from gdpw.pipeline import AnimateConfig, Animator
    from gdpw.pipeline.live import LiveConfig

    faces = Path(args.faces)
    clips = sorted(faces.glob("*.mp4"))
    if args.self:
        pairs = [(f"{clip.stem} frame 0", lambda clip=clip: read_video(clip, 1)[0][0], clip) for clip in clips]
    else:
        portraits = sorted(faces.glob("*.jpg")) + sorted(faces.glob("*.png"))
        pairs = [(portrait.stem, lambda portrait=portrait: read_image(portrait), clip) for portrait in portraits for clip in clips]
    head = ("| portrait | driver | pose err (deg) | jawOpen | smile | blink | browInnerUp | expression (mean r) "
            "| sharpness vs source | jitter vs driver | jitter floor | scale wobble vs driver | frames with faces | frames/s |")
    lines = [head, "|" + " --- |" * 14]
    rows = []
    noise: dict[str, float] = {}
    cfg = AnimateConfig(checkpoint=args.checkpoint)
    cfg = cfg if args.detail is None else replace(cfg, detail=args.detail)
    cfg = cfg if args.blendshape_map is None else replace(cfg, head=replace(cfg.head, blendshape_map=args.blendshape_map))
    cfg = from_dict(AnimateConfig, apply_overrides(to_dict(cfg), args.set))
    live = LiveConfig(iterations=args.iterations)
    live = live if args.tracking is None else replace(live, tracking=args.tracking)
    with Animator(cfg) as animator, MediaPipeDetector(max_faces=1) as detector:
        for name, source, clip in pairs:
            try:
                image = source()
                if name not in noise:  # a portrait's own reading noise, once for all its drivers
                    noise[name] = reading_noise(detector, image)
                m = measure(animator, detector, image, clip, args.max_frames, noise[name], args.live, live)
            except Exception as err:  # reported in the table; the other pairs still run
                lines.append(f"| {name} | {clip.stem} | failed: {type(err).__name__}: {err} |" + " |" * 11)
                print(lines[-1], flush=True)
                continue
            rows.append(m)
            lines.append(f"| {name} | {clip.stem} | {m['pose_err']:.2f} | {m['jawOpen']:.2f} | {m['mouthSmile']:.2f} "
                         f"| {m['eyeBlink']:.2f} | {m['browInnerUp']:.2f} | {m['expression']:.2f} | {m['sharpness']:.2f} "
                         f"| {m['jitter']:.2f} | {m['jitter_floor']:.2f} | {m['wobble']:.2f} | {100 * m['kept']:.0f} % | {m['fps']:.1f} |")
            print(lines[-1], flush=True)
    if rows:
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        lines.append(f"| **mean** | | {mean['pose_err']:.2f} | {mean['jawOpen']:.2f} | {mean['mouthSmile']:.2f} | {mean['eyeBlink']:.2f} "
                     f"| {mean['browInnerUp']:.2f} | **{mean['expression']:.2f}** | **{mean['sharpness']:.2f}** "
                     f"| {mean['jitter']:.2f} | {mean['jitter_floor']:.2f} | {mean['wobble']:.2f} | {100 * mean['kept']:.0f} % | {mean['fps']:.1f} |")
        print(lines[-1])
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
