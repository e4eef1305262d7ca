"""Checkpoints: the released GDPW files and gdpw's own format.

A released checkpoint is a ``torch.save`` of ``{generator, discriminator, global_step}`` with the
official key names. gdpw's own format adds the typed configs, so a file is self-describing::

    {"format": "gdpw", "version": 1, "generator_config": {...}, "generator": state_dict,
     "discriminator_config": {...} | None, "discriminator": state_dict | None, "global_step": int,
     "image_size": int, "recipe": "gdpw" | "official", "antialias": bool}

``recipe`` and ``antialias`` say how the training data were prepared (crop recipe, antialiased
guidance), so inference prepares inputs the same way; released checkpoints are the official recipe
with antialiasing, and gdpw files written before these keys existed read as gdpw's recipe without.

``load_checkpoint`` reads either; ``convert_official`` turns a released file into gdpw's.
Every key and shape is checked against the network the config describes, and the first bad key
is named in the error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gdpw.common.crop import CropRecipe
from gdpw.common.errors import CheckpointError
from gdpw.common.files import atomic_write

from .config import FLOW_CHANNELS, DiscriminatorConfig, GeneratorConfig
from .discriminator import MultiScaleDiscriminator
from .generator import Generator

FORMAT = "gdpw"
VERSION = 1
# Keys of the released generator that gdpw does not keep: the FLAME faces live in gdpw.flame.
OFFICIAL_DROPPED_KEYS = ("mesh_renderer.tri",)


@dataclass
class Checkpoint:
    generator_config: GeneratorConfig
    generator: dict[str, torch.Tensor]
    discriminator_config: DiscriminatorConfig | None = None
    discriminator: dict[str, torch.Tensor] | None = None
    global_step: int = 0
    image_size: int = 256  # the crop size the generator was trained at (released: 256)
    recipe: CropRecipe = "gdpw"  # how its training faces were cropped (released: the official recipe)
    antialias: bool = False  # whether its guidance maps were antialiased (released: yes, nvdiffrast)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "generator_config": self.generator_config.to_dict(),
            "generator": self.generator,
            "discriminator_config": None if self.discriminator_config is None else self.discriminator_config.to_dict(),
            "discriminator": self.discriminator,
            "global_step": self.global_step,
            "image_size": self.image_size,
            "recipe": self.recipe,
            "antialias": self.antialias,
        }

    def build_generator(self) -> Generator:
        net = Generator(self.generator_config)
        load_state(net, self.generator, "generator")
        return net.eval()

    def build_discriminator(self) -> MultiScaleDiscriminator:
        if self.discriminator_config is None or self.discriminator is None:
            raise CheckpointError("this checkpoint holds no discriminator")
        net = MultiScaleDiscriminator(self.discriminator_config)
        load_state(net, self.discriminator, "discriminator")
        return net.eval()


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t.shape) if torch.is_tensor(t) else ()


def check_state_dict(net: nn.Module, state: Mapping[str, Any], what: str) -> None:
    """Raise ``CheckpointError`` naming the first key that is missing, unexpected, mis-shaped or
    not finite (NaN or infinite weights would give a garbage result, not an error)."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{what} is a {type(state).__name__}, not a state dict")
    expected = net.state_dict()
    # weights and normalisation statistics; not every buffer: the released checkpoints hold NaN in
    # the unused blur kernel of the full-resolution AntiAliasDownsample (a Gaussian of sigma 0)
    learned = {k for k, _ in net.named_parameters()} | {k for k in expected if k.endswith(("running_mean", "running_var"))}
    for key, ref in expected.items():
        if key not in state:
            raise CheckpointError(f"{what}: missing key {key!r} (expected shape {tuple(ref.shape)})")
        if not torch.is_tensor(state[key]):
            raise CheckpointError(f"{what}: key {key!r} is a {type(state[key]).__name__}, not a tensor")
        if _shape(state[key]) != tuple(ref.shape):
            raise CheckpointError(
                f"{what}: key {key!r} has shape {_shape(state[key])}, expected {tuple(ref.shape)}"
            )
        if key in learned and not bool(torch.isfinite(state[key]).all()):
            raise CheckpointError(f"{what}: key {key!r} holds NaN or infinite values")
    for key in state:
        if key not in expected:
            raise CheckpointError(f"{what}: unexpected key {key!r}")


def load_state(net: nn.Module, state: Mapping[str, Any], what: str) -> None:
    """``net.load_state_dict(state)`` after ``check_state_dict`` (a ``CheckpointError`` naming the first bad key)."""
    check_state_dict(net, state, what)
    net.load_state_dict(state)


def _levels(state: Mapping[str, Any], pattern: str) -> list[int]:
    found = sorted({int(m.group(1)) for k in state if (m := re.fullmatch(pattern, k))})
    return found


def infer_generator_config(state: Mapping[str, Any], **overrides: Any) -> GeneratorConfig:
    """Guidance, depth and widths of a generator, read off its state dict's shapes."""
    try:
        strides = _levels(state, r"down_layers\.x(\d+)\.conv\.weight_orig")
        if not strides:
            raise CheckpointError("generator: no 'down_layers.x1.conv.weight_orig' key; not a GDPW generator")
        chns = {s: _shape(state[f"down_layers.x{s}.conv.weight_orig"])[0] for s in strides}
        in_chns = _shape(state["down_layers.x1.conv.weight_orig"])[1]
        coarse = strides[-1]
        mod_chns = _shape(state[f"up_layers.x{coarse}_spade.spade1.shared_conv.0.weight_orig"])[1]
    except KeyError as err:
        raise CheckpointError(f"generator: missing key {err.args[0]!r}") from None
    has_codes = "embeds" in state
    embed_dim = _shape(state["embeds"])[1] if has_codes else in_chns - 3 if in_chns > 3 else 16
    if has_codes and mod_chns == embed_dim + FLOW_CHANNELS:
        guidance = "both"
    elif has_codes and mod_chns == embed_dim:
        guidance = "neural_codes"
    elif not has_codes and mod_chns == FLOW_CHANNELS:
        guidance = "geom_disp"
    else:
        raise CheckpointError(
            f"generator: cannot tell the guidance from {mod_chns} SPADE input channels "
            f"({'with' if has_codes else 'without'} 'embeds')"
        )
    # widths: channels(s) = min(max_chns, max(int(base * 0.5 * s), 16)); find the base that fits
    shrink = 0.5
    candidates = sorted({round(c / (s * shrink)) for s, c in chns.items() if c > 16} or {16})
    num_verts = _shape(state["embeds"])[0] if has_codes else 5023
    for base in candidates:
        cfg = GeneratorConfig(
            guidance=guidance,  # type: ignore[arg-type]
            base_chns=base,
            shrink_ratio=shrink,
            max_chns=max(chns.values()),
            num_levels=len(strides),
            embed_dim=embed_dim,
            num_verts=num_verts,
        )
        if all(cfg.channels(s) == c for s, c in chns.items()):
            return GeneratorConfig.from_dict({**cfg.to_dict(), **overrides})
    raise CheckpointError(f"generator: channel widths {list(chns.values())} fit no GDPW configuration")


def infer_discriminator_config(state: Mapping[str, Any]) -> DiscriminatorConfig:
    scales = _levels(state, r"discs\.x(\d+)\.layers\.0\.conv\.weight_orig")
    if not scales:
        raise CheckpointError("discriminator: no 'discs.x1.layers.0.conv.weight_orig' key; not a GDPW discriminator")
    s = scales[0]
    blocks = _levels(state, rf"discs\.x{s}\.layers\.(\d+)\.conv\.weight_orig")
    first = _shape(state[f"discs.x{s}.layers.0.conv.weight_orig"])
    last = _shape(state[f"discs.x{s}.layers.{blocks[-1]}.conv.weight_orig"])
    return DiscriminatorConfig(
        scales=tuple(scales), base_chns=first[0], max_chns=last[0], num_blocks=len(blocks), in_chns=first[1]
    )


def _torch_load(path: str | os.PathLike[str], allow_pickle: bool) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as err:  # torch raises many types for corrupt files
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = "" if allow_pickle or "weights_only" not in str(err) else " (re-run with --allow-pickle if you trust it)"
        raise CheckpointError(f"{path}: not a readable checkpoint: {first_line[:200]}{hint}") from None


def checkpoint_from_official(raw: Mapping[str, Any], **generator_overrides: Any) -> Checkpoint:
    """A released ``{generator, discriminator, global_step}`` dict, checked key by key."""
    if "generator" not in raw:
        raise CheckpointError("not a released GDPW checkpoint: no 'generator' entry")
    gen_state = {k: v for k, v in raw["generator"].items() if k not in OFFICIAL_DROPPED_KEYS}
    gen_cfg = infer_generator_config(gen_state, **generator_overrides)
    check_state_dict(Generator(gen_cfg), gen_state, "generator")
    disc_cfg = disc_state = None
    if raw.get("discriminator"):
        disc_state = dict(raw["discriminator"])
        disc_cfg = infer_discriminator_config(disc_state)
        check_state_dict(MultiScaleDiscriminator(disc_cfg), disc_state, "discriminator")
    step = raw.get("global_step", 0)
    return Checkpoint(gen_cfg, gen_state, disc_cfg, disc_state, int(step) if step is not None else 0,
                      recipe="official", antialias=True)


def checkpoint_from_gdpw(raw: Mapping[str, Any]) -> Checkpoint:
    if raw.get("version") != VERSION:
        raise CheckpointError(f"gdpw checkpoint version {raw.get('version')!r} is not supported (expected {VERSION})")
    try:
        gen_cfg = GeneratorConfig.from_dict(raw["generator_config"])
        disc_cfg = None
        if raw.get("discriminator_config") is not None:
            disc_cfg = DiscriminatorConfig.from_dict(raw["discriminator_config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"gdpw checkpoint has a bad config: {err}") from None
    recipe = raw.get("recipe", "gdpw")
    if recipe not in ("gdpw", "official"):
        raise CheckpointError(f"gdpw checkpoint has an unknown crop recipe {recipe!r}")
    ckpt = Checkpoint(gen_cfg, raw["generator"], disc_cfg, raw.get("discriminator"), int(raw.get("global_step", 0)),
                      int(raw.get("image_size", 256)), recipe, bool(raw.get("antialias", False)))
    check_state_dict(Generator(gen_cfg), ckpt.generator, "generator")
    if disc_cfg is not None and ckpt.discriminator is not None:
        check_state_dict(MultiScaleDiscriminator(disc_cfg), ckpt.discriminator, "discriminator")
    return ckpt


def load_checkpoint(path: str | os.PathLike[str], allow_pickle: bool = False) -> Checkpoint:
    """Read a gdpw or a released checkpoint, whichever ``path`` holds."""
    raw = _torch_load(path, allow_pickle)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: holds a {type(raw).__name__}, not a checkpoint dict")
    if raw.get("format") == FORMAT:
        return checkpoint_from_gdpw(raw)
    return checkpoint_from_official(raw)


def save_checkpoint(ckpt: Checkpoint, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> None:
    """Write atomically. ``extra`` entries (a trainer's state, say) are stored beside the checkpoint's own."""
    with atomic_write(path) as fh:
        torch.save({**ckpt.to_dict(), **(extra or {})}, fh)


def convert_official(src: str | os.PathLike[str], dst: str | os.PathLike[str], allow_pickle: bool = False) -> Checkpoint:
    """Check a released checkpoint and write it in gdpw's format."""
    raw = _torch_load(src, allow_pickle)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{src}: holds a {type(raw).__name__}, not a checkpoint dict")
    ckpt = checkpoint_from_official(raw)
    save_checkpoint(ckpt, dst)
    return ckpt
