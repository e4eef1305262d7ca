"""Guidance maps against the official renderer (nvdiffrast, antialiased) on every case file of
``../shared/fixtures/official_render/``, and the antialiasing rule on shapes with a known answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gdpw.render import antialias, interpolate, rasterize, render_guidance

from .conftest import shared_cases

CASES = shared_cases("fixtures/official_render", "*.pt")
BOUND = 0.0008  # share of covered pixels more than 0.01 off the reference (the triangle-id floor is 0.0003)


def _dense(pix: torch.Tensor, vals: torch.Tensor, aa_pix: torch.Tensor, aa_vals: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    out = torch.zeros(size[0] * size[1], vals.shape[1])
    out[pix.long()] = vals.float()
    out[aa_pix.long()] = aa_vals.float()
    return out.T.reshape(vals.shape[1], *size)



@pytest.mark.parametrize("path", CASES)
def test_antialiased_guidance_matches_the_official_renderer(path: Path) -> None:
    ref = torch.load(path, weights_only=False)
    faces, embeds, size = ref["faces"], ref["embeds"], tuple(ref["size"])
    off = {False: 0, True: 0}
    covered_total = 0
    for k, pair in enumerate(ref["pairs"]):
        vs, vd = ref["verts_s"][k : k + 1], ref["verts_d"][k : k + 1]
        d, s = pair["driving"], pair["source"]
        want_d = _dense(d["pix"], torch.cat([d["flow"], d["codes"].float()], 1),
                        d["aa_pix"], torch.cat([d["aa_flow"], d["aa_codes"].float()], 1), size)
        want_s = _dense(s["pix"], s["codes"], s["aa_pix"], s["aa_codes"], size)
        for aa in (False, True):
            with torch.no_grad():
                pat = render_guidance(vs, vd, faces, size, embeds, antialias=aa)
            for got, want, p in ((torch.cat([pat.geom_disp, pat.codes_d], 1)[0], want_d, d), (pat.codes_s[0], want_s, s)):
                covered = torch.zeros(size[0] * size[1], dtype=torch.bool)
                covered[p["pix"].long()] = True
                covered[p["aa_pix"].long()] = True
                off[aa] += int((((got - want).abs() > 0.01).any(0) & covered.view(size)).sum())
                covered_total += int(covered.sum()) if aa else 0
    assert off[True] / covered_total <= BOUND, (off, covered_total)
    assert off[True] < off[False] / 5  # without antialiasing the silhouettes are off (0.5 %)


def test_antialiasing_gives_the_coverage_of_a_straight_silhouette() -> None:
    # a quad (two triangles; their shared diagonal is no silhouette) over x < edge, on a 24x24 image
    h = w = 24
    for edge in (10.3, 10.7):
        x_ndc = (edge + 0.5) / w * 2 - 1  # pixel-index coordinate edge -> NDC
        verts = torch.tensor([[[-1.5, -1.5, 0.5], [x_ndc, -1.5, 0.5], [x_ndc, 1.5, 0.5], [-1.5, 1.5, 0.5]]])
        faces = torch.tensor([[0, 2, 1], [0, 3, 2]])  # front-facing in image space (y down)
        frags = rasterize(verts, faces, (h, w), cull="none")
        colour = torch.ones(1, 4, 1)
        img = interpolate(colour, faces, frags)
        out = antialias(img, frags, verts, faces)
        row = out[0, 0, 12]
        covered = torch.tensor([min(1.0, max(0.0, edge - (i - 0.5))) for i in range(w)])  # pixel i spans i +- 0.5
        assert torch.allclose(row, covered, atol=1e-5), (edge, row[8:13], covered[8:13])
        assert torch.equal(out[0, 0, :, :9], img[0, 0, :, :9])  # inside, away from the edge: unchanged


def test_antialiasing_passes_gradients_to_colours_and_vertices() -> None:
    from gdpw.flame import FLAME, orthographic

    flame = FLAME()
    cam = torch.tensor([[6.0, 0.0, 0.02]])
    verts = orthographic(flame.v_template[None], cam).requires_grad_(True)
    codes = torch.rand(flame.num_verts, 3, requires_grad=True)
    frags = rasterize(verts, flame.faces, (48, 48))
    out = antialias(interpolate(codes, flame.faces, frags), frags, verts, flame.faces)
    out.square().sum().backward()
    assert codes.grad is not None and codes.grad.abs().sum() > 0
    assert verts.grad is not None and verts.grad.abs().sum() > 0
