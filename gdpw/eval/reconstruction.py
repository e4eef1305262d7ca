"""Same-identity reconstruction on held-out pairs: the model against two baselines.

* ``source``: the source image itself (no motion at all);
* ``geom_warp``: the source backward-warped by the rendered geometric displacement field alone
  (exact on the visible face surface, zero motion off the mesh);
* ``model``: the generator's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gdpw.data import PairDataset
from gdpw.model import Generator
from gdpw.model.warp import backward_warp
from gdpw.render import render_guidance

METHODS = ("model", "source", "geom_warp")


@dataclass
class ReconstructionResult:
    pairs: int
    l1: dict[str, float]
    psnr: dict[str, float]

    def table(self) -> str:
        lines = ["| method | L1 (lower is better) | PSNR dB (higher is better) |", "| --- | --- | --- |"]
        for m in METHODS:
            lines.append(f"| {m} | {self.l1[m]:.4f} | {self.psnr[m]:.2f} |")
        return "\n".join(lines)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (B,) of images in [0, 1]."""
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


@torch.no_grad()
def evaluate_reconstruction(
    gen: Generator, faces: torch.Tensor, pairs: PairDataset, batch_size: int = 16
) -> ReconstructionResult:
    gen.eval()
    sums = {f"{k}_{m}": 0.0 for k in ("l1", "psnr") for m in METHODS}
    n = 0
    for batch in torch.utils.data.DataLoader(pairs, batch_size=batch_size):
        img_s, img_d = batch["img_s"], batch["img_d"]
        size = (img_s.shape[2], img_s.shape[3])
        embeds = gen.embeds if gen.cfg.uses_codes else None
        pat = render_guidance(batch["verts_s"], batch["verts_d"], faces, size, embeds)
        outs = {
            "model": gen(img_s, pat.geom_disp, pat.codes_s, pat.codes_d).rec_img_d.clamp(0, 1),
            "source": img_s,
            "geom_warp": backward_warp(img_s, pat.geom_disp, "centers"),
        }
        for m, img in outs.items():
            sums[f"l1_{m}"] += float((img - img_d).abs().flatten(1).mean(1).sum())
            sums[f"psnr_{m}"] += float(psnr(img, img_d).sum())
        n += img_s.shape[0]
    return ReconstructionResult(
        n, {m: sums[f"l1_{m}"] / n for m in METHODS}, {m: sums[f"psnr_{m}"] / n for m in METHODS}
    )
