"""Folding spectral norm and BatchNorm for inference keeps the outputs (within 1e-4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gdpw.model.checkpoint import checkpoint_from_official
from gdpw.model.fold import FoldedSpade, SplitConv2d, fold_for_inference


@pytest.mark.parametrize("guidance", ["neural_codes", "geom_disp", "both"])
def test_folded_generator_matches(official_fixtures: Path, guidance: str) -> None:
    fx = torch.load(official_fixtures / f"generator_{guidance}.pt", weights_only=False)
    gen = checkpoint_from_official({"generator": fx["state_dict"]}).build_generator()
    folded = fold_for_inference(gen)
    assert not any(hasattr(m, "weight_orig") for m in folded.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, FoldedSpade) for m in folded.modules()) == 2 * (fx["num_levels"] - 1)
    inp = fx["inputs"]
    args = (inp["img_s"], inp["mesh_flow_d2s"], inp["codes_s"], inp["codes_d"])
    # every conv above 4 KiB split into groups of output channels, as the CPU path does above 8 MiB
    split = fold_for_inference(gen, max_conv_bytes=4096)
    parts = [m for m in split.modules() if isinstance(m, SplitConv2d)]
    assert parts and all(len(m.parts) > 1 for m in parts)
    with torch.inference_mode():
        ref = gen(*args)
        out = folded(*args)
        cl = folded.to(memory_format=torch.channels_last)(args[0].contiguous(memory_format=torch.channels_last), *args[1:])
        cl_split = split.to(memory_format=torch.channels_last)(args[0].contiguous(memory_format=torch.channels_last), *args[1:])
    for res in (out, cl, cl_split):
        assert (res.rec_img_d - ref.rec_img_d).abs().max() <= 1e-4
        for lvl in ref.flows:
            assert (res.flows[lvl] - ref.flows[lvl]).abs().max() <= 1e-4
    # the original is untouched
    assert any(hasattr(m, "weight_orig") for m in gen.modules())


def test_source_encoding_is_reusable_across_frames(official_fixtures: Path) -> None:
    fx = torch.load(official_fixtures / "generator_both.pt", weights_only=False)
    gen = checkpoint_from_official({"generator": fx["state_dict"]}).build_generator()
    folded = fold_for_inference(gen)
    inp = fx["inputs"]
    img = inp["img_s"][:1].expand(2, -1, -1, -1)
    codes_s = inp["codes_s"][:1].expand(2, -1, -1, -1)
    with torch.inference_mode():
        full = gen(img, inp["mesh_flow_d2s"], codes_s, inp["codes_d"])
        once = gen.decode(gen.encode(inp["img_s"][:1], inp["codes_s"][:1]), inp["mesh_flow_d2s"], inp["codes_d"])
        fast = folded.decode(folded.encode(inp["img_s"][:1], inp["codes_s"][:1]), inp["mesh_flow_d2s"], inp["codes_d"])
    # the split itself: the same computation, up to rounding — convolution kernels round differently
    # at batch 1 and 2 (encoder outputs differ by ~1e-7 here) and the decoder amplifies that to ~5e-6
    assert torch.allclose(full.rec_img_d, once.rec_img_d, atol=1e-5)
    assert torch.allclose(full.flows["x1"], once.flows["x1"], atol=1e-5)
    # the folded network on the reused encoding, within the folding bound
    assert (fast.rec_img_d - full.rec_img_d).abs().max() <= 1e-4
    assert (fast.flows["x1"] - full.flows["x1"]).abs().max() <= 1e-4


def test_split_conv_equals_whole_conv() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(24, 100, 3, padding=1)
    split = SplitConv2d(conv, 32)
    assert [p.out_channels for p in split.parts] == [32, 32, 32, 4]
    x = torch.randn(2, 24, 9, 7)
    with torch.no_grad():
        assert torch.allclose(split(x), conv(x), atol=1e-6)


def test_warp_keeps_channels_last() -> None:
    from gdpw.model import backward_warp

    feat = torch.randn(1, 8, 6, 5).contiguous(memory_format=torch.channels_last)
    flow = 0.1 * torch.randn(1, 2, 6, 5)
    out = backward_warp(feat, flow)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, backward_warp(feat.contiguous(), flow))


def test_folding_keeps_the_device_and_dtype() -> None:
    """A model that does not live on the CPU in float32 folds where it lives (the meta device stands
    in for a GPU), with the CPU's wide-conv split too; in float64 the outputs agree to 1e-10."""
    from gdpw.model import Generator, GeneratorConfig
    from gdpw.model.fold import fold_for_inference

    cfg = GeneratorConfig(guidance="both", base_chns=8, max_chns=32, num_levels=3)
    with torch.device("meta"):
        meta = Generator(cfg).eval()
    for max_bytes in (None, 2048):
        folded = fold_for_inference(meta, max_bytes)
        assert {t.device.type for t in [*folded.parameters(), *folded.buffers()]} == {"meta"}
    torch.manual_seed(0)
    gen = Generator(cfg).eval().double()
    with torch.no_grad():
        gen(torch.rand(1, 3, 16, 16, dtype=torch.float64), 0.1 * torch.randn(1, 2, 16, 16, dtype=torch.float64),
            torch.rand(1, 16, 16, 16, dtype=torch.float64), torch.rand(1, 16, 16, 16, dtype=torch.float64))
    folded = fold_for_inference(gen, 2048)
    assert {p.dtype for p in folded.parameters()} == {torch.float64}
    g = torch.Generator().manual_seed(1)
    args = (torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64), 0.1 * torch.randn(2, 2, 16, 16, generator=g, dtype=torch.float64),
            torch.rand(2, 16, 16, 16, generator=g, dtype=torch.float64), torch.rand(2, 16, 16, 16, generator=g, dtype=torch.float64))
    with torch.no_grad():
        assert (folded(*args).rec_img_d - gen(*args).rec_img_d).abs().max() < 1e-10
