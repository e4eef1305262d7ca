"""Render + decode of a batch of driving frames captured once as a CUDA graph, replayed per batch
(``Animator`` uses it on CUDA by default: ``AnimateConfig.cuda_graph``).

The guidance is rendered with the static rasteriser (``gdpw.render.rasterizer``: fixed shapes, no
host synchronisation), so the whole step is one graph: a replay launches it at the cost of a
single call. Shapes are fixed at capture: a shorter batch is padded with its last frame. The
rasteriser reports a candidate buffer too small for the mesh; that batch is then redone eagerly.
CUDA only. Not yet run on a GPU (none was lent when it was written): under ``cuda_graph="auto"`` a
failed capture falls back to the eager path.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from gdpw.model import GuidedGenerator, SourceEncoding
from gdpw.model.generator import GeneratorOutput


class GraphedDecode:
    def __init__(self, guided: GuidedGenerator, encoding: SourceEncoding, verts_s: torch.Tensor, batch: int,
                 autocast: AbstractContextManager[object], warmup: int = 3, cover_s: torch.Tensor | None = None) -> None:
        if verts_s.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.guided, self.encoding, self.verts_s, self.autocast, self.cover_s = guided, encoding, verts_s, autocast, cover_s
        self.size = (encoding.img_s.shape[2], encoding.img_s.shape[3])
        self.verts_d = verts_s[:1].expand(batch, -1, -1).clone()  # the graph's input buffer
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # allocations and lazy inits happen before capture
            for _ in range(warmup):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out, self.overflow = self._step()

    def _step(self) -> tuple[GeneratorOutput, torch.Tensor | None]:
        maps = self.guided.driving_guidance(self.verts_s, self.verts_d, self.size, check_overflow=False, cover_s=self.cover_s)
        with self.autocast:
            out = self.guided.decode_maps(self.encoding, maps)
        return out, maps.overflow

    def __call__(self, verts_d: torch.Tensor) -> GeneratorOutput:
        """The decoder's output for ``verts_d`` (n <= the captured batch); its maps are copies."""
        n, batch = verts_d.shape[0], self.verts_d.shape[0]
        if n < batch:
            verts_d = torch.cat([verts_d, verts_d[-1:].expand(batch - n, -1, -1)])
        self.verts_d.copy_(verts_d)
        self.graph.replay()
        out = self.out
        if self.overflow is not None and bool(self.overflow):  # rare: render this batch the default way
            maps = self.guided.driving_guidance(self.verts_s, self.verts_d, self.size, cover_s=self.cover_s)
            with self.autocast:
                out = self.guided.decode_maps(self.encoding, maps)
        return GeneratorOutput({}, {"x1": out.flows["x1"][:n].clone()}, out.warp_img_s[:n].clone(), out.out_img[:n].clone(),
                               out.alpha[:n].clone(), out.rec_img_d[:n].clone())
