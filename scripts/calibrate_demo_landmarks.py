"""Where MediaPipe's 68 points land on the demo head, in its frontal (x, y) metres.

Renders synthetic clips of the demo head (random identities, poses, expressions, jaw motion),
runs the MediaPipe face landmarker on them, and for each of the 68 points of ``MP_TO_IBUG68`` picks
the point of the head's surface (on a 1 mm frontal grid) whose projections, under the clips' true
FLAME parameters, are closest on average to MediaPipe's detections. Mirror pairs are averaged, so
the result is symmetric. ``scripts/build_demo_head.py``'s ``LANDMARKS_RIGHT`` holds the printed table.

    python scripts/calibrate_demo_landmarks.py [--clips 10]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from build_demo_head import IBUG_MIRROR, embed_landmarks

from gdpw.data.synth import SynthConfig, render_clip
from gdpw.fit import MediaPipeDetector
from gdpw.flame import FLAME

SIZE = 256


def detections(flame: FLAME, clips: int) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's 68 points (N, 68, 2) in NDC and the posed image-space vertices (N, V, 2)."""
    points, verts = [], []
    with MediaPipeDetector() as det:
        for seed in range(clips):
            clip = render_clip(flame, SynthConfig(size=SIZE, frames_per_clip=8, seed=seed), 0, 0)
            with torch.no_grad():
                img_verts = clip.params.image_vertices(flame)
            for i, img in enumerate(clip.images):
                faces = det.detect(img)
                if faces:
                    points.append(faces[0].ibug68 / SIZE * 2 - 1)
                    verts.append(img_verts[i, :, :2].numpy())
    return np.stack(points), np.stack(verts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=10)
    args = p.parse_args()
    flame = FLAME()
    points, verts = detections(flame, args.clips)
    template, faces = flame.v_template.numpy(), flame.faces.numpy()
    grid = [(x, y) for x in np.arange(-0.09, 0.0901, 0.001) for y in np.arange(-0.11, 0.0601, 0.001)]
    cands, tri, bary = [], [], []
    for xy in grid:
        try:
            idx, b = embed_landmarks(template, faces, np.array([xy]))
        except RuntimeError:  # not over the face
            continue
        cands.append(xy)
        tri.append(faces[idx[0]])
        bary.append(b[0])
    cands_xy = np.array(cands)
    tri_a, bary_a = np.array(tri), np.array(bary)
    proj = (verts[:, tri_a] * bary_a[None, :, :, None]).sum(2)  # (N, C, 2): every candidate in every frame
    best_a = np.stack([cands_xy[np.linalg.norm(proj - points[:, k, None], axis=-1).mean(0).argmin()] for k in range(68)])
    sym = (best_a + best_a[IBUG_MIRROR] * np.array([-1.0, 1.0])) / 2
    print(f"{len(points)} frames with a face; {len(cands)} candidate surface points")
    right = [k for k in range(68) if sym[k, 0] < -1e-9 or (abs(sym[k, 0]) < 1e-9 and IBUG_MIRROR[k] == k)]
    print("LANDMARKS_RIGHT = {  # iBUG index: (x, y), image-left half and the midline")
    print(",\n".join(f"    {k}: ({sym[k, 0]:+.3f}, {sym[k, 1]:+.3f})" for k in right))
    print("}")


if __name__ == "__main__":
    main()
