"""Per-frame time of the full-size generator (released configuration, 256x256), side by side.

Baseline: a straightforward eager run of the network as the released code runs it (spectral norm
recomputed and BatchNorm applied on every call, the whole network per frame). Against it, each
line adding to the one before: the folded network (``gdpw.model.fold``), channels_last, on the CPU
the wide convs split into cache-sized groups of output channels (``SplitConv2d``), the source half
of the network (``Generator.encode``) computed once and only ``decode`` run per frame, as
``gdpw animate`` does for a video; and (``--compile``) the folded channels_last decoder under
torch.compile with freezing (inductor pre-packs the conv weights once); (``--onnx``) onnxruntime's
CPU execution of the exported ``decode.onnx`` (``gdpw export``) against the folded PyTorch decode.
Every variant is checked against the baseline's output (max abs difference <= 1e-4).
With ``--device cuda`` (or ``--pipeline``) it also times the full pipeline per frame (render and
decode, the source encoded once) at batch 1 and 16 in fp32, fp16 and bf16, eager, under a CUDA
graph (CUDA) and under torch.compile (``--compile``), each against fp32 eager.

    python benchmarks/inference.py [--guidance neural_codes] [--repeats 5] [--compile] [--device cpu] [--pipeline]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch._inductor.config

from gdpw.model import Generator, GeneratorConfig, SourceEncoding
from gdpw.model.fold import CPU_MAX_CONV_BYTES, fold_for_inference


def timed(fn: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats, out


def inputs(cfg: GeneratorConfig, batch: int, size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    img = torch.rand(batch, 3, size, size, generator=g)
    disp = 0.05 * torch.randn(batch, 2, size, size, generator=g)
    codes = torch.rand(batch, cfg.embed_dim, size, size, generator=g)
    return tuple(t.to(device) for t in (img, disp, codes, codes))


def conditioned_generator(cfg: GeneratorConfig, device: torch.device) -> Generator:
    """A random generator in eval mode whose spectral norms were conditioned by power iterations
    on small inputs (sigma > 0, as training leaves them) and whose BatchNorms hold non-trivial
    statistics, as trained weights have."""
    torch.manual_seed(0)
    base = Generator(cfg).to(device)
    with torch.no_grad():
        small = inputs(cfg, 1, 64, device)
        for _ in range(8):
            base(*small)
        base.eval()
        for m in base.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return base


def generator_speed(args: argparse.Namespace, device: torch.device) -> None:
    cfg = GeneratorConfig(guidance=args.guidance)
    base = conditioned_generator(cfg, device)
    x = inputs(cfg, 1, args.size, device)
    n_params = sum(p.numel() for p in base.parameters())
    print(f"generator {cfg.guidance}: {n_params / 1e6:.1f}M parameters, {args.size}x{args.size}, batch 1, "
          f"{torch.get_num_threads()} threads, device {device}")

    cpu = device.type == "cpu"
    with torch.inference_mode():
        t_base, ref = timed(lambda: base(*x).rec_img_d, args.repeats, device)
        print(f"{'eager, spectral norm + BatchNorm (released way)':<50} {t_base * 1000:8.1f} ms/frame  1.00x")
        folded = fold_for_inference(base)
        variants: list[tuple[str, Callable[[], torch.Tensor]]] = [("folded", lambda: folded(*x).rec_img_d)]
        folded_cl = fold_for_inference(base).to(memory_format=torch.channels_last)
        x_cl = (x[0].contiguous(memory_format=torch.channels_last),) + x[1:]
        variants.append(("+ channels_last", lambda: folded_cl(*x_cl).rec_img_d))
        fast = folded_cl
        if cpu:
            fast = fold_for_inference(base, CPU_MAX_CONV_BYTES).to(memory_format=torch.channels_last)
            variants.append(("+ wide convs split (CPU)", lambda: fast(*x_cl).rec_img_d))
        encoding = fast.encode(x_cl[0], x_cl[2])
        variants.append(("+ source encoded once per video",
                         lambda: fast.decode(encoding, x_cl[1], x_cl[3]).rec_img_d))
        if args.compile:
            # freezing lets inductor pre-pack the conv weights for oneDNN once, instead of per call
            compiled = torch.compile(_Decoder(folded_cl))
            with torch._inductor.config.patch(freezing=True):
                start = time.perf_counter()
                enc_cl = folded_cl.encode(x_cl[0], x_cl[2])
                compiled(enc_cl.bottom, enc_cl.skips, enc_cl.img_s, x_cl[1], x_cl[3])
                print(f"(torch.compile with freezing: {time.perf_counter() - start:.0f} s to build)")
                variants.append(("folded + channels_last + source once + torch.compile",
                                 lambda: compiled(enc_cl.bottom, enc_cl.skips, enc_cl.img_s, x_cl[1], x_cl[3])))
        best = t_base
        for name, fn in variants:
            t, out = timed(fn, args.repeats, device)
            err = (out - ref).abs().max().item()
            ok = "ok" if err <= 1e-4 else "MISMATCH"
            print(f"{name:<50} {t * 1000:8.1f} ms/frame  {t_base / t:.2f}x   max|diff| {err:.1e} {ok}")
            best = min(best, t)
        print(f"best speed-up over the released way: {t_base / best:.2f}x")
    if args.onnx:
        onnx_speed(args, base, fast, encoding, x_cl, ref, t_base)


def onnx_speed(args: argparse.Namespace, base: Generator, fast: Generator, encoding: SourceEncoding,
               x_cl: tuple[torch.Tensor, ...], ref: torch.Tensor, t_base: float) -> None:
    """onnxruntime's CPU execution of decode.onnx against the folded PyTorch decode, same inputs."""
    import tempfile

    import onnxruntime as ort

    from gdpw.model.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        _, decode_path = export_onnx(base.cpu(), tmp, args.size)
        print(f"(ONNX export: {time.perf_counter() - start:.0f} s)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(str(decode_path), opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        tensors = [encoding.bottom, *[encoding.skips[f"x{s}"] for s in base.cfg.strides[:-1]], x_cl[0]]
        tensors += [t for t, used in ((x_cl[1], base.cfg.uses_geom_disp), (x_cl[3], base.cfg.uses_codes)) if used]
        feeds = {n: t.contiguous().cpu().numpy() for n, t in zip(names, tensors)}
        with torch.inference_mode():
            t_torch, _ = timed(lambda: fast.decode(encoding, x_cl[1], x_cl[3]).rec_img_d, args.repeats, torch.device("cpu"))
        t_ort, out = timed(lambda: torch.from_numpy(sess.run(None, feeds)[0]), args.repeats, torch.device("cpu"))
        print(f"{'onnxruntime CPU, decode.onnx (source encoded once)':<50} {t_ort * 1000:8.1f} ms/frame  {t_base / t_ort:.2f}x   "
              f"max|diff| {(out - ref.cpu()).abs().max().item():.1e}; folded PyTorch decode {t_torch * 1000:.1f} ms/frame "
              f"({t_torch / t_ort:.2f}x onnxruntime's speed)")


class _Decoder(torch.nn.Module):
    """``Generator.decode`` on plain tensors, for torch.compile."""

    def __init__(self, gen: Generator) -> None:
        super().__init__()
        self.gen = gen

    def forward(self, bottom: torch.Tensor, skips: dict[str, torch.Tensor], img_s: torch.Tensor,
                geom_disp: torch.Tensor, codes_d: torch.Tensor) -> torch.Tensor:
        return self.gen.decode(SourceEncoding(img_s, bottom, skips), geom_disp, codes_d).rec_img_d


def pipeline_speed(args: argparse.Namespace, device: torch.device) -> None:
    """Render and decode per frame, the source encoded once, at batch 1 and 16 in each precision:
    eager, under a CUDA graph (CUDA) and under torch.compile (``--compile``), each with its max
    difference to fp32 eager. Rendering is the static path on CUDA (no host synchronisation)."""
    from gdpw.flame import FLAME, FlameParams, orthographic
    from gdpw.model import GuidedGenerator
    from gdpw.pipeline.graphed import GraphedDecode

    cuda = device.type == "cuda"
    flame = FLAME().to(device)
    cfg = GeneratorConfig(guidance=args.guidance, num_verts=flame.num_verts)
    max_conv_bytes = CPU_MAX_CONV_BYTES if device.type == "cpu" else None
    gen = fold_for_inference(conditioned_generator(cfg, device), max_conv_bytes).to(memory_format=torch.channels_last)
    guided = GuidedGenerator(gen, flame.faces, antialias=args.antialias, static=cuda)
    size = (args.size, args.size)
    print(f"pipeline: render ({'static' if cuda else 'default'} path, antialias {args.antialias}) + decode, "
          f"the source encoded once")
    for batch in (1, 16):
        cam = torch.tensor([[6.0, 0.0, 0.02]], device=device).expand(batch, 3)
        pose = torch.zeros(batch, 3, device=device)
        pose[:, 1] = torch.linspace(-0.4, 0.4, batch, device=device)
        vs = orthographic(flame(FlameParams(global_pose=torch.zeros(batch, 3, device=device))).vertices, cam)
        vd = orthographic(flame(FlameParams(global_pose=pose)).vertices, cam)
        img = torch.rand(1, 3, args.size, args.size, device=device).contiguous(memory_format=torch.channels_last)
        ref: torch.Tensor | None = None
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            name = str(dtype).split(".")[-1]
            autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
            with torch.inference_mode():
                with autocast:
                    encoding = guided.encode(img, vs[:1])
                t_render, maps = timed(lambda: guided.driving_guidance(vs[:1], vd, size), args.repeats, device)

                def decode(maps=maps, encoding=encoding, autocast=autocast) -> torch.Tensor:  # type: ignore[no-untyped-def]
                    with autocast:
                        return guided.network.decode(encoding, maps.geom_disp, maps.codes_d).rec_img_d.float()

                t_decode, out = timed(decode, args.repeats, device)
                ref = out if ref is None else ref
                rows = [("eager", t_render + t_decode, out)]
                if cuda:
                    graphed = GraphedDecode(guided, encoding, vs[:1], batch, autocast)
                    t_graph, out_graph = timed(lambda: graphed(vd).rec_img_d.float(), args.repeats, device)
                    rows.append(("CUDA graph (render + decode)", t_graph, out_graph))
                if args.compile:
                    compiled = torch.compile(decode, mode="reduce-overhead" if cuda else "default")
                    t_comp, out_comp = timed(compiled, args.repeats, device)
                    rows.append(("torch.compile decode", t_render + t_comp, out_comp))
            print(f"batch {batch:2d} {name:>8}: render {1000 * t_render / batch:7.2f} ms/frame, "
                  f"decode {1000 * t_decode / batch:7.2f} ms/frame")
            for variant, t, res in rows:
                print(f"    {variant:<30} {1000 * t / batch:7.2f} ms/frame {batch / t:9.1f} frames/s   "
                      f"max|diff| to fp32 eager {(res - ref).abs().max().item():.1e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--guidance", default="neural_codes", choices=["neural_codes", "geom_disp", "both"])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to build on a CPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--pipeline", action="store_true", help="also time render + generate on the CPU (always on CUDA)")
    p.add_argument("--antialias", action="store_true", help="render antialiased guidance, as released checkpoints need")
    p.add_argument("--onnx", action="store_true", help="also time onnxruntime (CPU) on the exported decode.onnx")
    args = p.parse_args()
    device = torch.device(args.device)
    generator_speed(args, device)
    if device.type == "cuda" or args.pipeline:
        pipeline_speed(args, device)


if __name__ == "__main__":
    main()
