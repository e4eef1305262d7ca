"""Loaders fed truncated, random and bit-flipped bytes end in their own clear error, quickly.

Every case either loads (a flipped bit inside tensor data can still be a valid file) or raises
the loader's one-line error class; nothing else escapes, and no case takes long.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gdpw.data import DatasetError, SynthConfig, render_clip
from gdpw.data.dataset import load_clip, write_clip
from gdpw.data.video import VideoError, read_video, write_video
from gdpw.flame import DEMO_HEAD, FLAME, FlameFileError, load_flame
from gdpw.model import Generator, GeneratorConfig
from gdpw.model.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint

CASES = 40


def mutations(data: bytes, seed: int) -> list[bytes]:
    """Truncations, random blobs, bit flips and chunk overwrites of ``data``."""
    rng = np.random.default_rng(seed)
    out = [b"", data[:1], data[:16]]
    for _ in range(CASES // 4):
        out.append(data[: int(rng.integers(1, len(data)))])
        out.append(rng.bytes(int(rng.integers(1, 4096))))
        flipped = bytearray(data)
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
            flipped[pos] ^= 1 << int(rng.integers(0, 8))
        out.append(bytes(flipped))
        chunk = bytearray(data)
        start = int(rng.integers(0, len(data)))
        chunk[start : start + 256] = rng.bytes(min(256, len(data) - start))
        out.append(bytes(chunk))
    return out


def fuzz(tmp_path: Path, good: Path, load: Callable[[Path], object], error: type[Exception], seed: int) -> int:
    failures = 0
    for i, blob in enumerate(mutations(good.read_bytes(), seed)):
        bad = tmp_path / f"case{i}{good.suffix}"
        bad.write_bytes(blob)
        start = time.perf_counter()
        try:
            load(bad)
        except error as err:
            failures += 1
            assert "\n" not in str(err).strip(), f"case {i}: multi-line error"
        assert time.perf_counter() - start < 10, f"case {i} took too long"
    return failures


def test_fuzz_checkpoint_loader(tmp_path: Path) -> None:
    cfg = GeneratorConfig(guidance="both", base_chns=4, num_levels=3, num_verts=50)
    good = tmp_path / "good.pt"
    save_checkpoint(Checkpoint(cfg, Generator(cfg).state_dict(), image_size=32), good)
    assert fuzz(tmp_path, good, load_checkpoint, CheckpointError, seed=1) > CASES // 2


def test_fuzz_flame_loader(tmp_path: Path) -> None:
    good = tmp_path / "demo_head.npz"
    good.write_bytes(DEMO_HEAD.read_bytes())
    assert fuzz(tmp_path, good, load_flame, FlameFileError, seed=2) > CASES // 2


def test_fuzz_dataset_shard_loader(tmp_path: Path) -> None:
    clip = render_clip(FLAME(), SynthConfig(size=16, frames_per_clip=2), 0, 0)
    good = tmp_path / "clip.npz"
    write_clip(good, clip.images, clip.verts, clip.params)
    assert fuzz(tmp_path, good, load_clip, DatasetError, seed=3) > CASES // 2


def test_fuzz_video_reader(tmp_path: Path) -> None:
    clip = render_clip(FLAME(), SynthConfig(size=32, frames_per_clip=6), 0, 0)
    good = tmp_path / "clip.mp4"
    write_video(good, clip.images, 10)
    assert read_video(good)[0].shape == (6, 32, 32, 3)
    assert fuzz(tmp_path, good, read_video, VideoError, seed=4) > CASES // 4


def test_training_skips_and_counts_corrupt_samples(tmp_path: Path) -> None:
    from gdpw.data import write_synth_dataset
    from gdpw.train import TrainConfig, Trainer

    root = tmp_path / "data"
    write_synth_dataset(root, SynthConfig(num_identities=4, clips_per_identity=1, frames_per_clip=4, size=32,
                                          heldout_identities=1, seed=8), progress=False)
    for name in ("id0000_c00", "id0002_c00"):
        shard = root / "clips" / f"{name}.npz"
        shard.write_bytes(shard.read_bytes()[:300])
    cfg = TrainConfig.from_dict({
        "output": str(tmp_path / "run"), "steps": 4, "batch_size": 4, "image_size": 32, "log_every": 1,
        "generator": {"guidance": "geom_disp", "base_chns": 8, "num_levels": 4, "max_chns": 16},
        "loss": {"perceptual": 0.0, "warp_perceptual": 0.0, "gan": 0.0, "feature_matching": 0.0},
        "data": {"roots": [str(root)], "flip_prob": 0.0},
    })
    trainer = Trainer(cfg, resume=False)
    trainer.run(progress=False)
    assert trainer.step == 4 and trainer.skipped > 0
    import json

    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["skipped"] == trainer.skipped and np.isfinite(last["total_g"])


def test_cli_reports_corrupt_files_in_one_line(tmp_path: Path, capsys) -> None:
    from gdpw.cli.main import main

    (tmp_path / "bad.pt").write_bytes(b"\x80\x02}q\x00(X")
    assert main(["inspect", str(tmp_path / "bad.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gdpw inspect: error:") and "\n" not in err
    (tmp_path / "bad.pkl").write_bytes(b"garbage")
    assert main(["render", "--flame", str(tmp_path / "bad.pkl"), "-o", str(tmp_path / "o")]) == 2
    assert "not a readable FLAME pickle" in capsys.readouterr().err
