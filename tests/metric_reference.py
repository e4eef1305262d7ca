"""The reference metric code's outputs on fixed inputs, for tests/test_eval.py.

``pytorch-fid`` imports torchvision, which must not be installed beside the project's torch, so
its outputs were made once in a throwaway environment and kept in ``tests/data/metric_reference.pt``:

    python3 -m venv /tmp/refenv && /tmp/refenv/bin/pip install torch==2.13.0 torchvision==0.28.0 pytorch-fid==0.3.0 scipy
    /tmp/refenv/bin/python tests/metric_reference.py tests/data/metric_reference.pt

pytorch-fid's InceptionV3 gets seeded random weights (``seeded_state``, the same in both
environments: torch's generator is the same on every machine), so no weights are downloaded.
"""

from __future__ import annotations

import sys

import torch

SEED = 20261202
N_IMAGES = 10


def seeded_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Deterministic weights for an InceptionV3 state dict with ``shapes`` (keys in sorted order)."""
    out: dict[str, torch.Tensor] = {}
    for i, key in enumerate(sorted(shapes)):
        shape = shapes[key]
        g = torch.Generator().manual_seed(SEED + i)
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith(("running_mean", "bn.bias")):
            out[key] = 0.1 * torch.randn(shape, generator=g)
        elif key.endswith("bn.weight"):
            out[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:  # conv and fc weights, He-scaled so activations keep their size through the network
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
            out[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    return out


def images() -> tuple[torch.Tensor, torch.Tensor]:
    """Two sets of uint8 images (N, 3, 64, 64): smooth random colour fields, the second set shifted in colour."""
    g = torch.Generator().manual_seed(SEED)
    base = torch.nn.functional.interpolate(torch.rand(2 * N_IMAGES, 3, 8, 8, generator=g), size=(64, 64), mode="bilinear")
    a, b = base[:N_IMAGES], (base[N_IMAGES:] * 0.7 + 0.2)
    return (a * 255).round().to(torch.uint8), (b * 255).round().to(torch.uint8)


def main(out: str) -> None:
    # torchvision 0.28's compiled detection ops do not load beside the local torch 2.13 CPU wheel; pytorch-fid
    # uses none of them (only the Python InceptionV3), so registering their fake kernels is skipped
    register_fake = torch.library.register_fake
    torch.library.register_fake = lambda op, *a, **k: (lambda fn: fn) if str(op).startswith("torchvision::") else register_fake(op, *a, **k)
    import numpy as np
    import pytorch_fid
    import pytorch_fid.inception as inception
    from pytorch_fid.fid_score import calculate_frechet_distance

    def fake_download(*args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        model = inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
        return seeded_state({k: tuple(v.shape) for k, v in model.state_dict().items()})

    inception.load_state_dict_from_url = fake_download
    net = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    a, b = images()
    with torch.no_grad():
        fa = net(a.float() / 255)[0].flatten(1)
        fb = net(b.float() / 255)[0].flatten(1)
    fa64, fb64 = fa.double().numpy(), fb.double().numpy()
    fid = calculate_frechet_distance(fa64.mean(0), np.cov(fa64, rowvar=False), fb64.mean(0), np.cov(fb64, rowvar=False))
    torch.save({"images_a": a, "images_b": b, "features_a": fa, "features_b": fb, "fid": float(fid),
                "versions": {"pytorch_fid": pytorch_fid.__version__, "torch": torch.__version__}}, out)
    print(f"wrote {out}: FID {fid:.6f}")


if __name__ == "__main__":
    main(sys.argv[1])
