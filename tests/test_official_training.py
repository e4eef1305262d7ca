"""One training step of configs/paper.yaml's recipe against the official ``Trainer.step``, on every case
folder of ``../shared/fixtures/official_train/`` (its README states the conventions).

The case's networks go through the converter users run on released files; the guidance maps are
interpolated from the case's own rasterisation with gdpw's ``interpolate`` (so ``embeds`` get their
gradients as through nvdiffrast); the perceptual loss runs the case's VGG-19 weights. Then one
``TrainStep`` of the recipe that ``configs/paper.yaml`` names is compared term by term.

Bounds, from float32 (unit roundoff u = 2^-24 = 6e-8) and what this network does with it:
- The forward pass is not bit-identical across CPUs: oneDNN picks other convolution kernels
  (AVX2, AVX-512, AMX) and other summation orders, and the README measured that a change of
  memory layout alone moves BatchNorm's reductions by ~1e-7 and the outputs by ~1e-5. Loss
  terms are means over >= 10^4 values of such outputs, so they agree to a relative
  ``TERM_RTOL`` = 2^10 u = 6e-5 (the reconstruction terms agree to 2e-7 on this machine; a
  wrong convention, e.g. Gaussian instead of area downsampling or another D-call order, is 1e-3
  and up).
- Logits and features: absolute ``FEAT_ATOL`` = 2^10 u times the largest magnitude of the tensor.
- Gradients: the generator's are the least well conditioned: the bilinear warp's derivative jumps
  where a sample crosses a pixel boundary, and the flows differ by ~5e-7 across implementations.
  Measured on case_a: a one-ulp change of the input images moves the generator's gradients by
  5e-4 of the largest gradient of the network, and gdpw differs from the reference by 1e-3. The
  bound is ``GRAD_TOL_G`` = 8e-3 of that scale (plus 1e-3 of each value). The discriminator's
  gradients have no warp behind them: ``GRAD_TOL_D`` = 2^12 u (1.5e-5 measured). The loss terms
  and the discriminator's logits are the sharp checks of the objective.
- Parameters after Adam's first step move by u(g) = lr * g / (|g| + eps), that is by ~lr * sign(g),
  so a gradient that is only rounding noise (biases followed by BatchNorm have a true gradient of
  0) may move its parameter either way. Every parameter must equal p - u(g) for gdpw's own
  gradient, and differ from the reference's by exactly u(g_ref) - u(g), to float32 spacing.
- BatchNorm running statistics and spectral-norm vectors: relative ``TERM_RTOL``; counters exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from gdpw.backbones import VGG19Features
from gdpw.model.checkpoint import checkpoint_from_official
from gdpw.render.rasterizer import Fragments, interpolate
from gdpw.train import TrainConfig
from gdpw.train.losses import WeightDecay
from gdpw.train.step import TrainStep, build_objective

from .conftest import REPO, shared_cases

CASES = shared_cases("fixtures/official_train", "case_*")
U = 2.0**-24
TERM_RTOL = 2**10 * U
FEAT_ATOL = 2**10 * U
GRAD_TOL_G = 8e-3
GRAD_TOL_D = 2**12 * U

# official summary name -> gdpw term name (``group/term``); lists map to numbered terms
TERM_NAMES = {
    "fwd_gen/recon_loss/rec_dst/pix_loss": ["recon/pix"],
    **{f"fwd_gen/recon_loss/rec_dst/block_{k}_vgg_feature_loss": [f"recon/vgg_{k}"] for k in range(5)},
    "fwd_gen/recon_loss/rec_dst/feat_match_loss": [f"recon/feat_match_{i}" for i in range(4)],
    "fwd_gen/recon_loss/rec_dst/gan_loss_for_gen": ["recon/gan_g"],
    **{f"fwd_gen/warp_loss/block_{k}_vgg_feature_loss": [f"warp/vgg_{k}"] for k in range(5)},
    "fwd_gen/warp_loss/x1/feat_match_loss": [f"warp/feat_match_{i}" for i in range(4)],
    "fwd_gen/warp_loss/x1/gan_loss_for_gen": ["warp/gan_g"],
}
D_TERMS = {"discrim/recon/rec_dst/gan_loss_for_discrim": "d/recon", "discrim/warp/x1/gan_loss_for_discrim": "d/warp"}


def _load(case: Path, name: str) -> Any:
    return torch.load(case / f"{name}.pt", weights_only=False)


def _vgg(case: Path) -> VGG19Features:
    """The case's VGG-19: int8 weights times powers of two, split over three files."""
    vgg = VGG19Features()
    state = {}
    for part in sorted(case.glob("vgg19_part*.pt")):
        raw = torch.load(part, weights_only=False)
        for key, q in raw["q"].items():
            state[raw["torchvision_key"][key]] = q.float() * 2.0 ** -raw["exp"][key]
        if "mean" in raw:
            state["mean"], state["std"] = raw["mean"], raw["std"]
    vgg.load_state_dict(state)
    return vgg.eval()


def _fragments(rast: torch.Tensor) -> Fragments:
    """nvdiffrast's (u, v, z/w, triangle id + 1) as gdpw fragments: corner weights (u, v, 1 - u - v)."""
    b, h, w, _ = rast.shape
    flat = rast.reshape(-1, 4)
    tri = flat[:, 3].round().long()
    pix = torch.nonzero(tri > 0).squeeze(1)
    u, v = flat[pix, 0], flat[pix, 1]
    return Fragments(b, h, w, pix, tri[pix] - 1, torch.stack([u, v, 1 - u - v], 1), flat[pix, 2])


def _close(name: str, got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float = 0.0) -> None:
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    got, want = got.double(), want.double()
    both_nan = got.isnan() & want.isnan()  # the x1 Gaussian kernel buffer is NaN officially (sigma 0, never used)
    err = torch.where(both_nan, 0.0, (got - want).abs()).nan_to_num(nan=torch.inf)
    bound = atol + rtol * want.nan_to_num().abs()
    worst = int((err - bound).argmax())
    assert bool((err <= bound).all()), f"{name}: error {err.flatten()[worst]:.3g} > bound {bound.flatten()[worst]:.3g}"


@pytest.fixture(scope="module", params=CASES)
def step(request: pytest.FixtureRequest) -> dict[str, Any]:
    return run_step(request.param)


def run_step(case: Path) -> dict[str, Any]:
    """One step of the paper recipe on a case; what it computed, and the case's reference files."""
    inputs, before = _load(case, "step_inputs"), _load(case, "state_before")
    meta = inputs["meta"]
    official = meta["config"]
    ckpt = checkpoint_from_official({"generator": before["generator"], "discriminator": before["discriminator"]})
    gen, disc = ckpt.build_generator().train(), ckpt.build_discriminator().train()
    assert gen.cfg.guidance == meta["guidance"] and gen.cfg.num_levels == meta["num_levels"]

    paper = TrainConfig.from_yaml(REPO / "configs" / "paper.yaml")
    weights = official["TRAIN"]["LOSS_WEIGHTS"]
    lc = paper.loss
    assert (lc.l1, lc.perceptual, lc.feature_matching, lc.gan) == (weights["pix"], weights["vgg_feature"],
                                                                 weights["feat_match"], weights["GAN_gen"])
    assert lc.gan_mode == {"LS": "lsgan", "Hinge": "hinge"}[official["TRAIN"]["GAN_LOSS"]]
    assert lc.perceptual_levels == official["TRAIN"]["VGG_LOSS"]["NUM_PYRAMIDS"]
    oc = paper.optim
    opt_g = torch.optim.Adam(gen.parameters(), lr=oc.lr, betas=oc.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=oc.lr, betas=oc.betas)
    vgg = _vgg(case)
    train = TrainStep(build_objective(lc, gen, disc, vgg), disc, opt_g, opt_d, gen.cfg.warp_convention)

    calls: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
    disc.discs["x1"].register_forward_hook(lambda m, i, o: calls.append(([f.detach() for f in o[0]], [t.detach() for t in o[1]])))
    tri = inputs["mesh"]["tri"].long()
    rast_s, rast_d = _fragments(inputs["render"]["rast_s"]), _fragments(inputs["render"]["rast_d"])
    si = inputs["step_inputs"]
    codes: dict[str, torch.Tensor] = {}

    def forward():
        codes["s"], codes["d"] = interpolate(gen.embeds, tri, rast_s), interpolate(gen.embeds, tri, rast_d)
        geom = inputs["render"]["mesh_flow_d2s"] if gen.cfg.uses_geom_disp else None
        return gen(si["src_img"], geom, codes["s"] if gen.cfg.uses_codes else None, codes["d"] if gen.cfg.uses_codes else None)

    result = train(si["src_img"], si["dst_img"], forward)
    return {"case": case, "inputs": inputs, "result": result, "calls": calls, "codes": codes, "gen": gen, "disc": disc,
            "before": before, "lr": oc.lr, "vgg": vgg}


def test_guidance_maps_and_generator_outputs(step: dict[str, Any]) -> None:
    render, out, ref = step["inputs"]["render"], step["result"].out, _load(step["case"], "step_outputs")
    _close("codes_s", step["codes"]["s"], render["face_tem_s"], 4 * U)  # convex combinations of values in [0, 1)
    _close("codes_d", step["codes"]["d"], render["face_tem_d"], 4 * U)
    for level, flow in ref["flows"].items():
        _close(f"flows.{level}", out.flows[level], flow, FEAT_ATOL * flow.abs().max().item())
    _close("out_img", out.out_img, ref["out_img"], FEAT_ATOL)
    # the warped source: the flow's error times the image's slope (up to 1 per pixel) times W/2 pixels per NDC unit
    flow_err = (out.flows["x1"] - ref["flows"]["x1"]).abs().max().item()
    _close("warp_img_s", out.warp_img_s, ref["warp_img_s"], flow_err * out.warp_img_s.shape[-1] / 2 + FEAT_ATOL)


def test_every_loss_term_and_total(step: dict[str, Any]) -> None:
    ref = _load(step["case"], "losses")
    g = step["result"].g
    covered = set()
    for name, ours in TERM_NAMES.items():
        for want_w, want_u, key in zip(ref["g_terms_weighted"][name], ref["g_terms_unweighted"][name], ours):
            _close(f"{key} (weighted)", g.weighted[key], want_w, 0.0, TERM_RTOL)
            _close(f"{key} (unweighted)", g.unweighted[key], want_u, 0.0, TERM_RTOL)
            covered.add(key)
    assert covered == set(g.weighted), f"terms gdpw adds that the official code does not: {set(g.weighted) - covered}"
    _close("g_loss", g.total, ref["g_loss"], 0.0, TERM_RTOL)
    d = step["result"].d
    for name, key in D_TERMS.items():
        _close(key, d.weighted[key], ref["d_terms"][name][0], 0.0, TERM_RTOL)
    _close("d_loss", d.total, ref["d_loss"], 0.0, TERM_RTOL)
    # the regulariser's value (weight 0 in the recipe): the sum of squares of the pre-step 'weight' parameters
    before = checkpoint_from_official({"generator": step["before"]["generator"]}).build_generator()
    reg = WeightDecay(before, 1.0).terms(None)["l2"]  # type: ignore[arg-type]
    _close("reg_loss", reg, ref["g_terms_unweighted"]["regularization/reg_loss"][0], 0.0, TERM_RTOL)


def test_discriminator_calls_in_the_official_order(step: dict[str, Any]) -> None:
    ref = _load(step["case"], "losses")["d_calls"]
    feats = {c["call"]: c["feats"] for c in _load(step["case"], "d_feats")["calls"]}
    assert len(step["calls"]) == len(ref) == 8
    for (got_feats, got_logits), call in zip(step["calls"], ref):
        for k, (a, b) in enumerate(zip(got_logits, call["logits"])):
            _close(f"call {call['call']} ({call['input_name']}) logits[{k}]", a, b, FEAT_ATOL * max(1.0, b.abs().max().item()))
        assert [tuple(f.shape) for f in got_feats] == [tuple(s) for s in call["feats_shapes"]]
        for k, f in enumerate(feats.get(call["call"], [])):
            _close(f"call {call['call']} feats[{k}]", got_feats[k], f, FEAT_ATOL * max(1.0, f.abs().max().item()))


def _grads(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in net.named_parameters()}


def test_gradients(step: dict[str, Any]) -> None:
    ref = _load(step["case"], "grads")
    for net, key, tol in ((step["gen"], "generator_grad", GRAD_TOL_G), (step["disc"], "discriminator_grad", GRAD_TOL_D)):
        got = _grads(net)
        assert set(ref[key]) <= set(got), f"{key}: {set(ref[key]) - set(got)} are not gdpw's parameters"
        # parameters the official step gives no gradient (the unused coarsest shortcut layer's biases) are absent
        want = {k: (v if v is not None else torch.zeros(())) for k, v in ref[key].items()}
        scale = max(v.abs().max().item() for v in want.values())
        for k, g in got.items():
            _close(f"{key}.{k}", g, want.get(k, torch.zeros(())).expand_as(g), tol * scale, 1e-3)


def test_parameters_and_statistics_after_the_step(step: dict[str, Any]) -> None:
    after, before, grads = _load(step["case"], "state_after"), step["before"], _load(step["case"], "grads")
    lr = step["lr"]
    assert after["adam"]["g"]["betas"] == tuple(TrainConfig.from_yaml(REPO / "configs" / "paper.yaml").optim.betas)
    for net, key in ((step["gen"], "generator"), (step["disc"], "discriminator")):
        state = net.state_dict()
        params = dict(net.named_parameters())
        ref_grads = grads[f"{key}_grad"]
        assert sorted(state) == sorted(after[key]), key
        for name, want in after[key].items():
            got = state[name]
            label = f"{key}.{name}"
            if name.endswith("num_batches_tracked"):
                assert int(got) == int(want), label
            elif name in params:
                p0 = before[key][name]
                g = params[name].grad if params[name].grad is not None else torch.zeros_like(p0)
                # the update rule on gdpw's own gradient: Adam's first step, p - lr * g / (|g| + eps)
                _close(f"{label} (Adam step)", got, p0 - lr * g / (g.abs() + 1e-8), 4 * U * lr + 2 * U * p0.abs().max().item())
                ref_g = ref_grads[name] if ref_grads.get(name) is not None else torch.zeros_like(p0)
                # and the reference's parameter is Adam's step on the reference's gradient: the parameters differ by
                # exactly the difference of the two updates, which test_gradients bounds through the gradients
                expected = lr * ref_g / (ref_g.abs() + 1e-8) - lr * g / (g.abs() + 1e-8)
                _close(f"{label} (against the official update)", got - want, expected, 8 * U * (p0.abs().max().item() + lr))
            else:  # running statistics, spectral-norm u and v
                _close(label, got, want, TERM_RTOL * max(1.0, want.abs().max().item()))
