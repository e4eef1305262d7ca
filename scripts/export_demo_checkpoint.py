"""Export the demo run's generator as the shipped asset (half precision, no discriminator).

    python scripts/export_demo_checkpoint.py runs/demo_cpu/checkpoints/last.pt gdpw/assets/demo_generator.pt
"""

from __future__ import annotations

import sys

from gdpw.model.checkpoint import load_checkpoint, save_checkpoint


def main(src: str, dst: str) -> None:
    ckpt = load_checkpoint(src)  # its image_size is the size of the data it was trained on
    ckpt.discriminator = ckpt.discriminator_config = None
    # fp16 storage halves the file; loading casts back to float32
    ckpt.generator = {k: v.half() if v.is_floating_point() else v for k, v in ckpt.generator.items()}
    save_checkpoint(ckpt, dst)
    n = sum(v.numel() for v in ckpt.generator.values() if v.is_floating_point())
    print(f"exported step {ckpt.global_step} ({n / 1e6:.2f}M values, fp16) to {dst}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
