"""ONNX export of the generator: ``encode.onnx`` (the source half, once per video) and
``decode.onnx`` (guidance maps in, image out), both with a dynamic batch, from the folded network
(spectral norm and BatchNorm in the weights). Rendering stays outside, as in PyTorch: feed the
maps ``gdpw.render.render_guidance`` makes.

    encode.onnx  img_s (B, 3, H, W) [, codes_s (B, D, H, W)]      -> bottom, skip_x1, skip_x2, ...
    decode.onnx  bottom, skip_x1, ..., img_s [, geom_disp (B, 2, H, W)] [, codes_d (B, D, H, W)] -> image (B, 3, H, W)

``grid_sample`` needs opset 16 or newer (TensorRT builds engines from it:
``trtexec --onnx=decode.onnx --fp16``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .fold import fold_for_inference
from .generator import Generator, SourceEncoding

OPSET = 18


class _Encode(nn.Module):
    def __init__(self, gen: Generator) -> None:
        super().__init__()
        self.gen = gen
        self.skip_names = [f"x{s}" for s in gen.cfg.strides[:-1]]

    def forward(self, img_s: torch.Tensor, codes_s: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        enc = self.gen.encode(img_s, codes_s)
        return (enc.bottom, *[enc.skips[k] for k in self.skip_names])


class _Decode(nn.Module):
    def __init__(self, gen: Generator) -> None:
        super().__init__()
        self.gen = gen
        self.skip_names = [f"x{s}" for s in gen.cfg.strides[:-1]]

    def forward(self, bottom: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        n = len(self.skip_names)
        skips, img_s, guidance = rest[:n], rest[n], list(rest[n + 1 :])
        geom_disp = guidance.pop(0) if self.gen.cfg.uses_geom_disp else None
        codes_d = guidance.pop(0) if self.gen.cfg.uses_codes else None
        enc = SourceEncoding(img_s, bottom, dict(zip(self.skip_names, skips)))
        return self.gen.decode(enc, geom_disp, codes_d).rec_img_d


def example_inputs(gen: Generator, size: int, batch: int = 2) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Example inputs of the two graphs, by name."""
    cfg = gen.cfg
    g = torch.Generator().manual_seed(0)
    enc_in = {"img_s": torch.rand(batch, 3, size, size, generator=g)}
    if cfg.uses_codes:
        enc_in["codes_s"] = torch.rand(batch, cfg.embed_dim, size, size, generator=g)
    with torch.no_grad():
        outs = _Encode(gen)(*enc_in.values())
    dec_in = {"bottom": outs[0], **{f"skip_x{s}": t for s, t in zip(gen.cfg.strides[:-1], outs[1:])},
              "img_s": enc_in["img_s"]}
    if cfg.uses_geom_disp:
        dec_in["geom_disp"] = 0.05 * torch.randn(batch, 2, size, size, generator=g)
    if cfg.uses_codes:
        dec_in["codes_d"] = torch.rand(batch, cfg.embed_dim, size, size, generator=g)
    return enc_in, dec_in


def export_onnx(gen: Generator, folder: str | Path, size: int) -> tuple[Path, Path]:
    """Write ``encode.onnx`` and ``decode.onnx`` of the folded ``gen`` for ``size`` x ``size`` crops."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    folded = fold_for_inference(gen).eval()
    enc_in, dec_in = example_inputs(folded, size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    paths = folder / "encode.onnx", folder / "decode.onnx"
    encoded = list(dec_in)[: len(folded.cfg.strides)]  # bottom and the skips
    for module, inputs, path, outputs in ((_Encode(folded).eval(), enc_in, paths[0], encoded),
                                          (_Decode(folded).eval(), dec_in, paths[1], ["image"])):
        dims = [{0: batch} for _ in inputs]
        shapes = tuple(dims) if isinstance(module, _Encode) else (dims[0], tuple(dims[1:]))  # decode: (bottom, *rest)
        torch.onnx.export(module, tuple(inputs.values()), str(path), dynamo=True, opset_version=OPSET, input_names=list(inputs),
                          output_names=outputs, dynamic_shapes=shapes, verbose=False)
    return paths


def check_onnx(gen: Generator, folder: str | Path, size: int, batch: int = 3) -> float:
    """Max abs difference between onnxruntime (CPU) and PyTorch, encode then decode, on random inputs."""
    import onnxruntime as ort

    folder = Path(folder)
    folded = fold_for_inference(gen).eval()
    enc_in, dec_in = example_inputs(folded, size, batch)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    enc = ort.InferenceSession(str(folder / "encode.onnx"), opts, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(folder / "decode.onnx"), opts, providers=["CPUExecutionProvider"])
    enc_out = enc.run(None, {k: v.numpy() for k, v in enc_in.items()})
    feeds = dict(zip(list(dec_in)[: len(enc_out)], enc_out))
    feeds.update({k: v.numpy() for k, v in dec_in.items() if k not in feeds})
    image = dec.run(None, feeds)[0]
    with torch.no_grad():
        ref = _Decode(folded)(*dec_in.values())  # dec_in holds PyTorch's encoding of the same inputs
    return float(np.abs(image - ref.numpy()).max())
