"""A figure of the animation pipeline on a real portrait. Top: the source's face crop and the
driving frames; bottom: the same face crop of the results (pasted back into the portrait).

    python scripts/real_face_figure.py --source ../shared/real_faces/s9.jpg --driving ../shared/real_faces/d18.mp4 \\
        --frames 0 40 80 -o docs/real_face.png [--set KEY=VALUE ...] [--against KEY=VALUE ...]

``--set`` changes the results' ``AnimateConfig``; ``--against`` adds a row above them animated with
those fields changed instead (e.g. ``--against paint_stretch=0``: the network painting where it chooses).
"""

from __future__ import annotations

import argparse
import copy

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True)
    p.add_argument("--driving", required=True)
    p.add_argument("--frames", type=int, nargs="+", default=[0, 40, 80], help="driving frames to show")
    p.add_argument("--checkpoint", help="default: the shipped demo generator")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an AnimateConfig field by its dotted path")
    p.add_argument("--against", action="append", default=[], metavar="KEY=VALUE",
                   help="also a row of results with these AnimateConfig fields changed, above the others")
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args()
    from PIL import Image

    from gdpw.common.config import apply_overrides, from_dict, to_dict
    from gdpw.common.crop import crop
    from gdpw.common.images import resize_to_height
    from gdpw.data.video import read_image, read_video
    from gdpw.pipeline import AnimateConfig, Animator

    source = read_image(args.source)
    frames, info = read_video(args.driving, max(args.frames) + 1)
    base = apply_overrides(to_dict(AnimateConfig(checkpoint=args.checkpoint)), args.set)
    rows = []
    for changes in ([args.against] if args.against else []) + [[]]:
        with Animator(from_dict(AnimateConfig, apply_overrides(copy.deepcopy(base), changes))) as animator:
            result = animator.animate(source, list(frames), fps=info.fps)
            box = animator.prepare_source(source).box
        rows.append(result.frames)
    h = args.height
    face = crop(source, box, h)
    top = np.concatenate([face] + [resize_to_height(frames[i], h) for i in args.frames], 1)
    below = [np.concatenate([np.zeros_like(face)] + [crop(r[i], box, h) for i in args.frames], 1) for r in rows]
    below = [np.pad(b, ((0, 0), (0, top.shape[1] - b.shape[1]), (0, 0))) for b in below]
    Image.fromarray(np.concatenate([top, *below], 0)).save(args.output)
    print(f"wrote {args.output}: source face | driving frames {args.frames} over the results' face crops"
          + (f" ({' '.join(args.against)}, then as set)" if args.against else ""))


if __name__ == "__main__":
    main()
