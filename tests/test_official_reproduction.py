"""The network reproduces the official GDPW network's outputs (../shared/fixtures/official_gdpw)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gdpw.model import GeneratorConfig
from gdpw.model.checkpoint import checkpoint_from_official

# Float32 bounds that hold on any x86-64 CPU (oneDNN picks AVX2, AVX-512 or AMX kernels, each with its own
# summation order). Flows, images and logits are computed through ~20 convolutions whose reductions
# differ in order: 2^7 unit roundoffs (u = 2^-24) of the largest magnitude, 7.6e-6 at magnitude 1 (this
# AMD machine: 7e-7 on the flows). A wrong convention (the grid, the pixel-to-NDC scale, the
# downsampling) is 1e-3 and more. The warped source amplifies the flow's error by the image's slope
# (at most 1 per pixel for images in [0, 1]) times W/2 pixels per NDC unit: its bound is derived from
# the flow error actually measured (on an Intel CPU with AMX: flows 7e-7, warped source 1.4e-5).
U = 2.0**-24
ATOL = 2**7 * U


def _close(name: str, got: torch.Tensor, ref: torch.Tensor, atol: float | None = None) -> None:
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    err = (got - ref).abs().max().item()
    bound = ATOL * max(1.0, ref.abs().max().item()) if atol is None else atol
    assert err <= bound, f"{name}: max abs error {err:.3g} > {bound:.3g}"


def warp_bound(flow_err: float, width: int) -> float:
    """The warped image's bound from the final flow's error: slope <= 1 per pixel, W/2 pixels per NDC unit."""
    return flow_err * width / 2 + ATOL


@pytest.mark.parametrize("guidance", ["neural_codes", "geom_disp", "both"])
def test_generator_matches_official(official_fixtures: Path, guidance: str) -> None:
    fx = torch.load(official_fixtures / f"generator_{guidance}.pt", weights_only=False)
    # Through the same converter users run on released files.
    ckpt = checkpoint_from_official({"generator": fx["state_dict"], "global_step": 0})
    cfg = ckpt.generator_config
    assert cfg.guidance == guidance
    assert cfg.num_levels == fx["num_levels"]
    assert {f"x{s}": cfg.channels(s) for s in cfg.strides} == fx["channels_per_level"]
    gen = ckpt.build_generator()
    inp = fx["inputs"]
    with torch.no_grad():
        out = gen(inp["img_s"], inp["mesh_flow_d2s"], inp["codes_s"], inp["codes_d"])
    ref = fx["outputs"]
    for key in ("out_img", "alpha"):
        _close(key, getattr(out, key), ref[key])
    flow_err = (out.flows["x1"] - ref["flows"]["x1"]).abs().max().item()
    for key in ("warp_img_s", "rec_img_d"):  # rec_img_d is out_img, or a blend with the warped source
        _close(key, getattr(out, key), ref[key], warp_bound(flow_err, ref[key].shape[-1]))
    for group in ("mesh_flows", "flows"):
        got = getattr(out, group)
        assert sorted(got) == sorted(ref[group]), f"{group} levels differ"
        for lvl, t in ref[group].items():
            _close(f"{group}.{lvl}", got[lvl], t)


def test_discriminator_matches_official(official_fixtures: Path) -> None:
    fx = torch.load(official_fixtures / "discriminator_x1.pt", weights_only=False)
    gen_fx = torch.load(official_fixtures / "generator_geom_disp.pt", weights_only=False)
    ckpt = checkpoint_from_official({"generator": gen_fx["state_dict"], "discriminator": fx["state_dict"]})
    disc = ckpt.build_discriminator()
    with torch.no_grad():
        feats, logits = disc(fx["inputs"]["img"])
    assert len(feats) == len(fx["outputs"]["feats"]) and len(logits) == len(fx["outputs"]["logits"])
    for i, (a, b) in enumerate(zip(feats, fx["outputs"]["feats"])):
        _close(f"feats[{i}]", a, b)
    for i, (a, b) in enumerate(zip(logits, fx["outputs"]["logits"])):
        _close(f"logits[{i}]", a, b)


def test_corrected_warp_convention_is_identity_at_zero_flow_and_exact_in_pixels() -> None:
    from gdpw.model.warp import backward_warp, pixels_to_ndc_flow

    img = torch.rand(1, 3, 16, 16)
    zero = torch.zeros(1, 2, 16, 16)
    assert torch.allclose(backward_warp(img, zero, "centers"), img, atol=1e-6)
    assert not torch.allclose(backward_warp(img, zero, "official"), img, atol=1e-3)
    # one pixel to the right and two down, converted to NDC, samples exactly that pixel
    px = torch.zeros(1, 2, 16, 16)
    px[:, 0], px[:, 1] = 1.0, 2.0
    shifted = backward_warp(img, pixels_to_ndc_flow(px, "centers"), "centers")
    assert torch.allclose(shifted[..., :-2, :-1], img[..., 2:, 1:], atol=1e-5)


def test_config_switches_warp_convention(official_fixtures: Path) -> None:
    fx = torch.load(official_fixtures / "generator_geom_disp.pt", weights_only=False)
    ckpt = checkpoint_from_official({"generator": fx["state_dict"]})
    legacy = ckpt.build_generator()
    ckpt.generator_config = GeneratorConfig.from_dict({**ckpt.generator_config.to_dict(), "warp_convention": "centers"})
    fixed = ckpt.build_generator()
    inp = fx["inputs"]
    with torch.no_grad():
        a = legacy(inp["img_s"], inp["mesh_flow_d2s"]).warp_img_s
        b = fixed(inp["img_s"], inp["mesh_flow_d2s"]).warp_img_s
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("scale", [0.5, 0.25, 0.125, 1 / 32])
@pytest.mark.parametrize("size", [(64, 64), (37, 50)])
def test_downsample_equals_full_blur_then_slicing(scale: float, size: tuple[int, int]) -> None:
    """The README's anti-alias recipe, literally: blur the whole map, then keep every stride-th sample."""
    from gdpw.model.layers import AntiAliasDownsample

    down = AntiAliasDownsample(3, scale)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    pad = down.weight.shape[-1] // 2  # the README's zero padding: half the (odd) kernel on every side
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    full = torch.nn.functional.conv2d(padded, down.weight, groups=3)
    assert full.shape[2:] == x.shape[2:]
    _close("downsample", down(x), full[:, :, :: down.stride, :: down.stride])
