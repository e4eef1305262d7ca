"""Animation, editing and the demo: end to end, the Python API, and every bad input."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gdpw.cli.main import main
from gdpw.data.synth import SynthConfig, head_turn, render_clip
from gdpw.data.video import read_video, write_video
from gdpw.flame import FLAME, FlameSequence
from gdpw.pipeline import (
    AnimateConfig,
    Animator,
    CropBox,
    EditSpec,
    apply_edit,
    crop,
    crop_box,
    paste_back,
    sweep,
    transfer_motion,
)

mediapipe = pytest.importorskip("mediapipe", reason="fitting tests need mediapipe (installed in CI)")


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


@pytest.fixture(scope="module")
def driving_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clip = render_clip(FLAME(), SynthConfig(size=192, frames_per_clip=8, seed=5), 2, 0)
    path = tmp_path_factory.mktemp("vid") / "driving.mp4"
    write_video(path, clip.images, 10.0)
    return path


def _one_line_error(capsys, command: str) -> str:  # type: ignore[no-untyped-def]
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gdpw {command}: error:"), err
    assert "\n" not in err and "Traceback" not in err
    return err


def test_animate_astronaut_with_a_synthetic_driving_video(astronaut: Path, driving_video: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.mp4"
    assert main(["animate", "--source", str(astronaut), "--driving", str(driving_video), "-o", str(out), "--profile"]) == 0
    text = capsys.readouterr().out
    for stage in ("decode", "detect", "fit", "render", "generate", "compose", "total", "wall"):
        assert stage in text
    frames, info = read_video(out)
    assert frames.shape == (8, 512, 512, 3) and info.fps == pytest.approx(10.0)
    # the result differs from frame to frame (the head moves) and keeps the source outside the face
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 0.2
    from skimage import data

    src = data.astronaut().astype(int)
    assert np.abs(frames[0, -40:, :40].astype(int) - src[-40:, :40]).mean() < 6


def test_side_by_side_and_batch_mode(astronaut: Path, driving_video: Path, tmp_path: Path) -> None:
    folder = tmp_path / "sources"
    folder.mkdir()
    (folder / "a.png").write_bytes(astronaut.read_bytes())
    assert main(["animate", "--source", str(folder), "--driving", str(driving_video), "-o", str(tmp_path / "outs"),
                 "--side-by-side", "--max-frames", "3"]) == 0
    frames, _ = read_video(tmp_path / "outs" / "a.mp4")
    assert frames.shape[0] == 3 and frames.shape[2] > 2 * frames.shape[1]


def test_python_api_relative_motion_keeps_the_source_for_a_still_driver(astronaut: Path) -> None:
    from skimage import data

    animator = Animator(AnimateConfig(paste_back=False, detail=0))  # the network's own crops
    try:
        img = data.astronaut()
        result = animator.animate(img, [img, img], fps=25)
        assert result.crops.shape == (2, animator.size, animator.size, 3)
        src = animator.prepare_source(img)
        target = transfer_motion(src.fit, src.fit.repeat(2), "relative")
        assert torch.allclose(target.global_pose, src.fit.global_pose.expand(2, 3), atol=1e-5)
        assert torch.allclose(target.camera, src.fit.camera.expand(2, 3), atol=1e-6)
        # eyelids: openness scales with the driver's (from its first frame), so a closed driving eye
        # closes the source's however open it is, and a still driver keeps the source's own
        lids = list(animator.flame.lid_components)
        source = src.fit.replace(expression=src.fit.expression.clone())
        source.expression[0, lids] = torch.tensor([-0.4, 0.2])
        driving = src.fit.repeat(3).replace(expression=torch.zeros(3, src.fit.expression.shape[1]))
        driving.expression[:, lids] = torch.tensor([[0.1, 0.1], [1.0, 1.0], [0.55, 0.1]])
        moved = transfer_motion(source, driving, "relative", lids).expression[:, lids]
        assert torch.allclose(moved[0], torch.tensor([-0.4, 0.2]), atol=1e-6)
        assert torch.allclose(moved[1], torch.ones(2), atol=1e-6)
        assert torch.allclose(moved[2], torch.tensor([0.3, 0.2]), atol=1e-6)  # half as open: 1 - 1.4 * 0.5
        offset = transfer_motion(source, driving, "relative").expression[:, lids]  # without: offsets
        assert torch.allclose(offset[1], torch.tensor([0.5, 1.1]), atol=1e-6)
        # a driver whose first frame is mid-blink (openness 0.45): its rest counts as openness 0.9, so
        # its open eyes later (0.9) keep the source's instead of opening them twice as wide (-1.8)
        blinking = driving.replace(expression=driving.expression.flip(0))
        moved = transfer_motion(source, blinking, "relative", lids).expression[:, lids]
        assert torch.allclose(moved[2], torch.tensor([-0.4, 0.2]), atol=1e-6)
        # the animator runs the folded inference copy; it renders what the trained network renders
        assert not any(hasattr(m, "weight_orig") for m in animator.generator.modules())
        folded = animator.generate(src, target)
        animator.generator = animator.checkpoint.build_generator().eval()
        unfolded = animator.generate(src, target)
        assert np.abs(unfolded.astype(int) - folded.astype(int)).max() <= 1
    finally:
        animator.close()


def test_edit_and_frontalize(astronaut: Path, tmp_path: Path) -> None:
    from PIL import Image

    assert main(["edit", "--source", str(astronaut), "--yaw", "25", "--jaw", "8", "--expression", "0=1.5", "-o", str(tmp_path / "e.png")]) == 0
    assert Image.open(tmp_path / "e.png").size == (512, 512)
    assert main(["edit", "--source", str(astronaut), "--sweep", "yaw:-20:20:3", "-o", str(tmp_path / "s.mp4")]) == 0
    assert read_video(tmp_path / "s.mp4")[0].shape[0] == 5
    (tmp_path / "edit.json").write_text('{"pitch": 10, "gaze_x": 5, "shape": {"0": 1.0}}')
    assert main(["edit", "--source", str(astronaut), "--json", str(tmp_path / "edit.json"), "-o", str(tmp_path / "j.png")]) == 0
    assert main(["frontalize", "--source", str(astronaut), "-o", str(tmp_path / "f.png")]) == 0


def test_apply_edit_semantics() -> None:
    fit = FlameSequence(torch.zeros(20), torch.zeros(1, 10), torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1, 6), torch.tensor([[6.0, 0, 0]]))
    e = apply_edit(fit, EditSpec(yaw=30, jaw=10, expression={2: 1.0}, gaze_x=5))
    assert torch.allclose(e.global_pose, torch.tensor([[0.0, np.pi / 6, 0.0]]), atol=1e-5)
    assert e.jaw_pose[0, 0] == pytest.approx(np.pi / 18) and e.expression[0, 2] == 1.0
    assert e.eye_pose[0, 1] == pytest.approx(np.pi / 36) and e.eye_pose[0, 4] == pytest.approx(np.pi / 36)
    assert len(sweep(fit, EditSpec(), "roll", -10, 10, 5)) == 9
    with pytest.raises(ValueError, match="out of range"):
        apply_edit(fit, EditSpec(expression={99: 1.0}))
    with pytest.raises(ValueError, match="unknown edit keys"):
        EditSpec.from_dict({"smile": 1})


def test_composite_in_frame_reads_the_photo_once_where_the_flow_sends_it() -> None:
    """``composite_in_frame`` (live mode's compositing for the demo generator), against oracles on
    a random photo and a fractional box: with alpha 0 and no flow the photo comes back unchanged;
    a flow of exactly 3 photo pixels right and 2 down shows the photo moved by them (interior, where
    no edge is clamped); with alpha 1 the network's image shows (a ramp, read bilinearly at each
    pixel's centre in the crop) plus ``transfer`` times the warped photo less the network's own
    warped source."""
    from gdpw.common.crop import PasteBack
    from gdpw.model.generator import GeneratorOutput
    from gdpw.pipeline.animator import composite_in_frame

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, size=(90, 110, 3), dtype=np.uint8)
    box, n = CropBox(20.3, 11.6, 60.2), 32
    plan = PasteBack(photo.shape, box, n)
    zeros = torch.zeros(1, 3, n, n)

    def output(alpha: float, flow: tuple[float, float] = (0.0, 0.0), image: torch.Tensor = zeros,
               warped: torch.Tensor = zeros) -> GeneratorOutput:
        f = torch.tensor(flow).view(1, 2, 1, 1).expand(1, 2, n, n)
        return GeneratorOutput({}, {"x1": f}, warped, image, torch.full((1, 1, n, n), alpha), image)

    assert np.array_equal(composite_in_frame(plan, photo, output(0.0)), photo)
    moved = composite_in_frame(plan, photo, output(0.0, (2 * 3 / box.size, 2 * 2 / box.size))).astype(int)
    cy0, cx0, cy1, cx1 = plan.region
    inner = (slice(cy0 + 6, cy1 - 6), slice(cx0 + 6, cx1 - 6))  # inside the feathered edge
    shifted = photo[cy0 + 8 : cy1 - 4, cx0 + 9 : cx1 - 3].astype(int)
    assert np.abs(moved[inner] - shifted).max() <= 1
    ramp = (torch.arange(n).view(1, 1, 1, n) * 4.0 + torch.arange(n).view(1, 1, n, 1)).expand(1, 3, n, n) / 255
    painted = composite_in_frame(plan, photo, output(1.0, image=ramp), transfer=0.0).astype(float)
    ys, xs = np.mgrid[0:90, 0:110] + 0.5
    px, py = (xs - box.x0) / box.size * n - 0.5, (ys - box.y0) / box.size * n - 0.5
    core = np.zeros(photo.shape[:2], bool)
    core[inner] = True
    core &= (px > 0) & (px < n - 1) & (py > 0) & (py < n - 1)
    assert core.sum() > 1000 and np.abs(painted[core][:, 0] - (px * 4 + py)[core]).max() <= 1.0
    grey = torch.full((1, 3, n, n), 0.25)
    detail = composite_in_frame(plan, photo, output(1.0, image=grey + 0.25, warped=grey), transfer=1.0).astype(float)
    expect = np.clip(127.5 + photo.astype(float) - 63.75, 0, 255)  # 0.5 + (photo - 0.25), in grey levels
    assert np.abs(detail[inner] - expect[inner]).max() <= 1.0


def test_crop_and_paste_back_roundtrip() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(100, 120, 3), dtype=np.uint8)
    box = CropBox(20.0, 10.0, 64.0)
    patch = crop(img, box, 64)
    assert np.array_equal(patch, img[10:74, 20:84])
    back = paste_back(img, patch, box)
    assert np.abs(back.astype(int) - img.astype(int)).max() <= 1
    # a patch at another scale and a fractional box: bilinear sampling of a ramp is the ramp itself,
    # read at each frame pixel's centre (inside the feathered edge, where the patch alone shows)
    n, fbox = 50, CropBox(30.3, 12.6, 61.7)
    ramp = np.broadcast_to((np.arange(n)[None, :, None] * 4 + np.arange(n)[:, None, None] * 1.0), (n, n, 3)).astype(np.uint8)
    pasted = paste_back(img, ramp, fbox).astype(float)
    ys, xs = np.mgrid[0:100, 0:120] + 0.5
    px, py = (xs - fbox.x0) / fbox.size * n - 0.5, (ys - fbox.y0) / fbox.size * n - 0.5
    core = (px > 0.08 * n) & (px < 0.92 * n - 1) & (py > 0.08 * n) & (py < 0.92 * n - 1)
    assert core.sum() > 1000 and np.abs(pasted[core][:, 0] - (px * 4 + py)[core]).max() <= 1.0
    outside = np.ones((100, 120), bool)
    outside[12:75, 30:93] = False
    assert np.array_equal(pasted[outside], img[outside].astype(float))  # beyond the box: the frame untouched
    lmk = np.array([[10.0, 20.0], [30.0, 60.0]])
    b = crop_box(lmk, scale=2.0)
    assert b.size == 80 and np.allclose(b.to_ndc(lmk).mean(0), 0, atol=1e-6)
    # beyond the image: black (the official crop), or the nearest edge pixel
    over = CropBox(-10.0, -5.0, 40.0)
    black, edge = crop(img, over, 40), crop(img, over, 40, border="edge")
    assert black[:5].max() == 0 and black[:, :10].max() == 0
    assert np.array_equal(edge[5:, 10:], black[5:, 10:]) and np.array_equal(edge[5:, 10:], img[:35, :30])
    assert np.array_equal(edge[:5, 12], np.repeat(img[0, 2][None], 5, 0)) and np.array_equal(edge[7, :10], np.repeat(img[2, 0][None], 10, 0))


def test_demo_writes_playable_videos(tmp_path: Path, capsys) -> None:
    import av

    assert main(["demo", "-o", str(tmp_path), "--frames", "12"]) == 0
    for name, frames in (("reenactment.mp4", 12), ("edit_sweep.mp4", 34)):
        with av.open(str(tmp_path / name)) as c:
            stream = c.streams.video[0]
            assert stream.codec_context.name == "h264"
            decoded = sum(1 for _ in c.decode(video=0))
        assert decoded == frames


# -- bad input: one line, exit status 2, nothing written ----------------------------------------


def test_no_face(tmp_path: Path, driving_video: Path, capsys) -> None:
    from PIL import Image

    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(tmp_path / "blank.png")
    assert main(["animate", "--source", str(tmp_path / "blank.png"), "--driving", str(driving_video), "-o", str(tmp_path / "o.mp4")]) == 2
    assert "no face found in the source image" in _one_line_error(capsys, "animate")
    assert not (tmp_path / "o.mp4").exists()


def test_several_faces_need_face_index(astronaut: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    face = np.asarray(Image.open(astronaut))[0:300, 100:400]  # two faces large enough for the detector
    Image.fromarray(np.concatenate([face, face[:, ::-1]], axis=1)).save(tmp_path / "two.png")
    assert main(["frontalize", "--source", str(tmp_path / "two.png"), "-o", str(tmp_path / "f.png")]) == 2
    assert "2 faces found" in _one_line_error(capsys, "frontalize") and not (tmp_path / "f.png").exists()
    assert main(["frontalize", "--source", str(tmp_path / "two.png"), "--face-index", "1", "-o", str(tmp_path / "f.png")]) == 0
    assert main(["frontalize", "--source", str(tmp_path / "two.png"), "--face-index", "5", "-o", str(tmp_path / "g.png")]) == 2
    assert "has 2 face(s)" in _one_line_error(capsys, "frontalize")


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20])
def test_unreadable_or_empty_video(astronaut: Path, tmp_path: Path, capsys, content: bytes) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    assert main(["animate", "--source", str(astronaut), "--driving", str(bad), "-o", str(tmp_path / "o.mp4")]) == 2
    assert "bad.mp4" in _one_line_error(capsys, "animate")
    assert not (tmp_path / "o.mp4").exists()


def test_image_too_small(tmp_path: Path, driving_video: Path, astronaut: Path, capsys) -> None:
    from PIL import Image

    Image.open(astronaut).resize((40, 40)).save(tmp_path / "tiny.png")
    assert main(["frontalize", "--source", str(tmp_path / "tiny.png"), "-o", str(tmp_path / "f.png")]) == 2
    err = _one_line_error(capsys, "frontalize")
    assert "too small" in err or "no face found" in err


def test_missing_files(astronaut: Path, driving_video: Path, tmp_path: Path, capsys) -> None:
    args = ["animate", "--source", str(astronaut), "--driving", str(driving_video), "-o", str(tmp_path / "o.mp4")]
    assert main(args + ["--flame", str(tmp_path / "generic_model.pkl")]) == 2
    assert "FLAME model not found" in _one_line_error(capsys, "animate")
    assert main(args + ["--checkpoint", str(tmp_path / "gdpw.pt")]) == 2
    assert "checkpoint not found" in _one_line_error(capsys, "animate")
    assert main(["animate", "--source", str(tmp_path / "nope.png"), "--driving", str(driving_video), "-o", str(tmp_path / "o.mp4")]) == 2
    assert "image not found" in _one_line_error(capsys, "animate")


def test_checkpoint_that_does_not_match_the_flame_model(astronaut: Path, tmp_path: Path, capsys) -> None:
    from gdpw.model import Generator, GeneratorConfig
    from gdpw.model.checkpoint import Checkpoint, save_checkpoint

    cfg = GeneratorConfig(guidance="neural_codes", base_chns=4, num_levels=3, num_verts=100)
    save_checkpoint(Checkpoint(cfg, Generator(cfg).state_dict(), image_size=64), tmp_path / "other.pt")
    assert main(["frontalize", "--source", str(astronaut), "--checkpoint", str(tmp_path / "other.pt"), "-o", str(tmp_path / "f.png")]) == 2
    assert "codes are for 100 vertices" in _one_line_error(capsys, "frontalize")


def test_preprocess_videos_into_a_dataset(tmp_path: Path, capsys) -> None:
    from gdpw.data import GdpwClipSource, PairDataset, read_index

    clip = render_clip(FLAME(), SynthConfig(size=192, frames_per_clip=6, seed=5), 2, 0)
    videos = tmp_path / "vox" / "id001" / "vid01"
    videos.mkdir(parents=True)
    write_video(videos / "00001.mp4", clip.images, 10.0)
    (videos / "00002.mp4").write_bytes(b"not a video")
    out = tmp_path / "ds"
    assert main(["preprocess", str(tmp_path / "vox"), "-o", str(out), "--size", "64"]) == 2  # one bad video
    text = capsys.readouterr().out
    assert "1 clips (6 frames)" in text and "skipped" in text and "00002.mp4" in text
    assert "00002.mp4" in (out / "failures.txt").read_text()
    _, clips = read_index(out)
    assert clips[0].identity == "id001" and clips[0].frames == 6
    pair = PairDataset(GdpwClipSource([out]), length=2, seed=0)[0]
    assert pair["img_s"].shape == (3, 64, 64) and pair["verts_s"].shape == (5023, 3)
    # the fitted mesh lies on the face in the crops
    from gdpw.render import rasterize

    mask = rasterize(pair["verts_s"][None], FLAME().faces, (64, 64)).mask()
    assert 0.05 < mask.mean() < 0.8
    shard = out / "clips" / "id001__vid01__00001.npz"
    before = shard.stat().st_mtime_ns
    (videos / "00002.mp4").unlink()
    assert main(["preprocess", str(tmp_path / "vox"), "-o", str(out), "--size", "64"]) == 0  # resumes
    assert shard.stat().st_mtime_ns == before and not (out / "failures.txt").exists()
    capsys.readouterr()
    # another size for the same dataset is refused before any work
    assert main(["preprocess", str(tmp_path / "vox"), "-o", str(out), "--size", "32"]) == 2
    assert "--size 64" in _one_line_error(capsys, "preprocess")
    assert shard.stat().st_mtime_ns == before and read_index(out)[0]["image_size"] == 64
    assert main(["preprocess", str(tmp_path / "missing"), "-o", str(tmp_path / "x")]) == 2
    assert "missing" in _one_line_error(capsys, "preprocess")


def test_fit_command_on_a_video(driving_video: Path, tmp_path: Path, capsys) -> None:
    assert main(["fit", "--input", str(driving_video), "-o", str(tmp_path / "f.npz"), "--preview", str(tmp_path / "p.png")]) == 0
    data = np.load(tmp_path / "f.npz")
    assert data["expression"].shape == (8, 10) and data["camera"].shape == (8, 3)
    assert data["landmark_error"].max() < 0.06  # NDC; MediaPipe points on the demo head fit to ~0.03-0.05
    assert (tmp_path / "p.png").exists()


def _voiced_video(images: np.ndarray, path: Path, fps: float = 10.0) -> Path:
    """``images`` as an H.264 mp4 with a one-second 440 Hz tone."""
    import av

    with av.open(str(path), "w") as out:
        vout = out.add_stream("libx264", rate=round(fps))
        vout.width, vout.height, vout.pix_fmt = images.shape[2], images.shape[1], "yuv420p"
        aout = out.add_stream("aac", rate=44100)
        for image in images:
            for p in vout.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                out.mux(p)
        for p in vout.encode():
            out.mux(p)
        t = np.arange(44100) / 44100
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, 44100, 1024):
            chunk = np.stack([tone[start : start + 1024]] * 2)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="stereo")
            frame.sample_rate = 44100
            for p in aout.encode(frame):
                out.mux(p)
        for p in aout.encode():
            out.mux(p)
    return path


def _audio_samples(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert len(c.streams.audio) == 1
        return sum(f.samples for f in c.decode(audio=0))


def test_animate_keeps_the_driving_audio(astronaut: Path, tmp_path: Path) -> None:
    clip = render_clip(FLAME(), SynthConfig(size=192, frames_per_clip=10, seed=5), 2, 0)
    voiced = _voiced_video(clip.images, tmp_path / "voiced.mp4")
    out_path = tmp_path / "out.mp4"
    assert main(["animate", "--source", str(astronaut), "--driving", str(voiced), "-o", str(out_path)]) == 0
    assert _audio_samples(out_path) > 0.8 * 44100  # about the clip's second of sound


def test_video_to_video_keeps_the_source_pose_and_audio(tmp_path: Path) -> None:
    """A source video of a head turning, driven by one still face: with --keep-source-pose each
    result frame keeps its source frame's turn (close to the source frame itself); without it the
    head holds the pose of the source's first frame."""
    from PIL import Image

    from tests.live_helpers import turning_head

    flame = FLAME()
    cfg = SynthConfig(size=256, frames_per_clip=12, seed=7, fps=10.0)
    source = render_clip(flame, cfg, 3, 1, motion=head_turn(flame, cfg, 3, 1, yaw_degrees=20.0))
    still = turning_head(1)[0]  # another person's still face drives it
    voiced = _voiced_video(source.images, tmp_path / "source.mp4")
    Image.fromarray(still).save(tmp_path / "still.png")
    results = {}
    for keep in (True, False):
        out = tmp_path / f"out_{keep}.mp4"
        flags = ["--keep-source-pose"] if keep else []
        assert main(["animate", "--source", str(voiced), "--driving", str(tmp_path / "still.png"), "-o", str(out), *flags]) == 0
        results[keep], _ = read_video(out)
        assert results[keep].shape == source.images.shape  # every source frame, at the source's size
    assert _audio_samples(tmp_path / "out_True.mp4") > 0.8 * 44100  # the source's sound
    turned = np.abs(np.degrees(source.params.global_pose[:, 1].numpy())) > 10

    def off(frames: np.ndarray) -> float:
        return float(np.abs(frames[turned].astype(float) - source.images[turned].astype(float)).mean())

    print(f"turned frames: {off(results[True]):.1f} grey levels from the source with its pose kept, "
          f"{off(results[False]):.1f} without")
    assert off(results[True]) < 0.7 * off(results[False])
    assert main(["animate", "--source", str(voiced), "--driving", str(tmp_path / "still.png"), "-o",
                 str(tmp_path / "x.png")]) == 2  # a video source gives a video
    assert main(["animate", "--source", str(tmp_path / "still.png"), "--driving", str(voiced), "-o",
                 str(tmp_path / "y.mp4"), "--keep-source-pose"]) == 2  # needs a video source


@pytest.fixture(scope="module")
def flame_pickle_and_embedding(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The demo head written as FLAME's generic_model.pkl (no landmark embedding in it) and its
    68-point embedding in a separate DECA-style file."""
    from .test_flame import _imitate_official_pickle

    folder = tmp_path_factory.mktemp("flame")
    with pytest.MonkeyPatch.context() as m:
        _imitate_official_pickle(folder / "generic_model.pkl", m)
    demo = FLAME()
    np.save(folder / "landmark_embedding.npy", {"static_lmk_faces_idx": demo.lmk_faces_idx.numpy(),
                                                "static_lmk_bary_coords": demo.lmk_bary_coords.numpy()})
    return folder / "generic_model.pkl", folder / "landmark_embedding.npy"


def test_preprocess_with_a_separate_landmark_embedding(flame_pickle_and_embedding: tuple[Path, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import gdpw.pipeline.animator

    def no_generator(*args: object, **kwargs: object) -> None:
        raise AssertionError("preprocessing must not load a generator")

    monkeypatch.setattr(gdpw.pipeline.animator, "load_checkpoint", no_generator)
    pkl, embedding = flame_pickle_and_embedding
    clip = render_clip(FLAME(), SynthConfig(size=192, frames_per_clip=4, seed=5), 2, 0)
    write_video(tmp_path / "vox" / "id001" / "00001.mp4", clip.images, 10.0)
    args = ["preprocess", str(tmp_path / "vox"), "-o", str(tmp_path / "ds"), "--size", "64", "--flame", str(pkl)]
    # without the embedding: one line that names the flag, before any video is tried
    assert main(args) == 2
    assert "--landmark-embedding" in _one_line_error(capsys, "preprocess")
    assert not (tmp_path / "ds" / "clips").exists()
    assert main(args + ["--landmark-embedding", str(embedding), "--fit.iterations", "100"]) == 0
    assert "1 clips (4 frames)" in capsys.readouterr().out


def test_app_with_a_separate_landmark_embedding(flame_pickle_and_embedding: tuple[Path, Path], astronaut: Path) -> None:
    from PIL import Image

    from gdpw.app.web import AppState
    from gdpw.cli.app import app_config
    from gdpw.cli.main import build_parser

    pkl, embedding = flame_pickle_and_embedding
    args = build_parser().parse_args(["app", "--flame", str(pkl), "--landmark-embedding", str(embedding), "--fit.iterations", "100"])
    cfg = app_config(args)
    assert cfg.head.landmark_embedding == str(embedding) and cfg.track.fit.iterations == 100
    state = AppState({"demo": None}, cfg)
    try:
        source = state.animator("demo").prepare_source(np.asarray(Image.open(astronaut)))
        assert source.fit.shape.shape == (300,) and float(source.fit.landmark_error[0]) < 0.05
    finally:
        state.close()


@pytest.fixture(scope="module")
def released_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generator saved the released way ({generator, discriminator, global_step}, official keys)."""
    from gdpw.model import Generator, GeneratorConfig

    torch.manual_seed(0)
    cfg = GeneratorConfig(guidance="neural_codes", base_chns=8, max_chns=16, num_levels=4)
    path = tmp_path_factory.mktemp("released") / "released_neural_codes.pth"
    torch.save({"generator": Generator(cfg).state_dict(), "discriminator": None, "global_step": 270000}, path)
    return path


@pytest.fixture(scope="module")
def deca_embedding(flame_pickle_and_embedding: tuple[Path, Path]) -> Path:
    """DECA's landmark_embedding.npy layout (51 static points, full 68, 79 x 17 dynamic contour)
    for the demo head: the official fixture's stand-in."""
    from .conftest import first_case

    z = np.load(first_case("fixtures/official_deca", "*.npz"))
    emb = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("standin_landmark_embedding/")}
    path = flame_pickle_and_embedding[0].parent / "deca_landmark_embedding.npy"
    np.save(path, emb)
    return path


def test_a_released_checkpoint_runs_the_official_preset(released_checkpoint: Path, flame_pickle_and_embedding: tuple[Path, Path],
                                                        deca_embedding: Path, astronaut: Path, driving_video: Path,
                                                        tmp_path: Path) -> None:
    from PIL import Image

    from gdpw.common.crop import official_boxes
    from gdpw.flame import HeadConfig

    pkl, _ = flame_pickle_and_embedding
    head = HeadConfig(str(pkl), str(deca_embedding))
    with Animator(AnimateConfig(checkpoint=str(released_checkpoint), head=head)) as animator:
        assert animator.recipe == "official" and animator.antialias and animator.size == 256
        image = np.asarray(Image.open(astronaut))
        source = animator.prepare_source(image)
        lmk = animator.tracker.landmarks(image, "the source image")[0]
        assert source.box == official_boxes(lmk)[1] and source.crop.shape == (256, 256, 3)
    args = ["animate", "--source", str(astronaut), "--driving", str(driving_video), "--max-frames", "3",
            "--checkpoint", str(released_checkpoint), "--flame", str(pkl), "--landmark-embedding", str(deca_embedding)]
    assert main(args + ["-o", str(tmp_path / "landmarks.mp4")]) == 0
    assert read_video(tmp_path / "landmarks.mp4")[0].shape[0] == 3
    from .test_deca import _deca_file

    deca = _deca_file(tmp_path / "deca_model.tar")
    assert main(args + ["-o", str(tmp_path / "deca.mp4"), "--fitter", "deca", "--deca-model", str(deca)]) == 0
    assert read_video(tmp_path / "deca.mp4")[0].shape[0] == 3


def test_decoder_precision_and_cuda_graph_option(astronaut: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    image = np.asarray(Image.open(astronaut))
    crops = {}
    for precision in ("auto", "bf16"):
        with Animator(AnimateConfig(paste_back=False, precision=precision)) as animator:
            source = animator.prepare_source(image)
            crops[precision] = animator.generate(source, source.fit.repeat(2))
            assert animator.dtype == (torch.float32 if precision == "auto" else torch.bfloat16)  # auto on a CPU: fp32
    diff = np.abs(crops["auto"].astype(int) - crops["bf16"].astype(int))
    print(f"bf16 against fp32: max {diff.max()}, mean {diff.mean():.3f} (uint8 levels)")
    assert 0 < diff.max() <= 32 and diff.mean() < 1  # bf16 autocast: close, not equal
    assert main(["frontalize", "--source", str(astronaut), "--cuda-graph", "on", "-o", str(tmp_path / "f.png")]) == 2
    assert "CUDA graphs need a CUDA device" in _one_line_error(capsys, "frontalize")


def test_cuda_graph_auto_falls_back_to_eager(astronaut: Path, monkeypatch, capsys) -> None:
    """``cuda_graph="auto"`` (the default) captures on CUDA only, and a failed capture runs eagerly
    with one line saying why; ``"on"`` raises. The device is faked after encoding (no GPU here)."""
    from PIL import Image

    import gdpw.pipeline.animator as animator_module

    calls = []

    def failing_capture(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args)
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(animator_module, "GraphedDecode", failing_capture)
    image = np.asarray(Image.open(astronaut))
    with Animator(AnimateConfig(paste_back=False)) as animator:
        assert animator.cfg.cuda_graph == "auto"
        source = animator.prepare_source(image)
        encoded = animator.encode(source)
        assert animator.capture(encoded) is None and not calls  # CPU: eager, no capture tried
        animator.device = torch.device("cuda")
        assert animator.capture(encoded) is None and len(calls) == 1
        out = capsys.readouterr().out
        assert "building the CUDA graph" in out
        assert "capture failed (CUDA error: operation not permitted when stream is capturing); rendering and decoding eagerly" in out
        animator.cfg = replace(animator.cfg, cuda_graph="on")
        with pytest.raises(RuntimeError, match="operation not permitted"):
            animator.capture(encoded)
        animator.cfg = replace(animator.cfg, cuda_graph="off")
        assert animator.capture(encoded) is None and len(calls) == 2


def test_motion_files(astronaut: Path, driving_video: Path, tmp_path: Path, capsys,
                      flame_pickle_and_embedding: tuple[Path, Path]) -> None:
    from PIL import Image

    from gdpw.flame import load_motion, save_motion

    motion = tmp_path / "drive.motion.npz"
    assert main(["fit", "--input", str(driving_video), "-o", str(motion)]) == 0
    with np.load(motion) as z:
        assert "images" not in z.files and "shape" not in z.files  # no face data, no identity
    clip = load_motion(motion, FLAME())
    assert len(clip.params) == 8 and clip.fps == pytest.approx(10.0) and clip.recipe == "gdpw"
    out = tmp_path / "from_motion.mp4"
    assert main(["animate", "--source", str(astronaut), "--driving", str(motion), "-o", str(out)]) == 0
    frames, info = read_video(out)
    assert frames.shape[0] == 8 and info.fps == pytest.approx(10.0)
    # relative motion from the motion file equals relative motion from the video it was fitted on
    image = np.asarray(Image.open(astronaut))
    with Animator(AnimateConfig(paste_back=False)) as animator:
        video_frames, _ = read_video(driving_video)
        from_video = animator.animate(image, list(video_frames), fps=10.0).crops
        from_file = animator.animate_motion(image, load_motion(motion, animator.flame)).crops
    assert np.array_equal(from_video, from_file)
    # edits and sweeps save as motion files
    assert main(["edit", "--source", str(astronaut), "--sweep", "yaw:-10:10:3", "-o", str(tmp_path / "s.mp4"),
                 "--save-motion", str(tmp_path / "sweep.motion.npz")]) == 0
    assert len(load_motion(tmp_path / "sweep.motion.npz", FLAME()).params) == 5
    # a motion file for another FLAME model, or not a motion file: one line, nothing written
    pkl, _ = flame_pickle_and_embedding
    other = FLAME(pkl)
    save_motion(tmp_path / "other.motion.npz", clip.params.replace(expression=torch.zeros(8, 100), shape=torch.zeros(300)),
                other, 10.0, 256)
    capsys.readouterr()
    for bad, message in ((tmp_path / "other.motion.npz", "100 expression components"),
                         (tmp_path / "broken.motion.npz", "not a readable motion file")):
        if not bad.exists():
            bad.write_bytes(b"PK\x03\x04 not a zip")
        assert main(["animate", "--source", str(astronaut), "--driving", str(bad), "-o", str(tmp_path / "x.mp4")]) == 2
        assert message in _one_line_error(capsys, "animate") and not (tmp_path / "x.mp4").exists()


def test_a_driving_image_gives_an_image(astronaut: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    clip = render_clip(FLAME(), SynthConfig(size=192, frames_per_clip=1, seed=5), 2, 0)
    Image.fromarray(clip.images[0]).save(tmp_path / "drive.png")
    assert main(["animate", "--source", str(astronaut), "--driving", str(tmp_path / "drive.png"), "-o", str(tmp_path / "o.png")]) == 0
    assert Image.open(tmp_path / "o.png").size == (512, 512)
    assert main(["animate", "--source", str(astronaut), "--driving", str(tmp_path / "drive.png"), "-o", str(tmp_path / "o.mp4")]) == 2
    assert "name the output .png" in _one_line_error(capsys, "animate")


def test_every_face_of_a_group_photo(astronaut: Path, driving_video: Path, tmp_path: Path) -> None:
    from PIL import Image

    face = np.asarray(Image.open(astronaut))[0:300, 100:400]
    group = np.concatenate([face, face[:, ::-1]], axis=1)  # two faces, as in the several-faces test
    Image.fromarray(group).save(tmp_path / "two.png")
    motion = tmp_path / "drive.motion.npz"
    assert main(["fit", "--input", str(driving_video), "-o", str(motion), "--max-frames", "3"]) == 0
    for driver in (driving_video, motion):  # a video or a motion file drives every face
        out = tmp_path / "two.mp4"
        assert main(["animate", "--source", str(tmp_path / "two.png"), "--driving", str(driver), "--all-faces",
                     "--max-frames", "3", "-o", str(out)]) == 0
        frames = read_video(out)[0].astype(int)
        # both halves move with the driver (the video codec alone changes little)
        for half in (frames[:, :, :300], frames[:, :, 300:]):
            assert np.abs(half[-1] - half[0]).mean() > 0.2


def test_web_ui_animates_from_a_motion_file(astronaut: Path, driving_video: Path, tmp_path: Path) -> None:
    from PIL import Image

    from gdpw.app.web import AppState, run_animation

    motion = tmp_path / "drive.motion.npz"
    assert main(["fit", "--input", str(driving_video), "-o", str(motion), "--max-frames", "4"]) == 0
    state = AppState({"demo": None}, AnimateConfig())
    try:
        out, note = run_animation(state, np.asarray(Image.open(astronaut)), None, str(motion), "demo", "auto", False)
        frames, info = read_video(out)
        assert frames.shape[0] == 4 and info.fps == pytest.approx(10.0) and note is None
    finally:
        state.close()


def test_composite_at_a_finer_resolution() -> None:
    """At the network's own resolution it is the network's alpha-blended output; with a zero flow
    and alpha 0 it returns a finer source untouched (the centres convention's identity warp); where
    alpha is 1 the detail transfer adds the finer source's detail to the network's pixels."""
    from gdpw.model.config import GeneratorConfig
    from gdpw.model.generator import Generator, GeneratorOutput, composite_at

    torch.manual_seed(0)
    cfg = GeneratorConfig(guidance="geom_disp", base_chns=4, max_chns=8, num_levels=3, alpha_blend=True,
                          warp_convention="centers")
    gen = Generator(cfg).eval()
    img = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = gen(img, geom_disp=0.05 * torch.randn(2, 2, 32, 32))
    assert torch.allclose(composite_at(out, img, "centers"), out.rec_img_d, atol=1e-6)
    fine = torch.rand(1, 3, 128, 128)
    still = GeneratorOutput({}, {"x1": torch.zeros(2, 2, 32, 32)}, img, img, torch.zeros(2, 1, 32, 32), img)
    assert torch.allclose(composite_at(still, fine, "centers"), fine.expand(2, -1, -1, -1), atol=1e-6)
    # alpha 1 and a network that paints the fine source at its own size: the detail transfer gives
    # back the fine source; without it, the network's 32 pixels upsampled
    painted = F.interpolate(fine, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    opaque = GeneratorOutput({}, {"x1": torch.zeros(1, 2, 32, 32)}, painted, painted, torch.ones(1, 1, 32, 32), painted)
    assert torch.allclose(composite_at(opaque, fine, "centers", transfer=1.0), fine, atol=1e-5)
    blurred = composite_at(opaque, fine, "centers", transfer=0.0)
    assert torch.allclose(blurred, F.interpolate(painted, size=(128, 128), mode="bilinear", align_corners=False))
    assert (blurred - fine).abs().mean() > 0.05


def test_paint_stretch_keeps_the_warped_source_where_it_holds() -> None:
    """The demo generator with ``paint_stretch``: where the paint mask is 0 its alpha is 0 and the
    output is the warped source, where it is 1 (the opened mouth, the side turned into view, what the
    head uncovers) the network's own alpha stays; 0 leaves
    the network as it is, and a generator without alpha blending ignores it. The animator passes
    ``AnimateConfig.paint_stretch``: its crops change only where the mask is below 1."""
    from gdpw.model.checkpoint import load_checkpoint
    from gdpw.model.config import GeneratorConfig
    from gdpw.model.generator import Generator
    from gdpw.model.guided import GuidedGenerator
    from gdpw.pipeline.animator import DEMO_CHECKPOINT, source_from_fit

    flame = FLAME()
    checkpoint = load_checkpoint(DEMO_CHECKPOINT)
    gen, size = checkpoint.build_generator().eval(), checkpoint.image_size
    still = FlameSequence(torch.zeros(flame.n_shape), torch.zeros(1, flame.n_expression), torch.zeros(1, 3), torch.zeros(1, 3),
                          torch.zeros(1, 6), torch.tensor([[7.0, 0.0, 0.0]]))
    moved = replace(still, jaw_pose=torch.tensor([[0.3, 0.0, 0.0]]), global_pose=torch.tensor([[0.0, 0.15, 0.0]]))
    clip = render_clip(flame, SynthConfig(size=size, frames_per_clip=1, seed=1), 0, 0)
    img = torch.as_tensor(clip.images[0]).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        vs, vd = still.image_vertices(flame), moved.image_vertices(flame)
        plain = GuidedGenerator(gen, flame.faces)
        guided = GuidedGenerator(gen, flame.faces, paint_stretch=1.5)
        enc = plain.encode(img, vs)
        out0, out1 = plain.decode(enc, vs, vd), guided.decode(enc, vs, vd)
        paint = guided.driving_guidance(vs, vd, (size, size)).paint
        cached = guided.driving_guidance(vs, vd, (size, size), cover_s=guided.source_coverage(vs, (size, size))).paint
    assert paint is not None and cached is not None and torch.equal(paint, cached)  # the source's coverage, once per video
    assert plain.source_coverage(vs, (size, size)) is None
    held, free = paint == 0, paint == 1
    assert held.sum() > 1000 and free.sum() > 200
    assert out0.alpha[held].max() > 0.1  # the network would paint there
    assert out1.alpha[held].max() == 0
    assert torch.allclose(out1.rec_img_d.expand_as(out1.warp_img_s)[held.expand_as(out1.warp_img_s)],
                          out1.warp_img_s[held.expand_as(out1.warp_img_s)])
    assert torch.equal(out1.alpha[free], out0.alpha[free])
    no_alpha = Generator(GeneratorConfig(guidance="geom_disp", base_chns=4, max_chns=8, num_levels=3))
    assert GuidedGenerator(no_alpha, flame.faces, paint_stretch=1.5).paint_stretch == 0

    source = source_from_fit(clip.images[0], still)
    crops = {}
    for stretch in (0.0, 1.5):
        with Animator(AnimateConfig(detail=0, paint_stretch=stretch)) as animator:
            crops[stretch] = animator.animate_fit(source, moved).crops[0].astype(int)
    diff = np.abs(crops[0.0] - crops[1.5]).max(-1)
    assert diff[held[0, 0].numpy()].max() > 20 and diff[free[0, 0].numpy()].max() <= 1


def test_flow_prior_adds_the_displacement_field_to_every_flow() -> None:
    """``flow_prior``: with the flow heads silent the flows are the displacement field at each level
    (the source warped exactly as the mesh moves); without it they are zero. Codes-only guidance
    cannot have it."""
    from gdpw.common.errors import ConfigError
    from gdpw.model.config import GeneratorConfig
    from gdpw.model.generator import Generator

    torch.manual_seed(0)
    img, disp, codes = torch.rand(2, 3, 32, 32), 0.05 * torch.randn(2, 2, 32, 32), torch.rand(2, 16, 32, 32)
    for prior in (True, False):
        cfg = GeneratorConfig(guidance="both", base_chns=4, max_chns=8, num_levels=3, alpha_blend=True,
                              warp_convention="centers", flow_prior=prior)
        gen = Generator(cfg).eval()
        with torch.no_grad():
            for name, layer in gen.up_layers.items():
                if name.endswith("_flow"):
                    layer.weight.zero_()
                    layer.bias.zero_()
            out = gen(img, disp, codes, codes)
        assert set(out.flows) == {"x1", "x2"}
        for name, flow in out.flows.items():
            expected = out.mesh_flows[name] if prior else torch.zeros_like(flow)
            assert torch.allclose(flow, expected, atol=1e-6)
        assert torch.equal(out.mesh_flows["x1"], disp)
    with pytest.raises(ConfigError, match="flow_prior needs the displacement field"):
        GeneratorConfig(guidance="neural_codes", flow_prior=True)


def test_detail_keeps_the_photo_sharp(astronaut: Path) -> None:
    """The demo generator (128 px, alpha blending) on a 512-px photo: with ``detail`` the face crop
    comes back at twice the photo's resolution (up to the cap) and sharper than the network's own
    pixels upscaled."""
    from PIL import Image

    image = np.asarray(Image.open(astronaut))
    crops, frames = {}, {}
    for detail in (0, 512, 4096):
        with Animator(AnimateConfig(detail=detail)) as animator:
            source = animator.prepare_source(image)
            result = animator.animate_fit(source, source.fit)
            crops[detail], frames[detail] = result.crops[0], result.frames[0]
            size = animator.size
            if detail == 4096:  # the frame: composited in the photo, not its crop pasted back
                assert animator.composites_in_frame
                pasted = animator.compose(source, result.crops)[0]
                # a consumer of the frames alone (gdpw animate) gets the same frames, no crops made
                (alone, no_crops), = list(animator.animate_fit_stream(source, source.fit, crops=False))
                assert no_crops is None and np.array_equal(alone, result.frames)
    side = round(2 * source.box.size)  # twice the face's box in the photo
    assert crops[0].shape == (size, size, 3) and crops[512].shape[0] == min(512, side) and crops[4096].shape[0] == side

    def laplacian_var(c: np.ndarray) -> float:  # at twice the network's size: detail beyond its pixels
        g = np.asarray(Image.fromarray(c).convert("L").resize((2 * size, 2 * size), Image.BILINEAR), float)
        return float((g[1:-1, 2:] + g[1:-1, :-2] + g[2:, 1:-1] + g[:-2, 1:-1] - 4 * g[1:-1, 1:-1]).var())

    print(f"sharpness (Laplacian variance at {2 * size} px): {laplacian_var(crops[0]):.1f} without detail, "
          f"{laplacian_var(crops[512]):.1f} with")
    assert laplacian_var(crops[512]) > 2 * laplacian_var(crops[0])
    # in the photo, at its own resolution: composited in it (one resampling) is as the crop pasted back, but sharper
    y0, x0 = max(0, int(source.box.y0)), max(0, int(source.box.x0))
    face = (slice(y0, int(source.box.y0 + source.box.size)), slice(x0, int(source.box.x0 + source.box.size)))

    def photo_var(frame: np.ndarray) -> float:
        g = frame[face].astype(float).mean(-1)
        return float((g[1:-1, 2:] + g[1:-1, :-2] + g[2:, 1:-1] + g[:-2, 1:-1] - 4 * g[1:-1, 1:-1]).var())

    diff = np.abs(frames[4096].astype(float) - pasted).mean()
    print(f"in the photo: composited {photo_var(frames[4096]):.1f}, crop pasted back {photo_var(pasted):.1f}, "
          f"mean |difference| {diff:.2f}")
    assert photo_var(frames[4096]) > 1.1 * photo_var(pasted) and diff < 2.0
