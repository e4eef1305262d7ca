"""The shared pieces: typed configs and their flags, typed errors, FlameSequence, GuidedGenerator."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from gdpw.common.config import add_arguments, apply_overrides, field_help, from_args, from_dict
from gdpw.common.errors import ConfigError, GdpwError, NoFaceError
from gdpw.flame import FLAME, FlameSequence, orthographic
from gdpw.model import Generator, GeneratorConfig, GuidedGenerator
from gdpw.pipeline import AnimateConfig
from gdpw.render import render_guidance
from gdpw.train import TrainConfig


def test_literals_are_checked_when_loaded_and_when_built() -> None:
    with pytest.raises(ConfigError, match="gan_mode must be one of"):
        TrainConfig.from_dict({"loss": {"gan_mode": "wgan"}})
    with pytest.raises(ConfigError, match="engine must be one of"):
        TrainConfig.from_dict({"engine": "deepspeed"})
    with pytest.raises(ConfigError, match="fitter must be one of"):
        from_dict(AnimateConfig, {"track": {"fitter": "fan"}})
    with pytest.raises(ConfigError, match="precision must be one of"):
        TrainConfig(precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="optim.lr must be a number"):
        TrainConfig.from_dict({"optim": {"lr": "fast"}})
    # YAML 1.1 reads 2e-4 (no dot) as a string: a number field takes it as the number it spells
    assert TrainConfig.from_dict(apply_overrides({}, ["optim.lr=2e-4"])).optim.lr == 2e-4
    cfg = TrainConfig.from_dict({"optim": {"betas": [0.0, 0.99], "milestones": [10]}, "data": {"roots": ["a", "b"]}})
    assert cfg.optim.betas == (0.0, 0.99) and cfg.optim.milestones == (10,) and cfg.data.roots == ("a", "b")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_flags_come_from_the_dataclasses() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, AnimateConfig)
    args = parser.parse_args(["--flame", "f.pkl", "--landmark-embedding", "e.npy", "--no-paste-back", "--fitter", "deca",
                              "--fit.iterations", "7", "--fit.smooth-min-cutoff", "0", "--batch-size", "3"])
    cfg = from_args(AnimateConfig, args)
    assert cfg.head.flame == "f.pkl" and cfg.head.landmark_embedding == "e.npy"
    assert cfg.paste_back is False and cfg.batch_size == 3 and cfg.track.fitter == "deca"
    assert cfg.track.fit.iterations == 7 and cfg.track.fit.smooth_min_cutoff == 0.0
    # what is not given keeps the dataclass's default, which lives in one place
    assert cfg.track.crop_scale == AnimateConfig().track.crop_scale and cfg.device == "cpu"
    assert from_args(AnimateConfig, parser.parse_args([])) == AnimateConfig()
    with pytest.raises(SystemExit):
        parser.parse_args(["--fitter", "fan"])
    help_text = parser.format_help()
    assert "--fit.track-window" in help_text and "video frames fitted together" in help_text
    assert field_help(TrainConfig)["image_size"].startswith("crop size")


def test_main_keeps_the_traceback_of_internal_errors(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from gdpw.cli import main as cli

    def broken(args: argparse.Namespace) -> None:
        raise ValueError("an internal bug")

    def no_face(args: argparse.Namespace) -> None:
        raise NoFaceError("no face found in the source image")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    inspect = parser._subparsers._group_actions[0].choices["inspect"]  # type: ignore[union-attr]
    inspect.set_defaults(func=broken)
    with pytest.raises(ValueError, match="an internal bug"):
        cli.main(["inspect", "x.pt"])
    inspect.set_defaults(func=no_face)
    assert cli.main(["inspect", "x.pt"]) == 2
    assert capsys.readouterr().err.strip() == "gdpw inspect: error: no face found in the source image"
    assert issubclass(NoFaceError, GdpwError)


def test_flame_sequence_select_cat_move_and_files(tmp_path: Path) -> None:
    flame = FLAME()
    g = torch.Generator().manual_seed(0)
    seq = FlameSequence(torch.randn(flame.n_shape, generator=g), torch.randn(5, flame.n_expression, generator=g),
                        0.2 * torch.randn(5, 3, generator=g), 0.1 * torch.randn(5, 3, generator=g),
                        0.1 * torch.randn(5, 6, generator=g), torch.tensor([[6.0, 0.0, 0.02]]).repeat(5, 1))
    assert len(seq) == 5 and seq.neck_pose.shape == (5, 3) and not seq.neck_pose.any()
    two = seq.select([1, 3])
    assert torch.equal(two.jaw_pose, seq.jaw_pose[[1, 3]]) and torch.equal(two.shape, seq.shape)
    joined = FlameSequence.cat([seq.select(slice(0, 2)), seq.select(slice(2, 5))])
    assert all(torch.equal(getattr(joined, k), getattr(seq, k)) for k in ("expression", "global_pose", "camera"))
    np.savez(tmp_path / "fit.npz", **seq.to_numpy())
    back = FlameSequence.from_numpy(np.load(tmp_path / "fit.npz"))
    assert torch.equal(back.expression, seq.expression) and torch.equal(back.camera, seq.camera)
    per_frame_shape = {**seq.to_numpy(), "shape": np.repeat(seq.shape.numpy()[None], 5, 0)}  # older shards
    assert torch.equal(FlameSequence.from_numpy(per_frame_shape).shape, seq.shape)
    verts = seq.image_vertices(flame, [2])
    assert torch.allclose(verts, orthographic(flame(seq.params([2])).vertices, seq.camera[[2]]))
    with pytest.raises(ValueError, match="global_pose must be"):
        seq.replace(global_pose=torch.zeros(5, 2))


def test_guided_generator_renders_what_the_bare_generator_is_given() -> None:
    flame = FLAME()
    cfg = GeneratorConfig(guidance="both", base_chns=4, max_chns=8, num_levels=3, num_verts=flame.num_verts)
    torch.manual_seed(0)
    gen = Generator(cfg).eval()
    guided = GuidedGenerator(gen, flame.faces)
    cam = torch.tensor([[6.0, 0.0, 0.02]])
    pose = torch.tensor([[0.0, 0.3, 0.0], [0.1, -0.2, 0.0]])
    verts_s = orthographic(flame.v_template[None].expand(2, -1, -1), cam.expand(2, 3))
    driving = FlameSequence(torch.zeros(flame.n_shape), torch.zeros(2, flame.n_expression), pose, torch.zeros(2, 3),
                            torch.zeros(2, 6), cam.expand(2, 3))
    with torch.no_grad():
        verts_d = driving.image_vertices(flame)
        img = torch.rand(2, 3, 32, 32)
        pat = render_guidance(verts_s, verts_d, flame.faces, (32, 32), gen.embeds)
        ref = gen(img, pat.geom_disp, pat.codes_s, pat.codes_d).rec_img_d
        assert torch.equal(guided(img, verts_s, verts_d).rec_img_d, ref)
        enc = guided.encode(img[:1], verts_s[:1])
        assert torch.allclose(guided.decode(enc, verts_s[:1], verts_d).rec_img_d[0], ref[0], atol=1e-5)
