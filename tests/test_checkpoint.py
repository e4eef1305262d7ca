"""Released-checkpoint conversion: guidance inference, key and shape checks, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gdpw.cli.main import main
from gdpw.model.checkpoint import (
    CheckpointError,
    checkpoint_from_official,
    convert_official,
    load_checkpoint,
)

from .helpers import official_layout, write_official_checkpoint


@pytest.mark.parametrize("guidance", ["neural_codes", "geom_disp", "both"])
def test_manifest_shaped_state_infers_full_size_config(official_fixtures: Path, guidance: str) -> None:
    layout = official_layout(official_fixtures, f"generator/{guidance}")
    # Shapes alone decide the config: one zero expanded to each shape keeps this test light.
    state = {k: torch.zeros(()).expand(v) for k, v in layout.items()}
    ckpt = checkpoint_from_official({"generator": state})
    cfg = ckpt.generator_config
    assert cfg.guidance == guidance
    assert (cfg.base_chns, cfg.num_levels, cfg.max_chns, cfg.embed_dim) == (64, 6, 1024, 16)
    assert "mesh_renderer.tri" not in ckpt.generator


def test_convert_and_forward_256_from_cli(official_fixtures: Path, tmp_path: Path, capsys) -> None:
    src = write_official_checkpoint(official_fixtures, "neural_codes", tmp_path / "released.pth")
    dst = tmp_path / "gdpw.pt"
    assert main(["convert", str(src), "-o", str(dst)]) == 0
    assert "guidance=neural_codes" in capsys.readouterr().out
    ckpt = load_checkpoint(dst)
    assert ckpt.global_step == 270000 and ckpt.discriminator is not None
    gen = ckpt.build_generator()
    assert sum(p.numel() for p in gen.parameters()) == 141811710
    assert main(["inspect", str(dst), "--forward", "256"]) == 0
    out = capsys.readouterr().out
    assert "output (1, 3, 256, 256), finite=True" in out
    # the converted weights are the released ones
    raw = torch.load(src, weights_only=True)["generator"]
    for key in ("embeds", "up_layers.x1_out.weight", "down_layers.x32.conv.weight_orig"):
        assert torch.equal(ckpt.generator[key], raw[key])


def _small_official(fixtures: Path) -> dict:
    fx = torch.load(fixtures / "generator_both.pt", weights_only=False)
    return {"generator": dict(fx["state_dict"]), "global_step": 5}


def test_missing_key_is_named(official_fixtures: Path) -> None:
    raw = _small_official(official_fixtures)
    del raw["generator"]["up_layers.x4_spade.conv2.weight_u"]
    with pytest.raises(CheckpointError, match=r"missing key 'up_layers\.x4_spade\.conv2\.weight_u'"):
        checkpoint_from_official(raw)


def test_wrong_shape_is_named(official_fixtures: Path) -> None:
    raw = _small_official(official_fixtures)
    raw["generator"]["shortcut_layers.x8.norm.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"'shortcut_layers\.x8\.norm\.weight' has shape \(3,\)"):
        checkpoint_from_official(raw)


def test_unexpected_key_is_named(official_fixtures: Path) -> None:
    raw = _small_official(official_fixtures)
    raw["generator"]["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unexpected key 'extra\.weight'"):
        checkpoint_from_official(raw)


def test_guidance_mismatch_is_refused(official_fixtures: Path) -> None:
    raw = _small_official(official_fixtures)
    del raw["generator"]["embeds"]  # 18 SPADE channels but no codes: neither guidance fits
    with pytest.raises(CheckpointError, match="cannot tell the guidance"):
        checkpoint_from_official(raw)


def test_truncated_file_gives_one_line_error(official_fixtures: Path, tmp_path: Path, capsys) -> None:
    good = tmp_path / "good.pth"
    torch.save(_small_official(official_fixtures), good)
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(bad)
    assert main(["convert", str(bad), "-o", str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gdpw convert: error:") and "\n" not in err
    assert not (tmp_path / "out.pt").exists()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pth")


def test_roundtrip_keeps_config_and_weights(official_fixtures: Path, tmp_path: Path) -> None:
    src = tmp_path / "small.pth"
    torch.save(_small_official(official_fixtures), src)
    ckpt = convert_official(src, tmp_path / "small_gdpw.pt")
    again = load_checkpoint(tmp_path / "small_gdpw.pt")
    assert again.generator_config == ckpt.generator_config
    assert again.global_step == 5
    for k, v in ckpt.generator.items():
        assert torch.equal(again.generator[k], v) or torch.allclose(again.generator[k], v, equal_nan=True)
