"""Reading and writing videos with PyAV (H.264 mp4, AAC audio)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from gdpw.common.errors import VideoError
from gdpw.common.files import atomic_path

MAX_IMAGE_SIDE = 2048  # images are read with their largest side at most this (memory stays bounded)


@dataclass
class VideoInfo:
    fps: float
    frames: int  # as counted while reading (0 if unknown)
    width: int
    height: int
    has_audio: bool


def _open(path: str | os.PathLike[str]):  # type: ignore[no-untyped-def]
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video not found: {path}")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoError(f"{path}: not a readable video ({err})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    return container


def read_video(path: str | os.PathLike[str], max_frames: int | None = None) -> tuple[np.ndarray, VideoInfo]:
    """All frames (T, H, W, 3) uint8 RGB and the stream's info."""
    frames = list(iter_video(path, max_frames))
    container = _open(path)
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or 25)
    info = VideoInfo(fps, len(frames), stream.width, stream.height, bool(container.streams.audio))
    container.close()
    if not frames:
        raise VideoError(f"{path}: has no decodable frames")
    return np.stack(frames), info


def iter_video(path: str | os.PathLike[str], max_frames: int | None = None) -> Iterator[np.ndarray]:
    import av

    container = _open(path)
    try:
        n = 0
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")
            n += 1
            if max_frames is not None and n >= max_frames:
                break
    except av.error.FFmpegError as err:
        raise VideoError(f"{path}: corrupt video stream ({err})") from None
    finally:
        container.close()


def write_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    fps: float,
    audio_from: str | os.PathLike[str] | None = None,
    crf: int = 18,
) -> int:
    """Write RGB uint8 frames as H.264 (yuv420p) mp4; copy the audio of ``audio_from`` as AAC.

    Odd frame sizes are padded by one pixel. Written to a temporary name, then renamed, so a
    failure leaves nothing half-written. Returns the number of frames.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        return _encode(tmp, path, frames, fps, audio_from, crf)


def _encode(tmp: Path, path: Path, frames: Iterable[np.ndarray], fps: float, audio_from: str | os.PathLike[str] | None, crf: int) -> int:
    import av

    n = 0
    out = av.open(str(tmp), mode="w", format="mp4")
    try:
        rate = Fraction(fps).limit_denominator(1001)
        vstream = out.add_stream("libx264", rate=rate)
        vstream.pix_fmt = "yuv420p"
        vstream.options = {"crf": str(crf), "preset": "medium"}
        astream = resampler = None
        src = None
        if audio_from is not None:
            src = av.open(str(audio_from))
            if src.streams.audio:
                in_audio = src.streams.audio[0]
                astream = out.add_stream("aac", rate=in_audio.rate or 44100)
                resampler = av.AudioResampler(format="fltp", layout="stereo", rate=astream.rate)
            else:
                src.close()
                src = None
        for img in frames:
            img = np.ascontiguousarray(img)
            h, w = img.shape[:2]
            if h % 2 or w % 2:
                img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            if n == 0:
                vstream.height, vstream.width = img.shape[:2]
                vstream.options = {**vstream.options, "rc-lookahead": str(_lookahead(*img.shape[:2]))}
            for packet in vstream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
            n += 1
        if n == 0:
            raise VideoError(f"no frames to write to {path}")
        for packet in vstream.encode():
            out.mux(packet)
        if src is not None and astream is not None and resampler is not None:
            duration = n / fps
            for frame in src.decode(audio=0):
                if frame.time is not None and frame.time > duration:
                    break
                for rf in resampler.resample(frame):
                    for packet in astream.encode(rf):
                        out.mux(packet)
            for packet in astream.encode():
                out.mux(packet)
            src.close()
    except BaseException:
        try:
            out.close()
        except Exception:  # closing a failed container can raise again (a full disk): the temporary file goes anyway
            pass
        raise
    out.close()
    return n


def _lookahead(height: int, width: int) -> int:
    """libx264's look-ahead in frames: its default 40 up to 1080p, fewer for larger frames (it holds
    about 11 MB per look-ahead frame of 4 MP: 40 of them would add 450 MB)."""
    return int(np.clip(40 * 1920 * 1080 // (height * width), 10, 40))


def write_y4m(path: str | os.PathLike[str], frames: Iterable[np.ndarray], fps: float) -> int:
    """Write RGB uint8 frames (even sides) as an uncompressed YUV4MPEG2 (4:2:0, BT.601 video range)
    clip, the format of Chromium's fake camera (``--use-file-for-fake-video-capture``). Returns
    the number of frames."""
    n = 0
    with open(path, "wb") as f:
        for frame in frames:
            h, w = frame.shape[:2]
            if h % 2 or w % 2:
                raise VideoError(f"y4m frames need even sides, got {w}x{h}")
            if n == 0:
                f.write(f"YUV4MPEG2 W{w} H{h} F{round(fps * 1000)}:1000 Ip A1:1 C420\n".encode())
            rgb = frame[..., :3].astype(np.float32)
            y = 16 + 219 / 255 * (rgb @ np.array([0.299, 0.587, 0.114], np.float32))
            u = 128 + 224 / 255 * (rgb @ np.array([-0.168736, -0.331264, 0.5], np.float32))
            v = 128 + 224 / 255 * (rgb @ np.array([0.5, -0.418688, -0.081312], np.float32))
            f.write(b"FRAME\n")
            for plane in (y, _half(u), _half(v)):
                f.write(np.clip(plane + 0.5, 0, 255).astype(np.uint8).tobytes())
            n += 1
    return n


def _half(plane: np.ndarray) -> np.ndarray:
    """A plane at half resolution (2x2 means): 4:2:0 chroma."""
    h, w = plane.shape
    return plane.reshape(h // 2, 2, w // 2, 2).mean((1, 3))


def read_image(path: str | os.PathLike[str], max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """An RGB uint8 image as it is shown (EXIF orientation applied; 16-bit, float, grayscale and
    palette images converted), its largest side capped at ``max_side`` pixels (large JPEGs are
    decoded at a reduced scale, so memory stays bounded); a clear error for missing or unreadable files."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            if max(im.size) > max_side:
                im.draft("RGB", (max_side, max_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit or float grey levels
                grey = np.asarray(im, dtype=np.float64)
                top = {"I": 65535.0 if grey.max() > 255 else 255.0, "F": 1.0 if grey.max() <= 1 else 255.0}.get(im.mode, 65535.0)
                im = Image.fromarray(np.clip(grey / top * 255 + 0.5, 0, 255).astype(np.uint8))
            im = im.convert("RGB")
            if max(im.size) > max_side:
                im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            return np.asarray(im).copy()
    except UnidentifiedImageError:
        raise VideoError(f"{path}: not a readable image (unknown format, or corrupt)") from None
    except (OSError, Image.DecompressionBombError, ValueError) as err:
        raise VideoError(f"{path}: not a readable image ({err})") from None
