"""Past one machine (issue 24): one job, run here, in a process pool, on Ray or as --shard slices,
gives the same outputs; reruns complete what is missing; bad items are listed, not fatal."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from gdpw.common.errors import UsageError, VideoError
from gdpw.common.files import atomic_write
from gdpw.common.jobs import Job, Runner, Shard, run_job

# -- the job seam, on a toy job --------------------------------------------------------------------


def _square(out: Path, state: dict[str, int], item: int) -> int:
    """A toy item: writes its square (times the worker's set-up factor) atomically."""
    if item == 13:
        raise VideoError(f"item {item} is bad")
    if item == 99:
        raise RuntimeError("the machine failed")
    with atomic_write(out / f"{item}.txt") as fh:
        fh.write(str(item * item * state["factor"]).encode())
    return item * item


def _toy_setup() -> dict[str, int]:
    return {"factor": 1}


def _toy_job(out: Path, items: list[int]) -> Job[dict[str, int], int, int]:
    return Job("toy", items, key=str, setup=_toy_setup, run=partial(_square, out),
               done=lambda i: (out / f"{i}.txt").exists(), bad_item=(VideoError,))


def test_shards_partition_the_items_the_same_way_everywhere() -> None:
    keys = [f"id{i:05d}/clip{j}.mp4" for i in range(50) for j in range(4)]
    slices = [[k for k in keys if Shard(j, 7).holds(k)] for j in range(7)]
    assert sorted(sum(slices, [])) == sorted(keys)  # every key in exactly one slice
    assert min(map(len, slices)) > 10  # and spread
    assert [k for k in reversed(keys) if Shard(3, 7).holds(k)] == slices[3][::-1]  # not by listing order
    # by the key's hash alone: these stay fixed across machines, Python versions and runs
    assert [Shard(j, 4).holds("id10001/1zcIwhmdeo4/00001.mp4") for j in range(4)].count(True) == 1
    assert Shard.parse("3/100") == Shard(3, 100)
    for bad in ("3", "a/b", "5/5", "-1/4"):
        with pytest.raises(UsageError):
            Shard.parse(bad)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_job_skips_what_is_done_lists_bad_items_and_stops_on_other_errors(tmp_path: Path, workers: int) -> None:
    items = list(range(20))
    first = run_job(_toy_job(tmp_path, items), Runner(workers=workers), progress=False)
    assert [o.item for o in first if not o.ok] == [13] and "item 13 is bad" in next(o.error for o in first if not o.ok)
    assert sorted(int(p.stem) for p in tmp_path.glob("*.txt")) == [i for i in items if i != 13]
    # a crash lost some outputs: a rerun does those (and retries the bad one), skips the rest
    for i in (3, 7):
        (tmp_path / f"{i}.txt").unlink()
    again = run_job(_toy_job(tmp_path, items), Runner(workers=workers), progress=False)
    assert sorted(o.item for o in again if not o.skipped) == [3, 7, 13]
    assert (tmp_path / "7.txt").read_text() == "49"
    with pytest.raises(RuntimeError, match="the machine failed"):
        run_job(_toy_job(tmp_path, [98, 99]), Runner(workers=workers), progress=False)


def test_shard_runs_together_do_the_whole_job_once(tmp_path: Path) -> None:
    items = list(range(40))
    done = [o for j in range(3) for o in run_job(_toy_job(tmp_path, items), Runner(shard=f"{j}/3"), progress=False)]
    assert sorted(o.item for o in done) == items  # each item in one shard, none twice
    assert sorted(int(p.stem) for p in tmp_path.glob("*.txt")) == [i for i in items if i != 13]


def test_runner_options_are_checked() -> None:
    with pytest.raises(UsageError, match="--workers"):
        Runner(workers=0)
    with pytest.raises(UsageError, match="--threads"):
        Runner(threads=0)
    with pytest.raises(UsageError, match="--engine ray"):
        Runner(address="auto")
    with pytest.raises(UsageError, match="J/N"):
        Runner(shard="1-of-2")


# -- preprocessing: sharded + merged, a pool and Ray all equal the single process ------------------

mediapipe = pytest.importorskip("mediapipe", reason="preprocessing needs mediapipe (installed in CI)")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gdpw.data.synth import SynthConfig, render_clip
    from gdpw.data.video import write_video
    from gdpw.flame import FLAME

    root = tmp_path_factory.mktemp("vox")
    flame = FLAME()
    for i in range(4):
        clip = render_clip(flame, SynthConfig(size=128, frames_per_clip=3, seed=5), i % 3, i)
        (root / f"id{i % 2:03d}").mkdir(exist_ok=True)
        write_video(root / f"id{i % 2:03d}" / f"{i:05d}.mp4", clip.images, 10.0)
    (root / "id001" / "broken.mp4").write_bytes(b"not a video")
    return root


def _dataset(root: Path) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    from gdpw.data.dataset import load_clip

    index = json.loads((root / "dataset.json").read_text())
    return index, {c["name"]: load_clip(root / c["file"]) for c in index["clips"]}


def _same_dataset(a: Path, b: Path) -> None:
    (ia, ca), (ib, cb) = _dataset(a), _dataset(b)
    assert ia == ib
    for name in ca:
        assert set(ca[name]) == set(cb[name])
        for key in ca[name]:
            assert np.array_equal(ca[name][key], cb[name][key]), (name, key)


@pytest.fixture
def one_thread():  # type: ignore[no-untyped-def]
    """PyTorch on one thread in this process, as in the pool workers and Ray actors (--threads 1): a fit's
    sums depend on the thread count, and an optimiser carries their rounding (seen: 8e-5 in a gaze angle)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


ARGS = ["--size", "64", "--fit.iterations", "60"]


def test_sharded_and_merged_pooled_and_ray_preprocessing_equal_one_process(videos: Path, tmp_path: Path, capsys,
                                                                           one_thread) -> None:  # type: ignore[no-untyped-def]
    from gdpw.cli.main import main

    single = tmp_path / "single"
    assert main(["preprocess", str(videos), "-o", str(single), *ARGS]) == 2  # the broken video
    assert len(json.loads((single / "dataset.json").read_text())["clips"]) == 4
    assert "broken.mp4" in (single / "failures.txt").read_text()

    sharded = tmp_path / "sharded"
    for j in range(2):
        main(["preprocess", str(videos), "-o", str(sharded), "--shard", f"{j}/2", *ARGS])
        assert not (sharded / "dataset.json").exists()  # the index is the merge's
    assert "broken.mp4" in "".join(p.read_text() for p in sharded.glob("failures.*-of-2.txt"))
    assert main(["preprocess", str(videos), "-o", str(sharded), "--merge", *ARGS]) == 2
    assert "broken.mp4: " in (sharded / "failures.txt").read_text() and "not processed" not in (sharded / "failures.txt").read_text()
    _same_dataset(single, sharded)

    pooled = tmp_path / "pooled"
    assert main(["preprocess", str(videos), "-o", str(pooled), "--workers", "2", "--threads", "1", *ARGS]) == 2
    _same_dataset(single, pooled)

    pytest.importorskip("ray", reason="the Ray engine needs ray (installed in CI)")
    on_ray = tmp_path / "ray"
    capsys.readouterr()
    assert main(["preprocess", str(videos), "-o", str(on_ray), "--engine", "ray", "--workers", "2", "--threads", "1", *ARGS]) == 2
    _same_dataset(single, on_ray)
    # a merge before every shard ran lists what is missing
    partial_run = tmp_path / "partial"
    main(["preprocess", str(videos), "-o", str(partial_run), "--shard", "0/2", *ARGS])
    assert main(["preprocess", str(videos), "-o", str(partial_run), "--merge", *ARGS]) == 2
    assert "not processed by any shard yet" in (partial_run / "failures.txt").read_text()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_ray_cluster_loses_a_node_mid_run_and_still_writes_every_clip_once(videos: Path, tmp_path: Path,
                                                                             one_thread) -> None:  # type: ignore[no-untyped-def]
    """A head node and a worker node started as separate processes (`ray start`), the job spread over
    both; the worker node is killed once the first clips are written: its actor starts again on the
    head, its video is done again, and the dataset equals the single-process one."""
    pytest.importorskip("ray", reason="the Ray engine needs ray (installed in CI)")
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    from gdpw.cli.main import main

    many = tmp_path / "many"  # enough videos that the kill lands mid-run
    for i in range(3):
        shutil.copytree(videos, many / f"copy{i}", ignore=shutil.ignore_patterns("broken.mp4"))
    single = tmp_path / "single"
    assert main(["preprocess", str(many), "-o", str(single), *ARGS]) == 0
    total = len(list((single / "clips").glob("*.npz")))

    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # Ray's socket paths must stay short
    common = ["--block", "--disable-usage-stats", f"--temp-dir={temp}"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    nodes = [subprocess.Popen([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                               *common], env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    out = tmp_path / "cluster"
    driver = None
    try:
        time.sleep(8)
        nodes.append(subprocess.Popen([ray_bin, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", *common], env=env,
                                      start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(6)
        driver = subprocess.Popen([sys.executable, "-m", "gdpw", "preprocess", str(many), "-o", str(out), "--engine", "ray",
                                   "--address", f"127.0.0.1:{port}", "--workers", "2", "--threads", "1", *ARGS], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 240
        while time.time() < deadline and driver.poll() is None and not list((out / "clips").glob("[!.]*.npz")):
            time.sleep(0.1)
        written_at_kill = len(list((out / "clips").glob("[!.]*.npz")))
        os.killpg(nodes[1].pid, signal.SIGKILL)  # the worker node, its raylet and its workers
        log = driver.communicate(timeout=300)[0]
        assert driver.returncode == 0, log
        assert 0 < written_at_kill < total, "the kill did not land mid-run"
    finally:
        for proc in [driver, *nodes[::-1]]:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL) if proc in nodes else proc.kill()
                proc.wait()
        shutil.rmtree(temp, ignore_errors=True)
    assert sorted(p.name for p in (out / "clips").iterdir()) == sorted(p.name for p in (single / "clips").iterdir())
    _same_dataset(single, out)


def test_batch_animation_sharded_pooled_and_on_ray_writes_the_same_images(tmp_path: Path, capsys,
                                                                          one_thread) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image
    from skimage import data

    from gdpw.cli.main import main

    photos = tmp_path / "photos"
    photos.mkdir()
    for name, shift in (("a", 0), ("b", 20), ("c", 40)):
        Image.fromarray(np.roll(data.astronaut(), shift, axis=1)).save(photos / f"{name}.png")
    Image.fromarray(np.roll(data.astronaut(), 10, axis=0)).save(tmp_path / "drive.png")

    def run(out: str, *flags: str) -> dict[str, bytes]:
        assert main(["animate", "--source", str(photos), "--driving", str(tmp_path / "drive.png"), "-o",
                     str(tmp_path / out), *flags]) == 0
        return {p.name: np.asarray(Image.open(p)).tobytes() for p in sorted((tmp_path / out).iterdir())}

    single = run("single")
    assert sorted(single) == ["a.png", "b.png", "c.png"]
    for j in range(2):
        run("sharded", "--shard", f"{j}/2")
    assert run("sharded") == single  # every portrait was in one shard; the rerun kept them
    assert "3 written before, kept" in capsys.readouterr().out
    before = (tmp_path / "single" / "a.png").stat().st_mtime_ns
    assert run("single", "--overwrite") == single and (tmp_path / "single" / "a.png").stat().st_mtime_ns != before
    assert run("pooled", "--workers", "2", "--threads", "1") == single
    pytest.importorskip("ray", reason="the Ray engine needs ray (installed in CI)")
    assert run("ray", "--engine", "ray", "--workers", "2", "--threads", "1") == single
