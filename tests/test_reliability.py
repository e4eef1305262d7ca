"""The reliability sweep (issue 25): hostile and careless inputs end with one line, run no code and lose nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from gdpw.common.errors import GdpwError

from .helpers import Payload


def _npz_payload(path: Path, marker: Path, keys: tuple[str, ...]) -> Path:
    np.savez(path, **{k: np.array([Payload(marker)], dtype=object) for k in keys})
    return path


def _torch_payload(path: Path, marker: Path) -> Path:
    torch.save({"conv1.weight": Payload(marker), "state_dict": {"x": Payload(marker)}}, path)
    return path


def _loaders() -> dict[str, Callable[[Path, Path], object]]:
    """Each loader of a user-named file, given a payload file in its format."""
    from gdpw.backbones import FAN, LPIPS, FIDInceptionV3, IResNet, VGG19Features
    from gdpw.backbones.weights import read_weights
    from gdpw.data.dataset import load_clip, load_mirror_map
    from gdpw.flame import FLAME, load_flame
    from gdpw.flame.blendshapes import BlendshapeMap
    from gdpw.flame.motion import load_motion
    from gdpw.model.checkpoint import load_checkpoint

    def npy(tmp: Path, marker: Path) -> Path:
        np.save(tmp / "p.npy", np.array([Payload(marker)], dtype=object))
        return tmp / "p.npy"

    return {
        "checkpoint": lambda tmp, m: load_checkpoint(_torch_payload(tmp / "c.pt", m)),
        "flame": lambda tmp, m: load_flame(npy(tmp, m)),
        "motion file": lambda tmp, m: load_motion(_npz_payload(tmp / "m.npz", m, ("meta",)), FLAME()),
        "blendshape map": lambda tmp, m: BlendshapeMap.from_file(_npz_payload(tmp / "b.npz", m, ("names", "weights", "targets"))),
        "dataset shard": lambda tmp, m: load_clip(_npz_payload(tmp / "s.npz", m, ("images", "verts"))),
        "flip mapping": lambda tmp, m: load_mirror_map(npy(tmp, m), 5023),
        "VGG weights": lambda tmp, m: VGG19Features.from_torchvision_file(_torch_payload(tmp / "v.pth", m)),
        "FID Inception": lambda tmp, m: FIDInceptionV3.from_file(_torch_payload(tmp / "i.pth", m)),
        "backbone weights": lambda tmp, m: read_weights(_torch_payload(tmp / "w.pth", m), "weights", "hint"),
        "FAN": lambda tmp, m: FAN.from_file(_torch_payload(tmp / "f.pth", m)),
        "ArcFace": lambda tmp, m: IResNet.from_file(_torch_payload(tmp / "a.pth", m)),
        "LPIPS": lambda tmp, m: LPIPS.from_files(_torch_payload(tmp / "t.pth", m), _torch_payload(tmp / "l.pth", m)),
    }


@pytest.mark.parametrize("loader", sorted(_loaders()))
def test_every_loader_refuses_a_pickled_payload(loader: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(GdpwError) as info:
        _loaders()[loader](tmp_path, marker)
    assert "\n" not in str(info.value)
    assert not marker.exists()


# -- the command line: checked before any work, one line, nothing lost ----------------------------

mediapipe = pytest.importorskip("mediapipe", reason="the command-line cases need mediapipe (installed in CI)")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A portrait, a short driving video and a folder, in a module-wide folder."""
    from PIL import Image
    from skimage import data

    from gdpw.data.synth import SynthConfig, render_clip
    from gdpw.data.video import write_video
    from gdpw.flame import FLAME

    root = tmp_path_factory.mktemp("reliability")
    Image.fromarray(data.astronaut()).save(root / "face.png")
    clip = render_clip(FLAME(), SynthConfig(size=128, frames_per_clip=3, seed=5), 2, 0)
    write_video(root / "drive.mp4", clip.images, 10.0)
    (root / "folder").mkdir()
    (root / "folder" / "copy.png").write_bytes((root / "face.png").read_bytes())
    return {"face": root / "face.png", "drive": root / "drive.mp4", "folder": root / "folder", "root": root}


def _fails_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    from gdpw.cli.main import main

    capsys.readouterr()
    assert main(argv) == 2, argv
    stderr = capsys.readouterr().err
    err = stderr.strip().splitlines()[-1]  # after a progress bar, if any
    assert err.startswith(f"gdpw {argv[0]}: error:") and "Traceback" not in stderr, stderr
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_input_named_as_the_output_is_refused_and_kept(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    face, drive = str(files["face"]), str(files["drive"])
    before = _snapshot(files["root"])
    for argv in (["edit", "--source", face, "--yaw", "10", "-o", face],
                 ["frontalize", "--source", face, "-o", face],
                 ["animate", "--source", face, "--driving", drive, "-o", drive],
                 ["animate", "--source", drive, "--driving", face, "-o", drive],
                 ["fit", "--input", drive, "-o", drive],
                 ["fit", "--input", face, "-o", str(files["root"] / "f.npz"), "--preview", face]):
        _fails_with_one_line(argv, capsys, "is an input")
    assert _snapshot(files["root"]) == before


@pytest.mark.parametrize("argv, needle", [
    (["animate", "--source", "{face}", "--driving", "{drive}", "-o", "{folder}"], "is a folder"),
    (["animate", "--source", "{face}", "--driving", "{drive}", "-o", "{root}/out.png"], "name it .mp4"),
    (["edit", "--source", "{face}", "--sweep", "yaw:-30:30:3", "-o", "{root}/s.png"], "a sweep writes a video"),
    (["edit", "--source", "{face}", "--yaw", "10", "-o", "{root}/e.mp4"], "--sweep"),
    (["edit", "--source", "{face}", "--sweep", "yaw:-30:30:0", "-o", "{root}/s.mp4"], "2 to 1000 steps"),
    (["edit", "--source", "{face}", "--sweep", "yaw:a:b:3", "-o", "{root}/s.mp4"], "FIELD:START:STOP:STEPS"),
    (["edit", "--source", "{face}", "--sweep", "nose:0:1:3", "-o", "{root}/s.mp4"], "cannot sweep 'nose'"),
    (["edit", "--source", "{face}", "--yaw", "nan", "-o", "{root}/e.png"], "yaw must be"),
    (["edit", "--source", "{face}", "--pitch", "1e30", "-o", "{root}/e.png"], "pitch must be"),
    (["edit", "--source", "{face}", "--expression", "0=inf", "-o", "{root}/e.png"], "expression component 0"),
    (["edit", "--source", "{face}", "--expression", "zero=1", "-o", "{root}/e.png"], "INDEX=VALUE"),
    (["edit", "--source", "{face}", "--json", "{root}/bad.json", "-o", "{root}/e.png"], "not a JSON edit file"),
    (["edit", "--source", "{face}", "--json", "{root}/list.json", "-o", "{root}/e.png"], "JSON object"),
    (["frontalize", "--source", "{face}", "-o", "{root}/f.mp4"], "frontalize writes an image"),
    (["fit", "--input", "{drive}", "-o", "{folder}"], "is a folder"),
    (["fit", "--input", "{drive}", "-o", "{root}/f.npz", "--max-frames", "0"], "--max-frames must be at least 1"),
    (["animate", "--source", "{face}", "--driving", "{drive}", "-o", "{root}/o.mp4", "--max-frames", "0"], "--max-frames"),
    (["animate", "--source", "{folder}", "--driving", "{drive}", "-o", "{face}"], "is a file"),
    (["preprocess", "{root}/missing", "-o", "{root}/ds"], "missing"),
    (["convert", "{face}", "-o", "{face}"], "is an input"),
])
def test_bad_arguments_end_with_one_line_before_any_work(argv: list[str], needle: str, files: dict[str, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    (files["root"] / "bad.json").write_text("{yaw: 10")
    (files["root"] / "list.json").write_text("[10]")
    before = _snapshot(files["root"])
    _fails_with_one_line([a.format(**files) for a in argv], capsys, needle)
    assert _snapshot(files["root"]) == before  # nothing written, nothing left behind


def test_a_full_disk_gives_one_line_and_keeps_the_existing_output(files: dict[str, Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import av
    from PIL import Image

    out_video, out_image = tmp_path / "new.mp4", tmp_path / "e.png"
    out_video.write_bytes(b"an earlier result")
    out_image.write_bytes(b"an earlier image")

    class FullDisk:  # a container whose writes and close fail, as on a full disk
        def __init__(self, real: object) -> None:
            self.real = real

        def __getattr__(self, name: str) -> object:
            return getattr(self.real, name)

        def mux(self, packet: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device", str(out_video))

        def close(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: FullDisk(real_open(*a, **k)) if k.get("mode") == "w" else real_open(*a, **k))
    _fails_with_one_line(["animate", "--source", str(files["face"]), "--driving", str(files["drive"]), "-o", str(out_video)],
                         capsys, "No space left on device", "intact")

    def full(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    _fails_with_one_line(["edit", "--source", str(files["face"]), "--yaw", "10", "-o", str(out_image)], capsys, "No space")
    assert _snapshot(tmp_path) == {"new.mp4": b"an earlier result", "e.png": b"an earlier image"}  # no temporary files


def test_batch_mode_goes_on_past_bad_photos_and_names_them(files: dict[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from gdpw.data.video import read_video

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a_blank.png").write_bytes(_png(np.full((256, 256, 3), 255, np.uint8)))
    (photos / "b_good.png").write_bytes(files["face"].read_bytes())
    (photos / "c_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    err = _fails_with_one_line(["animate", "--source", str(photos), "--driving", str(files["drive"]), "-o", str(tmp_path / "out")],
                               capsys, "2 of 3 portraits failed", "a_blank.png", "c_broken.jpg")
    assert "b_good" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b_good.mp4"]
    assert read_video(tmp_path / "out" / "b_good.mp4")[0].shape[0] == 3


def _png(rgb: np.ndarray, **save: object) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", **save)
    return buf.getvalue()


def test_images_are_read_as_shown(tmp_path: Path) -> None:
    from PIL import Image

    from gdpw.data.video import MAX_IMAGE_SIDE, read_image

    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:10, :20] = 255  # a white block at the top left
    # EXIF orientation 6: the viewer turns the stored picture 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    shown = read_image(tmp_path / "turned.jpg")
    assert shown.shape == (60, 40, 3) and shown[:20, -10:].mean() > 200 and shown[-20:, :10].mean() < 50
    # 16-bit grey: its full range, not white
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    grey = read_image(tmp_path / "grey16.png")
    assert grey.shape == (64, 64, 3) and grey.min() == 0 and grey.max() == 255 and abs(grey.mean() - 127.5) < 2
    # a large JPEG is decoded at a reduced scale and capped
    Image.new("RGB", (5000, 3000), (10, 200, 30)).save(tmp_path / "large.jpg")
    large = read_image(tmp_path / "large.jpg")
    assert max(large.shape) == MAX_IMAGE_SIDE and large.shape[0] == round(3000 * MAX_IMAGE_SIDE / 5000)


def test_a_huge_portrait_stays_within_a_memory_bound(files: dict[str, Path], tmp_path: Path) -> None:
    """A 12000 x 12000 JPEG (432 MB of pixels) animated for 3 frames: the peak resident memory of
    the whole command stays under 1.5 GB (the demo portrait's run takes about 0.65 GB here)."""
    import subprocess
    import sys

    from PIL import Image

    Image.open(files["face"]).resize((12000, 12000), Image.Resampling.NEAREST).save(tmp_path / "huge.jpg", quality=80)
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "gdpw", "animate", "--source", str(tmp_path / "huge.jpg"),
                          "--driving", str(files["drive"]), "-o", str(tmp_path / "o.mp4")], capture_output=True, text=True, check=True)
    peak_gb = int(out.stdout.split()[-1]) / 1e6  # ru_maxrss is in KiB on Linux
    assert peak_gb < 1.5, f"peak {peak_gb:.2f} GB"


def _sequence(frames: int, n_expression: int):  # type: ignore[no-untyped-def]
    from gdpw.flame import FlameSequence

    g = torch.Generator().manual_seed(0)
    return FlameSequence(torch.zeros(10), torch.randn(frames, n_expression, generator=g) * 0.3,
                         torch.randn(frames, 3, generator=g) * 0.1, torch.zeros(frames, 3), torch.zeros(frames, 6),
                         torch.tensor([[5.0, 0.0, 0.0]]).repeat(frames, 1), neck_pose=torch.zeros(frames, 3))


def test_motion_files_are_validated_completely_at_load(tmp_path: Path) -> None:
    import json

    from gdpw.common.errors import FlameFileError
    from gdpw.flame import FLAME, load_motion, save_motion

    flame = FLAME()
    # fewer expression components than the model: the others are zero
    save_motion(tmp_path / "few.motion.npz", _sequence(4, 5), flame, 25.0, 256)
    few = load_motion(tmp_path / "few.motion.npz", flame)
    assert few.params.expression.shape == (4, flame.n_expression) and not few.params.expression[:, 5:].any()
    # float64 arrays (written by another tool) are read as float32
    with np.load(tmp_path / "few.motion.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "f64.motion.npz", **{k: v.astype(np.float64) if k != "meta" else v for k, v in arrays.items()})
    assert load_motion(tmp_path / "f64.motion.npz", flame).params.expression.dtype == torch.float32
    meta = json.loads(str(arrays["meta"]))
    bad_cases = {
        "meta without keys": ({**arrays, "meta": np.array(json.dumps({"format": meta["format"], "version": meta["version"]}))},
                              "lacks fps, crop_size"),
        "meta not an object": ({**arrays, "meta": np.array("[1, 2]")}, "not a gdpw motion file"),
        "negative fps": ({**arrays, "meta": np.array(json.dumps({**meta, "fps": -5}))}, "bad values"),
        "expression wider than its meta": ({**arrays, "expression": np.zeros((4, 7), np.float32)}, "its meta says 5"),
        "strings for numbers": ({**arrays, "camera": np.array([["a", "b", "c"]] * 4)}, "2-D array of numbers"),
        "a pose of another width": ({**arrays, "jaw_pose": np.zeros((4, 2), np.float32)}, "jaw_pose must be"),
        "frames that disagree": ({**arrays, "camera": np.zeros((3, 3), np.float32)}, "inconsistent"),
    }
    for name, (content, needle) in bad_cases.items():
        np.savez(tmp_path / "bad.motion.npz", **content)
        with pytest.raises(FlameFileError) as info:
            load_motion(tmp_path / "bad.motion.npz", flame)
        assert needle in str(info.value) and "\n" not in str(info.value), name


def test_checkpoints_with_foreign_or_non_finite_weights_are_refused(tmp_path: Path) -> None:
    from gdpw.common.errors import CheckpointError
    from gdpw.model.checkpoint import load_checkpoint
    from gdpw.pipeline.animator import DEMO_CHECKPOINT

    raw = torch.load(DEMO_CHECKPOINT, weights_only=True)
    torch.save({**raw, "generator": [1, 2, 3]}, tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="generator is a list, not a state dict"):
        load_checkpoint(tmp_path / "list.pt")
    key = next(k for k, v in raw["generator"].items() if v.is_floating_point() and v.numel() > 1)
    poisoned = {**raw["generator"], key: raw["generator"][key].clone()}
    poisoned[key].view(-1)[0] = float("nan")
    torch.save({**raw, "generator": poisoned}, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=f"key '{key}' holds NaN or infinite values"):
        load_checkpoint(tmp_path / "nan.pt")


def test_a_training_config_with_bad_yaml_or_values_gives_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:

    cases = {"broken.yaml": ("steps: [1, 2\nbatch_size: 2\n", "is not valid YAML"),
             "zero_batch.yaml": ("batch_size: 0\n", "batch_size and steps must be at least 1"),
             "zero_log.yaml": ("log_every: 0\n", "log_every, image_every and checkpoint_every must be at least 1"),
             "deep.yaml": ("image_size: 256\ngenerator: {num_levels: 40}\n", "generator.num_levels 40")}
    for name, (text, needle) in cases.items():
        (tmp_path / name).write_text(text)
        _fails_with_one_line(["train", "--config", str(tmp_path / name)], capsys, needle)
    _fails_with_one_line(["train", "--config", str(tmp_path / "zero_batch.yaml"), "--set", "steps=[1"], capsys, "not valid YAML")


def test_the_app_refuses_a_busy_port_before_loading_anything(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        _fails_with_one_line(["app", "--port", str(port)], capsys, f"127.0.0.1:{port}", "--port")
    _fails_with_one_line(["app", "--port", "70000"], capsys, "1..65535")


# -- the web app: bounded, tidy, no server paths -------------------------------------------------

def test_the_app_keeps_few_results_cuts_long_drivers_with_a_note_and_hides_server_paths(
        files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gradio", reason="the web app needs gradio (installed in CI)")
    import gdpw.app.web as web
    from gdpw.data.video import read_image, read_video
    from gdpw.pipeline import AnimateConfig

    state = web.AppState({"demo": None}, AnimateConfig())
    try:
        for _ in range(web.MAX_RESULTS + 3):
            state.new_result().write_bytes(b"an earlier result")
        assert len(list(state.workdir.glob("result_*"))) == web.MAX_RESULTS  # the oldest were deleted
        monkeypatch.setattr(web, "MAX_FRAMES", 2)
        out, note = web.run_animation(state, read_image(files["face"]), str(files["drive"]), None, "demo", "auto", False)
        assert read_video(out)[0].shape[0] == 2 and note is not None and "first 2 frames" in note
        workdir = state.workdir
    finally:
        state.close()
    assert not workdir.exists()
    err = ValueError(f"{workdir}/uploads/clip.mp4: not a readable video (cannot open '/tmp/gradio/ab12/clip.mp4')")
    assert web.public_message(err) == "ValueError: clip.mp4: not a readable video (cannot open 'clip.mp4')"


def test_the_app_removes_its_folders_on_sigterm(tmp_path: Path) -> None:
    pytest.importorskip("gradio", reason="the web app needs gradio (installed in CI)")
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TMPDIR": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "-m", "gdpw", "app", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and server.poll() is None:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        assert server.poll() is None and time.time() < deadline, "the app did not start"
        assert list(tmp_path.glob("gdpw_app_*")), "the app made no working folder under TMPDIR"
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    assert not list(tmp_path.glob("gdpw_app_*"))


def test_native_log_lines_are_hidden_unless_verbose(files: dict[str, Path], tmp_path: Path) -> None:
    import subprocess
    import sys

    def stderr(*flags: str) -> str:
        run = subprocess.run([sys.executable, "-m", "gdpw", *flags, "frontalize", "--source", str(files["face"]),
                              "-o", str(tmp_path / "f.png")], capture_output=True, text=True, check=True)
        return run.stderr

    assert stderr() == ""
    assert "face_landmarker_graph" in stderr("--verbose")  # what is hidden: MediaPipe's start-up lines


def test_preprocess_stops_on_a_full_disk_and_keeps_what_it_wrote(files: dict[str, Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import gdpw.data.preprocess as pre

    videos = tmp_path / "vox" / "id001"
    videos.mkdir(parents=True)
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (videos / name).write_bytes(files["drive"].read_bytes())
    real = pre.process_video
    written: list[str] = []

    def disk_fills_at_the_second(worker: pre.Worker, item: pre.VideoItem) -> int:
        if written:
            raise OSError(errno.ENOSPC, "No space left on device", str(item.shard))
        written.append(item.video.name)
        return real(worker, item)

    monkeypatch.setattr(pre, "process_video", disk_fills_at_the_second)
    _fails_with_one_line(["preprocess", str(tmp_path / "vox"), "-o", str(tmp_path / "ds"), "--size", "64"], capsys,
                         "No space left on device", "intact")
    assert [p.name for p in (tmp_path / "ds" / "clips").iterdir()] == ["id001__a.npz"]  # no clip reported as skipped
