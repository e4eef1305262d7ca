"""The reference metric code's outputs on fixed inputs, for tests/test_eval.py.

``pytorch-fid``, ``lpips`` and ``face-alignment`` import torchvision or OpenCV, which must not be
installed beside the project's torch, so their outputs were made once in a throwaway environment
and kept in ``tests/data/metric_reference.pt``:

    python3 -m venv /tmp/refenv && /tmp/refenv/bin/pip install torch==2.13.0 torchvision==0.28.0 \
        pytorch-fid==0.3.0 lpips==0.1.4 scipy opencv-python-headless scikit-image numba
    /tmp/refenv/bin/pip install --no-deps face-alignment==1.5.0
    /tmp/refenv/bin/python tests/metric_reference.py tests/data/metric_reference.pt

Every network gets seeded random weights (``seeded_tensors``: pytorch-fid's InceptionV3,
LPIPS's trunks and linear layers, FAN; keyed by gdpw's module names; the same in both environments: torch's generator is the same on every machine), so no
weights are downloaded.
"""

from __future__ import annotations

import sys

import torch

SEED = 20261202
N_IMAGES = 10


def seeded_tensors(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Deterministic weights for any conv/BatchNorm network (keys in sorted order): He-scaled
    convs, BatchNorm near identity, positive LPIPS linear weights."""
    out: dict[str, torch.Tensor] = {}
    for i, key in enumerate(sorted(shapes)):
        shape = shapes[key]
        g = torch.Generator().manual_seed(seed + i)
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.startswith("lin"):
            out[key] = torch.rand(shape, generator=g)
        elif len(shape) == 1:  # biases, running means and BatchNorm scales
            out[key] = (1.0 if key.endswith("weight") else 0.0) + 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
            out[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    return out


def face_image() -> torch.Tensor:
    """(240, 200, 3) uint8: a smooth random colour field, FAN's test input."""
    g = torch.Generator().manual_seed(SEED + 1)
    img = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 5, generator=g), size=(240, 200), mode="bilinear")
    return (img[0].permute(1, 2, 0) * 255).round().to(torch.uint8)


FAN_BOXES = ((40.3, 52.8, 171.6, 201.2), (-30.5, 120.25, 150.0, 290.7))  # inside the image; over two borders
LPIPS_TRUNKS = ("alex", "vgg")


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
    from importlib.metadata import version

    import numpy as np
    import pytorch_fid.inception as inception
    from pytorch_fid.fid_score import calculate_frechet_distance

    def fake_download(*args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        model = inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
        return seeded_tensors({k: tuple(v.shape) for k, v in model.state_dict().items()}, SEED)

    inception.load_state_dict_from_url = fake_download
    net = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    a, b = images()
    with torch.no_grad():
        fa = net(a.float() / 255)[0].flatten(1)
        fb = net(b.float() / 255)[0].flatten(1)
    fa64, fb64 = fa.double().numpy(), fb.double().numpy()
    fid = calculate_frechet_distance(fa64.mean(0), np.cov(fa64, rowvar=False), fb64.mean(0), np.cov(fb64, rowvar=False))
    result = {"images_a": a, "images_b": b, "features_a": fa, "features_b": fb, "fid": float(fid),
              "versions": {p: version(p) for p in ("pytorch-fid", "lpips", "face-alignment", "torch", "torchvision")}}
    result.update(lpips_reference(a, b))
    result.update(fan_reference())
    torch.save(result, out)
    print(f"wrote {out}: FID {fid:.6f}, LPIPS {[round(float(result[f'lpips_{t}'][0]), 6) for t in LPIPS_TRUNKS]}")


def lpips_reference(a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    """The lpips package's distances on images a, b with seeded trunk and linear weights."""
    import lpips

    out: dict[str, torch.Tensor] = {}
    for k, trunk in enumerate(LPIPS_TRUNKS):
        net = lpips.LPIPS(pretrained=False, net=trunk, pnet_rand=True, verbose=False).eval()
        # the package's names -> gdpw's (torchvision's ``features.N`` for the trunk slices)
        names = {key: (f"features.{key.split('.')[2]}.{key.split('.')[3]}" if key.startswith("net.") else key)
                 for key in net.state_dict() if not key.startswith(("scaling_layer", "lins."))}  # lins.K aliases linK
        state = seeded_tensors({v: tuple(net.state_dict()[key].shape) for key, v in names.items()}, SEED + 1000 * (k + 1))
        net.load_state_dict({key: state[v] for key, v in names.items()}, strict=False)
        with torch.no_grad():
            out[f"lpips_{trunk}"] = net(a.float() / 255, b.float() / 255, normalize=True).flatten()
    return out


def fan_reference() -> dict[str, object]:
    """face-alignment's crop, 2D-FAN-4 (seeded weights) and heatmap decoding on ``face_image``."""
    import numpy as np
    from face_alignment.models import FAN
    from face_alignment.utils import crop, get_preds_fromhm

    net = FAN(4).eval()
    net.load_state_dict(seeded_tensors({k: tuple(v.shape) for k, v in net.state_dict().items()}, SEED + 5000))
    image = face_image().numpy()
    out: dict[str, object] = {"fan_image": torch.from_numpy(image)}
    for i, d in enumerate(FAN_BOXES):
        centre = np.array([d[2] - (d[2] - d[0]) / 2.0, d[3] - (d[3] - d[1]) / 2.0])
        centre[1] = centre[1] - (d[3] - d[1]) * 0.12
        scale = (d[2] - d[0] + d[3] - d[1]) / 195.0
        patch = crop(image, centre, scale)
        with torch.no_grad():
            heat = net(torch.from_numpy(patch.transpose(2, 0, 1).astype(np.float32) / 255.0)[None])[-1]
        pts, pts_img, _ = get_preds_fromhm(heat.numpy(), centre, scale)
        out[f"fan_crop_{i}"] = torch.from_numpy(patch)
        out[f"fan_points_{i}"] = torch.from_numpy(pts[0] * 4)
        out[f"fan_points_image_{i}"] = torch.from_numpy(pts_img[0])
        if i == 0:
            out["fan_heatmaps_0"] = heat[0]
    return out


if __name__ == "__main__":
    main(sys.argv[1])
