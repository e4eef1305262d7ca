"""The progressive-warping generator of GDPW.

The network takes tensors only: the source image, the rendered geometric displacement field and
the rendered neural codes (see ``gdpw.render``). Rasterisation happens outside it; the learnable
per-vertex codes live here as ``embeds`` (the released checkpoints' key) so that the renderer can
read them and training updates them.

Module names follow the released checkpoints so that their state dicts load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import GeneratorConfig
from .layers import AntiAliasDownsample, ConvBlock, SpadeResBlock
from .warp import WarpConvention, backward_warp, pixels_to_ndc_flow


@dataclass
class GeneratorOutput:
    """What one generator pass returns; all maps are (B, C, H, W).

    ``mesh_flows`` and ``flows`` are keyed by level name (``"x1"``, ``"x2"``, ...): the
    displacement field resized to each level, and the flow predicted at the next coarser level
    and upsampled to this one (NDC offsets, driving-to-source).
    """

    mesh_flows: dict[str, torch.Tensor]
    flows: dict[str, torch.Tensor]
    warp_img_s: torch.Tensor
    out_img: torch.Tensor
    alpha: torch.Tensor
    rec_img_d: torch.Tensor


@dataclass
class SourceEncoding:
    """What the network computes from the source alone (see ``Generator.encode``).

    A batch-1 encoding can drive a batch of frames: ``decode`` broadcasts it.
    """

    img_s: torch.Tensor  # (B, 3, H, W)
    bottom: torch.Tensor  # coarsest encoder features
    skips: dict[str, torch.Tensor]  # skip branch (shortcut layer output) per finer level


def composite_at(out: GeneratorOutput, source: torch.Tensor, convention: WarpConvention = "official",
                 transfer: float = 1.0) -> torch.Tensor:
    """An alpha-blending generator's result at the resolution of ``source`` (B or 1, 3, R, R), the
    source crop sampled finer than the network saw it: the generated image, alpha and final flow
    upsampled to R, the source warped at its own resolution. Where alpha is low (the warped source
    shows) the result keeps the photo's detail instead of the network's resolution; where it is high
    ``transfer`` times the warped source's detail finer than the network's pixels (the warped source
    minus itself resampled through the network's size) is added to the generated image, so a painted
    region keeps the photo's texture (0: the generated image alone)."""
    size = source.shape[-2:]

    def up(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t.float(), size=size, mode="bilinear", align_corners=False)

    alpha = up(out.alpha)
    source = source.expand(alpha.shape[0], -1, -1, -1).float()
    warped = backward_warp(source, up(out.flows["x1"]), convention)
    result = up(out.out_img) * alpha + warped * (1 - alpha)
    if transfer == 0 or size == out.out_img.shape[-2:]:
        return result
    coarse = up(F.interpolate(warped, size=out.out_img.shape[-2:], mode="bilinear", align_corners=False, antialias=True))
    return result + transfer * alpha * (warped - coarse)


def restrict_paint(out: GeneratorOutput, paint: torch.Tensor) -> GeneratorOutput:
    """An alpha-blending generator's output with its alpha multiplied by ``paint`` (B, 1, H, W) in
    [0, 1] (``gdpw.render.paint_mask``): where ``paint`` is 0 the warped source shows."""
    alpha = out.alpha * paint.to(out.alpha.dtype)
    rec = out.out_img * alpha + out.warp_img_s * (1 - alpha)
    return GeneratorOutput(out.mesh_flows, out.flows, out.warp_img_s, out.out_img, alpha, rec)


def level(stride: int) -> str:
    return f"x{stride}"


class Generator(nn.Module):
    """Encoder + decoder of progressive warping modules (SPADE block, flow head, upsampling)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        nf = cfg.channels
        sn = cfg.spectral_norm
        mod_chns = cfg.guidance_channels

        self.down_layers = nn.ModuleDict()
        self.shortcut_layers = nn.ModuleDict()
        self.downsamples = nn.ModuleDict()
        for s in cfg.strides:
            if s == 1:
                self.down_layers[level(s)] = ConvBlock(cfg.input_channels, nf(s), spectral_norm=sn)
            else:
                self.down_layers[level(s)] = ConvBlock(nf(s // 2), nf(s), resample="down", spectral_norm=sn)
            self.shortcut_layers[level(s)] = ConvBlock(nf(s), nf(s), spectral_norm=sn)
            self.downsamples[level(s)] = AntiAliasDownsample(mod_chns, 1.0 / s)

        self.up_layers = nn.ModuleDict()
        for s in reversed(cfg.strides):
            if s == 1:
                self.up_layers["x1_out"] = nn.Conv2d(nf(1) * 2, 4, kernel_size=3, padding=1)
            else:
                self.up_layers[f"x{s}_spade"] = SpadeResBlock(nf(s) * 2, nf(s), mod_chns, nf(s), sn)
                self.up_layers[f"x{s}_flow"] = nn.Conv2d(nf(s), 2, kernel_size=3, padding=1)
                self.up_layers[f"x{s}_up"] = ConvBlock(nf(s), nf(s // 2), resample="up", spectral_norm=sn)

        if cfg.uses_codes:
            self.embeds = nn.Parameter(torch.rand(cfg.num_verts, cfg.embed_dim))

    def modulation(self, geom_disp: torch.Tensor | None, codes_d: torch.Tensor | None) -> torch.Tensor:
        """The SPADE guidance map at full resolution: driving codes, then displacement field."""
        parts = []
        if self.cfg.uses_codes:
            parts.append(_require(codes_d, "codes_d", self.cfg))
        if self.cfg.uses_geom_disp:
            parts.append(_require(geom_disp, "geom_disp", self.cfg))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def encode(self, img_s: torch.Tensor, codes_s: torch.Tensor | None = None) -> SourceEncoding:
        """The source half of the network: encoder features and the skip branches.

        It depends on the source alone, so an animation computes it once and reuses it for
        every driving frame (``decode``).
        """
        cfg = self.cfg
        _check_size(img_s, cfg)
        out = torch.cat([img_s, _require(codes_s, "codes_s", cfg)], dim=1) if cfg.uses_codes else img_s
        feats: dict[str, torch.Tensor] = {}
        for name, layer in self.down_layers.items():
            out = layer(out)
            feats[name] = out
        coarsest = level(cfg.strides[-1])
        skips = {name: self.shortcut_layers[name](f) for name, f in feats.items() if name != coarsest}
        return SourceEncoding(img_s, feats[coarsest], skips)

    def decode(
        self, source: SourceEncoding, geom_disp: torch.Tensor | None = None, codes_d: torch.Tensor | None = None
    ) -> GeneratorOutput:
        """The driving half: progressive warping of the source encoding under the driving guidance."""
        cfg = self.cfg
        conv = cfg.warp_convention
        img_s = source.img_s
        b = geom_disp.shape[0] if geom_disp is not None else codes_d.shape[0] if codes_d is not None else img_s.shape[0]
        expand = (lambda t: t.expand(b, *t.shape[1:])) if img_s.shape[0] == 1 and b > 1 else (lambda t: t)

        # guidance pyramid; the displacement field per level (zeros when it is not an input)
        mod = self.modulation(geom_disp, codes_d)
        mods: dict[str, torch.Tensor] = {}
        mesh_flows: dict[str, torch.Tensor] = {}
        flow_start = cfg.embed_dim if cfg.guidance == "both" else 0
        for name, down in self.downsamples.items():
            mods[name] = down(mod)
            if cfg.uses_geom_disp:
                mesh_flows[name] = mods[name][:, flow_start : flow_start + 2]
            else:
                mesh_flows[name] = torch.zeros_like(mods[name][:, :2])
        if geom_disp is not None:  # reported at full resolution whatever the guidance
            mesh_flows["x1"] = geom_disp

        # bottleneck: warp the coarsest features by the displacement field
        coarsest = level(cfg.strides[-1])
        out = expand(source.bottom)
        out = torch.cat([out, backward_warp(out, mesh_flows[coarsest], conv)], dim=1)

        # decoder: progressive warping modules
        flow: torch.Tensor | None = None
        flows: dict[str, torch.Tensor] = {}
        for s in reversed(cfg.strides):
            name = level(s)
            if flow is not None:
                flows[name] = flow
                shortcut = backward_warp(expand(source.skips[name]), flow, conv)
                out = torch.cat([out, shortcut], dim=1)
            if s == 1:
                out = self.up_layers["x1_out"](out)
                break
            out = self.up_layers[f"{name}_spade"](out, mods[name])
            flow_px = F.interpolate(self.up_layers[f"{name}_flow"](out), scale_factor=2.0, mode="bilinear")
            flow = pixels_to_ndc_flow(flow_px, conv)
            if cfg.flow_prior:  # a correction to the mesh's own displacement at the next level
                flow = flow + mesh_flows[level(s // 2)]
            out = self.up_layers[f"{name}_up"](out)

        assert flow is not None
        out_img = torch.sigmoid(out[:, :3])
        alpha = torch.sigmoid(out[:, 3:4])
        warp_img_s = backward_warp(expand(img_s), flow, conv)
        rec_img_d = out_img * alpha + warp_img_s * (1 - alpha) if cfg.alpha_blend else out_img
        return GeneratorOutput(mesh_flows, flows, warp_img_s, out_img, alpha, rec_img_d)

    def forward(
        self,
        img_s: torch.Tensor,
        geom_disp: torch.Tensor | None = None,
        codes_s: torch.Tensor | None = None,
        codes_d: torch.Tensor | None = None,
    ) -> GeneratorOutput:
        """Animate ``img_s`` (B, 3, H, W) in [0, 1]: ``decode(encode(img_s, codes_s), geom_disp, codes_d)``.

        geom_disp: (B, 2, H, W) source-minus-driving NDC offsets rendered on the driving mesh,
            needed for guidance ``geom_disp`` and ``both``.
        codes_s, codes_d: (B, embed_dim, H, W) neural codes rendered on the source and driving
            meshes, needed for guidance ``neural_codes`` and ``both``.
        H and W must be divisible by 2 ** (num_levels - 1).
        """
        return self.decode(self.encode(img_s, codes_s), geom_disp, codes_d)


def _require(x: torch.Tensor | None, name: str, cfg: GeneratorConfig) -> torch.Tensor:
    if x is None:
        raise ValueError(f"guidance {cfg.guidance!r} needs {name}, got None")
    return x


def _check_size(img: torch.Tensor, cfg: GeneratorConfig) -> None:
    if img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"img_s must be (B, 3, H, W), got {tuple(img.shape)}")
    m = 2 ** (cfg.num_levels - 1)
    if img.shape[2] % m or img.shape[3] % m or img.shape[2] < 2 * m or img.shape[3] < 2 * m:
        raise ValueError(
            f"image size {tuple(img.shape[2:])} must be a multiple of {m} and at least {2 * m} "
            f"for {cfg.num_levels} levels"
        )
