"""Synthetic talking heads, the dataset format, the official layout and the pair sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gdpw.data import (
    DatasetError,
    GdpwClipSource,
    OfficialClipSource,
    PairDataset,
    PairSamplerConfig,
    SynthConfig,
    flip_pair,
    mirror_map,
    read_index,
    render_clip,
    write_synth_dataset,
)
from gdpw.flame import FLAME, orthographic
from gdpw.render import rasterize

from .conftest import shared_cases

TINY = SynthConfig(num_identities=4, clips_per_identity=2, frames_per_clip=6, size=32, heldout_identities=1, seed=3)


@pytest.fixture(scope="module")
def flame() -> FLAME:
    return FLAME()


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory, flame: FLAME) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synth_dataset(root, TINY, flame, progress=False)
    return root


def test_synth_is_deterministic_and_varied(flame: FLAME) -> None:
    a = render_clip(flame, TINY, 0, 0)
    b = render_clip(flame, TINY, 0, 0)
    c = render_clip(flame, TINY, 1, 0)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.verts, b.verts)
    assert a.images.shape == (6, 32, 32, 3) and a.verts.shape == (6, 5023, 3)
    assert np.abs(a.images.astype(int) - c.images.astype(int)).mean() > 10  # another identity looks different
    assert np.abs(np.diff(a.verts, axis=0)).max() > 1e-3  # the head moves
    assert a.params.shape.ndim == 1 and len(a.params) == 6  # one identity per clip, every frame's motion


def test_synth_vertices_match_flame_and_hair_is_off_mesh(flame: FLAME) -> None:
    clip = render_clip(flame, TINY, 2, 1)
    verts = orthographic(flame(clip.params.params()).vertices, clip.params.camera)
    assert torch.allclose(verts, torch.as_tensor(clip.verts), atol=1e-5)
    # the head mask of the FLAME mesh does not cover everything that differs from the background
    mask = rasterize(verts[:1], flame.faces, (32, 32)).mask()[0, 0].numpy() > 0
    assert mask.mean() > 0.1 and mask.mean() < 0.9


def test_synth_mouth_opens_with_the_jaw(flame: FLAME) -> None:
    """Closed lips show no mouth interior; an opened jaw shows the dark inside and teeth between the
    lips, inside the head's silhouette (what the generator must learn to paint for a real jawOpen)."""
    cfg = SynthConfig(frames_per_clip=3, size=128, supersample=1)
    params = {k: np.zeros((3, n)) for k, n in (("shape", flame.n_shape), ("expression", flame.n_expression),
                                                ("global_pose", 3), ("neck_pose", 3), ("jaw_pose", 3), ("eye_pose", 6))}
    params["jaw_pose"][:, 0] = [0.0, 0.15, 0.3]
    camera = np.tile([6.0, 0.0, 0.02], (3, 1))
    clip = render_clip(flame, cfg, 3, 0, ({k: v.copy() for k, v in params.items()}, camera))
    head = rasterize(torch.as_tensor(clip.verts), flame.faces, (128, 128)).mask()[:, 0].numpy() > 0
    img = clip.images.astype(float)
    luma = img.mean(-1)
    dark = (luma < 60) & (img[..., 0] > img[..., 2]) & head  # the reddish inside of the mouth
    teeth = (luma > 130) & (np.ptp(img, axis=-1) < 35) & head  # light and unsaturated (skin and lips are saturated)
    lower = np.zeros_like(head)
    lower[:, 64:] = True  # below the image centre: the mouth, not the eyes' sclera
    counts = [(int((dark[t] & lower[t]).sum()), int((teeth[t] & lower[t]).sum())) for t in range(3)]
    assert counts[0][1] == 0  # closed: no teeth
    assert counts[0][0] < counts[1][0] < counts[2][0] and counts[2][0] > counts[0][0] + 40  # the opening grows with the jaw
    assert counts[2][1] > 5  # teeth show


def test_synth_gaze_amplitude_scales_the_eye_rotation(flame: FLAME) -> None:
    from dataclasses import replace

    from gdpw.data.synth import make_motion

    eyes = {g: make_motion(flame, replace(TINY, gaze=g), 1, 0)[0]["eye_pose"] for g in (0.0, 0.15, 0.3)}
    assert np.abs(eyes[0.0]).max() == 0 and np.abs(eyes[0.15]).max() > 0.01
    np.testing.assert_allclose(eyes[0.3], 2 * eyes[0.15])


def test_dataset_roundtrip_and_splits(tiny_dataset: Path) -> None:
    index, clips = read_index(tiny_dataset)
    assert index["image_size"] == 32 and len(clips) == 8
    assert {c.split for c in clips if c.identity == "id0003"} == {"test"}
    assert {c.split for c in clips if c.identity != "id0003"} == {"train"}
    src = GdpwClipSource([tiny_dataset], split="test")
    images, verts = src.frames(src.clips()[0], [0, 5])
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8 and verts.shape == (2, 5023, 3)


def test_rewriting_resumes_without_rendering_again(tiny_dataset: Path, flame: FLAME, capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import replace

    from gdpw.cli.main import main

    shard = tiny_dataset / "clips" / "id0000_c00.npz"
    before = shard.stat().st_mtime_ns
    write_synth_dataset(tiny_dataset, TINY, flame, progress=False)
    assert shard.stat().st_mtime_ns == before
    # another config's clips are not mixed in: the folder is refused with a one-line error, untouched
    with pytest.raises(DatasetError, match=r"another synth config \(size 32 -> 48, gaze 0.15 -> 0.3\)"):
        write_synth_dataset(tiny_dataset, replace(TINY, size=48, gaze=0.3), flame, progress=False)
    assert main(["synth", "-o", str(tiny_dataset), "--size", "48", "--identities", "4", "--heldout", "1"]) != 0
    assert "another synth config" in capsys.readouterr().err
    assert shard.stat().st_mtime_ns == before and read_index(tiny_dataset)[0]["image_size"] == 32
    # a malformed record is refused the same way, not with a JSON traceback
    record = tiny_dataset / "synth.json"
    kept = record.read_text()
    try:
        record.write_text("{not json")
        with pytest.raises(DatasetError, match="synth.json: malformed"):
            write_synth_dataset(tiny_dataset, TINY, flame, progress=False)
    finally:
        record.write_text(kept)
    assert shard.stat().st_mtime_ns == before


def test_pairs_are_deterministic_balanced_and_from_one_clip(tiny_dataset: Path) -> None:
    ds = PairDataset(GdpwClipSource([tiny_dataset], split="train"), length=300, seed=1)
    a, b = ds[17], ds[17]
    assert torch.equal(a["img_s"], b["img_s"]) and torch.equal(a["verts_d"], b["verts_d"])
    assert not torch.equal(a["img_s"], a["img_d"])
    # as the official sampler: every pass visits each identity once, in an order that changes between passes
    n = len(ds.identities)
    passes = [[ds.identity(p * n + i) for i in range(n)] for p in range(12)]
    assert all(sorted(order) == ds.identities for order in passes)
    assert len({tuple(order) for order in passes}) > 1


def test_flip_uses_the_mirror_map(tiny_dataset: Path, flame: FLAME) -> None:
    mirror = mirror_map(flame.v_template)
    assert torch.equal(mirror[mirror], torch.arange(flame.num_verts))
    src = GdpwClipSource([tiny_dataset], split="train")
    plain = PairDataset(src, 10, seed=2)
    flipped = PairDataset(src, 10, seed=2, aug=PairSamplerConfig(flip_prob=1.0, jitter=0, hue=0), mirror=mirror)
    a, b = plain[4], flipped[4]
    assert torch.equal(b["img_s"], a["img_s"].flip(-1))
    # the flipped mesh covers exactly the flipped pixels
    ma = rasterize(a["verts_s"][None], flame.faces, (32, 32)).mask()
    mb = rasterize(b["verts_s"][None], flame.faces, (32, 32)).mask()
    assert (ma.flip(-1) != mb).float().mean() < 0.01
    # vertices keep their meaning: the subject's left eye stays on the image right of the right eye,
    # as in any face (a flip without the mirror map would swap them)
    left_eye, right_eye = flame.lbs_weights[:, 3] > 0.5, flame.lbs_weights[:, 4] > 0.5
    for sample in (a, b):
        assert sample["verts_s"][left_eye, 0].mean() > sample["verts_s"][right_eye, 0].mean()


def test_colour_jitter_is_torchvisions_with_one_draw_per_pair(tiny_dataset: Path) -> None:
    from gdpw.data import ColorJitter

    img = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    unit = [("brightness", 1.0), ("contrast", 1.0), ("saturation", 1.0), ("hue", 0.0)]
    assert (ColorJitter.apply(img, unit) - img).abs().max() < 1e-6  # HSV round trip
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 0.8
    green = ColorJitter.apply(red, [("hue", 1 / 3)])
    assert torch.allclose(green[:, 1], torch.full((1, 2, 2), 0.8), atol=1e-6) and green[:, [0, 2]].abs().max() < 1e-6
    assert ColorJitter.apply(img, [("brightness", 2.0)]).max() <= 1
    grey = ColorJitter.apply(img, [("saturation", 0.0)])
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    # contrast blends each image with its own mean grey, so a pair jittered together = each jittered alike
    ops = ColorJitter().draw(np.random.default_rng(3))
    assert sorted(name for name, _ in ops) == ["brightness", "contrast", "hue", "saturation"]
    assert all(0.9 <= f <= 1.1 if name != "hue" else -0.1 <= f <= 0.1 for name, f in ops)
    together = ColorJitter.apply(img, ops)
    assert torch.allclose(together, torch.cat([ColorJitter.apply(img[i : i + 1], ops) for i in range(2)]))
    src = GdpwClipSource([tiny_dataset], split="train")
    j, p = PairDataset(src, 10, seed=5, aug=PairSamplerConfig(flip_prob=0, jitter=0.3, hue=0.05))[3], PairDataset(src, 10, seed=5)[3]
    assert not torch.allclose(j["img_s"], p["img_s"])


@pytest.mark.parametrize("case", shared_cases("fixtures/official_train", "case_*"))
def test_flip_equals_the_official_image_processor(case: Path) -> None:
    """``flip_pair`` on the case's pixel-space input against the official ``ImgProcessor`` with and without a flip."""
    flip = torch.load(case / "schedule_and_data.pt", weights_only=False)["flip"]
    w, h = flip["img_size"]
    img = flip["input_img"].permute(0, 3, 1, 2)
    verts = flip["input_verts_pix"].clone()
    verts[..., :2] = 2 * verts[..., :2] / torch.tensor([w, h], dtype=torch.float32) - 1  # the official normalisation
    assert torch.allclose(verts, flip["no_flip"]["posed_verts"], atol=0, rtol=0)
    mapping = flip["flame_verts_flip_mapping_standin"]
    got_img, got_verts = flip_pair(img, verts, mapping)
    assert torch.equal(got_img.permute(0, 2, 3, 1), flip["flip"]["img"])
    # x -> W - x in pixels, then normalised, is x -> -x in NDC up to float32 rounding of the two orders
    assert (got_verts - flip["flip"]["posed_verts"]).abs().max() <= 4 * 2.0**-24 * 2


def test_flip_mapping_file_is_checked(tmp_path: Path, flame: FLAME) -> None:
    from gdpw.data import load_mirror_map

    mirror = mirror_map(flame.v_template)
    np.save(tmp_path / "flip.npy", mirror.numpy())
    assert torch.equal(load_mirror_map(tmp_path / "flip.npy", flame.num_verts), mirror)
    np.save(tmp_path / "short.npy", mirror.numpy()[:10])
    with pytest.raises(DatasetError, match="must hold 5023 vertex indices"):
        load_mirror_map(tmp_path / "short.npy", flame.num_verts)
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="not a vertex flip mapping"):
        load_mirror_map(tmp_path / "pickled.npy", flame.num_verts)


def test_corrupt_shards_are_skipped_and_counted(tiny_dataset: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(tiny_dataset, root)
    for name in ("id0000_c00", "id0001_c01"):
        shard = root / "clips" / f"{name}.npz"
        shard.write_bytes(shard.read_bytes()[:500])
    ds = PairDataset(GdpwClipSource([root], split="train"), length=60, seed=0)
    skipped = sum(ds[i]["skipped"] for i in range(60))
    assert skipped > 0
    with pytest.raises(DatasetError, match="unreadable clip shard"):
        GdpwClipSource([root]).frames(GdpwClipSource([root]).clips()[0], [0])


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset.json is missing"):
        read_index(tmp_path)


def test_official_layout_reader(tmp_path: Path, flame: FLAME) -> None:
    lz4 = pytest.importorskip("lz4.frame", reason="the lz4 extra is installed in CI")
    from PIL import Image

    clip = render_clip(flame, TINY, 0, 0)
    folder = tmp_path / "id10001" / "video01" / "00001"
    folder.mkdir(parents=True)
    for t in range(3):
        Image.fromarray(clip.images[t]).save(folder / f"{t:07d}_img.jpg", quality=95)
        (folder / f"{t:07d}_posed_vertx.lz4").write_bytes(lz4.compress(clip.verts[t].astype(np.float32).tobytes()))
    src = OfficialClipSource(tmp_path)
    (info,) = src.clips()
    assert info.identity == "id10001" and info.frames == 3
    images, verts = src.frames(info, [0, 2])
    assert np.array_equal(verts[1], clip.verts[2])
    assert np.abs(images.astype(int) - clip.images[[0, 2]].astype(int)).mean() < 6  # JPEG
