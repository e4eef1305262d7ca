"""Time the guidance patterns for a FLAME-sized mesh (5023 vertices, 9976 faces) at 256x256.

Prints, per batch size, milliseconds per mesh for each pattern: the displacement field (one
rasterisation of the driving mesh + interpolation), posed neural codes on one mesh, and both
patterns of a (source, driving) pair, with the ratio to the 10 ms-per-mesh-per-pattern target, and
the same pair with nvdiffrast-style silhouette antialiasing (what the released checkpoints see), with
its cost relative to the plain pair, and the driving pass of animation (``render_driving``) without and
with the paint mask of alpha-blending generators (``--paint-stretch``), the source's coverage given
once per video as the animator does, with its cost relative to the plain driving pass.

    python benchmarks/render.py [--size 256] [--repeats 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from gdpw.flame import FLAME, FlameParams, orthographic
from gdpw.render import interpolate, rasterize, render_driving, render_guidance

TARGET_MS = 10.0


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    flame = FLAME().to(args.device)
    faces = flame.faces
    print(f"mesh: {flame.num_verts} vertices, {faces.shape[0]} faces; {args.size}x{args.size}; "
          f"{torch.get_num_threads()} threads; device {args.device}")
    size = (args.size, args.size)
    for batch in (1, 8):
        g = torch.Generator().manual_seed(batch)
        pose = lambda: 0.3 * torch.randn(batch, 3, generator=g)  # noqa: E731
        out_s = flame(FlameParams(global_pose=pose(), jaw_pose=0.1 * pose().abs()))
        out_d = flame(FlameParams(global_pose=pose(), jaw_pose=0.1 * pose().abs()))
        cam = torch.tensor([[8.0, 0.0, 0.0]]).expand(batch, 3)
        vs = orthographic(out_s.vertices, cam).to(args.device)
        vd = orthographic(out_d.vertices, cam).to(args.device)
        embeds = torch.rand(flame.num_verts, 16, device=args.device)
        disp_attrs = vs[..., :2] - vd[..., :2]
        with torch.no_grad():
            t_disp = timed(lambda: interpolate(disp_attrs, faces, rasterize(vd, faces, size)), args.repeats) / batch
            t_codes = timed(lambda: interpolate(embeds, faces, rasterize(vs, faces, size)), args.repeats) / batch
            t_pair = timed(lambda: render_guidance(vs, vd, faces, size, embeds), args.repeats) / batch
            t_aa = timed(lambda: render_guidance(vs, vd, faces, size, embeds, antialias=True), args.repeats) / batch
            cover = rasterize(vs, faces, size).mask()
            t_drv = timed(lambda: render_driving(vs, vd, faces, size, embeds), args.repeats) / batch
            t_paint = timed(lambda: render_driving(vs, vd, faces, size, embeds, paint_stretch=1.5, cover_s=cover), args.repeats) / batch
        print(
            f"batch {batch}: displacement field {t_disp:.2f} ms/mesh ({TARGET_MS / t_disp:.2f}x target), "
            f"neural codes {t_codes:.2f} ms/mesh ({TARGET_MS / t_codes:.2f}x target), "
            f"both patterns of a pair {t_pair:.2f} ms/pair ({2 * TARGET_MS / t_pair:.2f}x target), "
            f"antialiased {t_aa:.2f} ms/pair ({t_aa / t_pair:.2f}x the plain pair, {2 * TARGET_MS / t_aa:.2f}x target); "
            f"driving pass {t_drv:.2f} ms/frame, with the paint mask {t_paint:.2f} ms/frame ({t_paint / t_drv:.2f}x)"
        )


if __name__ == "__main__":
    main()
