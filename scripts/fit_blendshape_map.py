"""Learn the demo head's map from MediaPipe's 52 blendshape scores to its expression and jaw.

Synthetic talking heads of the demo head are rendered with known parameters, MediaPipe's face
landmarker reads its blendshapes from each frame, and for each of the 10 expression coefficients
and the jaw opening (the jaw's x rotation) a ridge regression on the blendshapes of the same
meaning (``SOURCES``: smile from mouthSmile, blinks from eyeBlink, ...) plus a constant gives the
map. Restricting each target to its own blendshapes keeps the map from learning quirks of the
synthetic renders that real faces do not share (a free 52-input regression fits the renders
better and real drivers worse: ``docs/real_follow.md``). Clips are split by identity: the
accuracy printed and stored is on identities the fit never saw.

    python scripts/fit_blendshape_map.py [--clips 160] -o gdpw/assets/demo_blendshapes.npz
"""

from __future__ import annotations

import argparse

import numpy as np


def collect(clips: int, seed: int, size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Blendshape scores (N, 52), targets (N, 11) and identity ids (N,) of rendered frames."""
    from gdpw.data.synth import SynthConfig, render_clip
    from gdpw.fit import MediaPipeDetector
    from gdpw.flame import FLAME

    flame = FLAME()
    cfg = SynthConfig(size=size, frames_per_clip=24, seed=seed)
    scores, targets, ids, names = [], [], [], None
    with MediaPipeDetector(max_faces=1) as det:
        for i in range(clips):
            clip = render_clip(flame, cfg, i, 0)
            for t, image in enumerate(clip.images):
                faces = det.detect(image)
                if not faces or not faces[0].blendshapes:
                    continue
                names = names or sorted(faces[0].blendshapes)
                scores.append([faces[0].blendshapes[n] for n in names])
                targets.append(np.r_[clip.params.expression[t].numpy(), clip.params.jaw_pose[t, 0].item()])
                ids.append(i)
    assert names is not None
    return np.array(scores), np.array(targets), np.array(ids), names


# the blendshapes each target may read (both sides for the one-sided targets: which side is which
# is learned)
SOURCES = {
    "smile": ("mouthSmileLeft", "mouthSmileRight"),
    "frown": ("mouthFrownLeft", "mouthFrownRight"),
    "brows_up": ("browInnerUp", "browOuterUpLeft", "browOuterUpRight"),
    "brows_furrow": ("browDownLeft", "browDownRight"),
    "blink_left": ("eyeBlinkLeft", "eyeBlinkRight"),
    "blink_right": ("eyeBlinkLeft", "eyeBlinkRight"),
    "pucker": ("mouthPucker", "mouthFunnel"),
    "mouth_stretch": ("mouthStretchLeft", "mouthStretchRight"),
    "cheek_puff": ("cheekPuff",),
    "sneer": ("noseSneerLeft", "noseSneerRight"),
    "jaw_open": ("jawOpen",),
}


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """(D + 1, K) weights of ``[x, 1] @ w ~ y``; the constant is not penalised."""
    xa = np.c_[x, np.ones(len(x))]
    reg = lam * np.eye(xa.shape[1])
    reg[-1, -1] = 0.0
    return np.linalg.solve(xa.T @ xa + reg, xa.T @ y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=160, help="synthetic clips of 24 frames, one identity each")
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--lam", type=float, default=0.3)
    p.add_argument("-o", "--output", default="gdpw/assets/demo_blendshapes.npz")
    args = p.parse_args()
    from scripts.build_demo_head import EXPRESSION_NAMES

    x, y, ids, names = collect(args.clips, args.seed)
    held = ids >= int(args.clips * 0.8)
    targets = [*EXPRESSION_NAMES, "jaw_open"]
    w = np.zeros((len(names) + 1, len(targets)))
    for k, target in enumerate(targets):
        cols = [names.index(n) for n in SOURCES[target]]
        wk = ridge(x[~held][:, cols], y[~held, k : k + 1], args.lam)
        w[cols, k], w[-1, k] = wk[:-1, 0], wk[-1, 0]
    pred = np.c_[x[held], np.ones(held.sum())] @ w
    err = np.abs(pred - y[held]).mean(0)
    base = np.abs(y[held] - y[~held].mean(0)).mean(0)  # predicting the training mean
    r = [float(np.corrcoef(pred[:, k], y[held, k])[0, 1]) for k in range(y.shape[1])]
    print(f"{len(x)} frames ({held.sum()} held out, {int(args.clips * 0.2)} identities)")
    print("| target | held-out MAE | MAE of the mean | correlation |\n| --- | --- | --- | --- |")
    for k, name in enumerate(targets):
        print(f"| {name} | {err[k]:.3f} | {base[k]:.3f} | {r[k]:.2f} |")
    np.savez_compressed(args.output, names=np.array(names), weights=w.astype(np.float32), targets=np.array(targets),
                        heldout_mae=err.astype(np.float32), heldout_r=np.array(r, np.float32),
                        heldout_frames=np.int64(held.sum()))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
