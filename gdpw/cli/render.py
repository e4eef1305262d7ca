"""``gdpw render``: pictures of a head's guidance patterns and a strip of its joints and blendshapes."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

EPILOG = """examples:
  gdpw render -o outputs/render
  gdpw render --flame FLAME2020/generic_model.pkl --size 512 -o outputs/flame
writes strip.png (shaded poses), geom_disp.png, codes_s.png, codes_d.png, nmfc.png"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "render",
        help="save images of the guidance patterns and a pose strip of a FLAME head",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--flame", help="FLAME generic_model.pkl or .npz (default: the built-in demo head)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--scale", type=float, default=7.0, help="orthographic camera scale (default 7)")
    p.add_argument("-o", "--output", default="outputs/render", help="output folder (default outputs/render)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def pose_strip_params(n_expression: int) -> list[dict[str, torch.Tensor]]:
    """One parameter set per frame of the strip: each joint and blendshape in turn."""
    frames: list[dict[str, torch.Tensor]] = [{}]
    frames.append({"global_pose": torch.tensor([[0.0, 0.6, 0.0]])})
    frames.append({"global_pose": torch.tensor([[0.35, 0.0, 0.0]])})
    frames.append({"neck_pose": torch.tensor([[0.0, 0.0, 0.3]])})
    frames.append({"jaw_pose": torch.tensor([[0.25, 0.0, 0.0]])})
    frames.append({"eye_pose": torch.tensor([[0.0, 0.5, 0.0, 0.0, 0.5, 0.0]])})
    for k in range(n_expression):
        e = torch.zeros(1, n_expression)
        e[0, k] = 2.0
        frames.append({"expression": e})
    frames.append({"shape": 2.0 * torch.ones(1, 20)})
    return frames


def run(args: argparse.Namespace) -> None:
    from gdpw.flame import FLAME, FlameParams, orthographic
    from gdpw.render import render_guidance, render_nmfc
    from gdpw.render.patterns import render_shaded
    from gdpw.render.visualize import codes_to_rgb, flow_to_rgb, hstack, save_png

    out_dir = Path(args.output)
    flame = FLAME(args.flame)
    size = (args.size, args.size)
    cam = torch.tensor([[args.scale, 0.0, 0.0]])
    torch.manual_seed(args.seed)

    frames = pose_strip_params(flame.n_expression)
    strip = []
    for params in frames:
        if "shape" in params:
            params = {"shape": params["shape"][:, : flame.n_shape]}
        out = flame(FlameParams(**params))
        strip.append(render_shaded(out.vertices, orthographic(out.vertices, cam), flame.faces, size)[0])
    save_png(hstack(torch.stack(strip)), out_dir / "strip.png")

    src = flame(FlameParams())
    drv = flame(
        FlameParams(
            global_pose=torch.tensor([[0.1, 0.35, 0.0]]),
            jaw_pose=torch.tensor([[0.2, 0.0, 0.0]]),
            expression=torch.eye(1, flame.n_expression) * 2.0,
        )
    )
    vs, vd = orthographic(src.vertices, cam), orthographic(drv.vertices, cam)
    embeds = torch.rand(flame.num_verts, 16)
    pat = render_guidance(vs, vd, flame.faces, size, embeds)
    save_png(flow_to_rgb(pat.geom_disp)[0], out_dir / "geom_disp.png")
    assert pat.codes_s is not None and pat.codes_d is not None
    save_png(codes_to_rgb(pat.codes_s, pat.mask_s)[0], out_dir / "codes_s.png")
    save_png(codes_to_rgb(pat.codes_d, pat.mask_d)[0], out_dir / "codes_d.png")
    save_png(render_nmfc(vd, flame.faces, flame.v_template, size)[0], out_dir / "nmfc.png")
    print(f"wrote strip.png ({len(frames)} poses), geom_disp.png, codes_s.png, codes_d.png, nmfc.png to {out_dir}")
