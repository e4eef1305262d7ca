"""A generator together with the mesh it is guided by: image-space vertices in, images out.

``Generator`` takes tensors only (image and rendered guidance maps), as the released network
does. ``GuidedGenerator`` renders those maps from source and driving vertices with the
generator's own per-vertex codes, so the animator, the trainer, evaluation and the benchmarks
all run one piece of code:

    guided = GuidedGenerator(generator, flame.faces)
    out = guided(img_s, verts_s, verts_d)                       # training, evaluation
    enc = guided.encode(img_s, verts_s)                         # animation: once per video
    out = guided.decode(enc, verts_s, verts_d)                  # ... then per batch of frames
"""

from __future__ import annotations

import torch
from torch import nn

from gdpw.render import DrivingMaps, GuidancePatterns, rasterize, render_driving, render_guidance, render_source_codes

from .config import GeneratorConfig
from .generator import Generator, GeneratorOutput, SourceEncoding, restrict_paint


class GuidedGenerator:
    """``generator`` (plain, folded or wrapped for distributed training) plus the mesh ``faces`` (F, 3);
    ``antialias``: render the guidance with silhouette antialiasing, as the released models were trained;
    ``static``: render with fixed shapes and no host synchronisation (CUDA graphs; the same maps);
    ``paint_stretch`` > 0 (alpha-blending generators, at inference): ``decode`` lets the network
    paint only where the warped source has nothing to show (``gdpw.render.paint_mask``)."""

    def __init__(self, generator: nn.Module, faces: torch.Tensor, antialias: bool = False, static: bool = False,
                 paint_stretch: float = 0.0) -> None:
        self.generator = generator
        self.faces = faces
        self.antialias = antialias
        self.static = static
        self.paint_stretch = paint_stretch if self.cfg.alpha_blend else 0.0

    @property
    def network(self) -> Generator:
        """The generator inside a DDP / Accelerate wrapper, if any."""
        return getattr(self.generator, "module", self.generator)

    @property
    def cfg(self) -> GeneratorConfig:
        return self.network.cfg

    @property
    def embeds(self) -> torch.Tensor | None:
        """The per-vertex codes the guidance needs, or None."""
        return self.network.embeds if self.cfg.uses_codes else None

    def guidance(self, verts_s: torch.Tensor, verts_d: torch.Tensor, size: tuple[int, int]) -> GuidancePatterns:
        """Both guidance patterns of a batch, rendered in float32 whatever autocast says."""
        with torch.autocast(verts_d.device.type, enabled=False):
            return render_guidance(verts_s.float(), verts_d.float(), self.faces, size, self.embeds, antialias=self.antialias)

    def __call__(self, img_s: torch.Tensor, verts_s: torch.Tensor, verts_d: torch.Tensor) -> GeneratorOutput:
        """Animate ``img_s`` (B, 3, H, W) into the driving meshes; vertices are (B, V, 3)."""
        pat = self.guidance(verts_s, verts_d, (img_s.shape[2], img_s.shape[3]))
        return self.generator(img_s, pat.geom_disp, pat.codes_s, pat.codes_d)

    def encode(self, img_s: torch.Tensor, verts_s: torch.Tensor) -> SourceEncoding:
        """The source half (once per video): ``img_s`` (1, 3, H, W), ``verts_s`` (1, V, 3)."""
        codes_s = None
        if self.embeds is not None:
            codes_s, _ = render_source_codes(verts_s, self.faces, (img_s.shape[2], img_s.shape[3]), self.embeds,
                                             antialias=self.antialias)  # once per video: the default path
        return self.network.encode(img_s, codes_s)

    def source_coverage(self, verts_s: torch.Tensor, size: tuple[int, int]) -> torch.Tensor | None:
        """The source meshes' coverage (B, 1, H, W) that the paint mask needs, once per video; None
        without ``paint_stretch``."""
        if self.paint_stretch <= 0:
            return None
        return rasterize(verts_s, self.faces, size).mask()

    def driving_guidance(self, verts_s: torch.Tensor, verts_d: torch.Tensor, size: tuple[int, int],
                         check_overflow: bool = True, cover_s: torch.Tensor | None = None) -> DrivingMaps:
        """What ``decode`` needs per frame: the displacement field, the driving codes (or None) and,
        with ``paint_stretch``, the paint mask (``cover_s``: ``source_coverage``, else rendered here).

        With ``static`` rendering a candidate buffer too small for the mesh is caught here and the
        batch rendered again the default way, unless ``check_overflow`` is off (inside a CUDA
        graph, where the caller checks ``overflow`` after the replay).
        """
        verts_s = verts_s.expand(verts_d.shape[0], -1, -1)
        maps = render_driving(verts_s, verts_d, self.faces, size, self.embeds, antialias=self.antialias, static=self.static,
                              paint_stretch=self.paint_stretch, cover_s=cover_s)
        if check_overflow and maps.overflow is not None and bool(maps.overflow):
            maps = render_driving(verts_s, verts_d, self.faces, size, self.embeds, antialias=self.antialias,
                                  paint_stretch=self.paint_stretch, cover_s=cover_s)
        return maps

    def decode_maps(self, source: SourceEncoding, maps: DrivingMaps) -> GeneratorOutput:
        """The decoder on an encoded source and ``driving_guidance``'s maps, its painting restricted
        to ``maps.paint`` when there is one."""
        out = self.network.decode(source, maps.geom_disp, maps.codes_d)
        return out if maps.paint is None else restrict_paint(out, maps.paint)

    def decode(self, source: SourceEncoding, verts_s: torch.Tensor, verts_d: torch.Tensor) -> GeneratorOutput:
        """Frames of the driving meshes ``verts_d`` (B, V, 3) from an encoded source (``verts_s`` (1 or B, V, 3))."""
        return self.decode_maps(source, self.driving_guidance(verts_s, verts_d, (source.img_s.shape[2], source.img_s.shape[3])))
