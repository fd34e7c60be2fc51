"""Reading and writing real media: videos through PyAV (which bundles FFmpeg) and still images through Pillow.

Reading yields RGB uint8 frames (H, W, 3) with their source index and time, optionally sampled to a
lower frame rate (VoxCeleb1 was used at 1 fps, VoxCeleb2 at all 25 fps). Writing makes an H.264/yuv420p
mp4 atomically, optionally with the audio track of another file (for `animate`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps

from metahead.data.format import DataError
from metahead.fileio import atomic_path

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

# A stream that yields fewer than this fraction of the frames its header promises is called truncated.
TRUNCATION_TOLERANCE = 0.9

# Containers that take an H.264 stream, and the audio codecs each can hold without re-encoding.
_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
_REMUXABLE_AUDIO = {
    "mp4": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"},
    "mov": {"aac", "mp3", "alac", "ac3", "pcm_s16le", "pcm_s24le"},
    "matroska": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac", "vorbis", "pcm_s16le"},
}


class VideoReadError(DataError):
    """A video that cannot be decoded; `reason` is "unreadable" (nothing decodes) or "truncated"."""

    def __init__(self, message: str, reason: str = "unreadable"):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    num_frames: int  # as the container declares it; 0 when unknown
    duration: float  # seconds; 0 when unknown
    has_audio: bool


@dataclass(frozen=True)
class VideoFrame:
    index: int  # index of the frame in the source stream (before sampling)
    time: float  # seconds from the stream's first frame
    image: np.ndarray  # uint8 (H, W, 3) RGB


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def natural_key(name: str) -> list:
    """Sort key under which frame_2 comes before frame_10."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside `folder`, in natural order."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 RGB (H, W, 3), turned upright by its EXIF orientation."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: unreadable image: {err}") from err


def _open_input(path: str | os.PathLike):
    if not Path(path).is_file():
        raise VideoReadError(f"{path}: no such file")
    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as err:
        raise VideoReadError(f"{path}: cannot open as a video: {err}") from err


def _stream_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """What the container says about its first video stream (decodes nothing)."""
    container = _open_input(path)
    try:
        if not container.streams.video:
            raise VideoReadError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        fps = _stream_fps(stream)
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        frames = int(stream.frames or 0)
        if frames == 0 and duration > 0 and fps > 0:
            frames = int(round(duration * fps))
        return VideoInfo(
            path=str(path),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=fps,
            num_frames=frames,
            duration=duration,
            has_audio=bool(container.streams.audio),
        )
    finally:
        container.close()


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display-matrix rotation (phones film sideways and store the turn as metadata)."""
    turns = (int(round(rotation / 90.0)) % 4) if rotation else 0
    return np.ascontiguousarray(np.rot90(image, k=turns)) if turns else image


def iter_video_frames(
    path: str | os.PathLike,
    fps: float | None = None,
    max_frames: int | None = None,
    threads: int = 0,
    check_truncation: bool = True,
) -> Iterator[VideoFrame]:
    """Decode a video's frames in order.

    fps: sample to at most this rate (the first frame of every 1/fps interval is kept); None keeps all.
    max_frames: stop after this many kept frames.
    threads: decoder threads, 0 for FFmpeg's choice (use 1 inside worker processes).
    Raises VideoReadError("unreadable") if nothing decodes, ("truncated") if decoding fails part way or
    the stream ends well short of the frame count its header declares.
    """
    if fps is not None and fps <= 0:
        raise ValueError(f"sampling fps must be positive, got {fps}")
    container = _open_input(path)
    try:
        if not container.streams.video:
            raise VideoReadError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        declared = int(stream.frames or 0)
        source_fps = _stream_fps(stream) or 25.0
        decoded = 0
        kept = 0
        first_time: float | None = None
        last_slot = -1
        try:
            for frame in container.decode(stream):
                index = decoded
                decoded += 1
                t = float(frame.time) if frame.time is not None else index / source_fps
                if first_time is None:
                    first_time = t
                t -= first_time
                if fps is not None:
                    # Half a source frame of slack keeps 25 fps sampled at 25 fps from dropping frames to
                    # rounding in the timestamps.
                    slot = int(np.floor((t + 0.5 / source_fps) * fps))
                    if slot <= last_slot:
                        continue
                    last_slot = slot
                image = frame.to_ndarray(format="rgb24")
                yield VideoFrame(index=index, time=t, image=_upright(image, getattr(frame, "rotation", 0)))
                kept += 1
                if max_frames is not None and kept >= max_frames:
                    return
        except (av.error.FFmpegError, ValueError, MemoryError) as err:
            reason = "truncated" if decoded > 0 else "unreadable"
            raise VideoReadError(f"{path}: decoding failed after {decoded} frames: {err}", reason) from err
        if decoded == 0:
            raise VideoReadError(f"{path}: no frame decodes")
        if check_truncation and declared > 0 and decoded < TRUNCATION_TOLERANCE * declared:
            raise VideoReadError(
                f"{path}: only {decoded} of the {declared} frames its header declares decode", "truncated"
            )
    finally:
        container.close()


def _even(image: np.ndarray) -> np.ndarray:
    """Pad odd sizes by one edge pixel: yuv420p needs even width and height."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class _AudioCopy:
    """The first audio track of a file, copied into an output container (re-encoded to AAC only when the
    container cannot hold its codec). The stream must be added before the output's first packet."""

    def __init__(self, source: str | os.PathLike, container_format: str):
        self.source = source
        self.src = _open_input(source)
        self.in_audio = self.src.streams.audio[0] if self.src.streams.audio else None
        codec = self.in_audio.codec_context.name if self.in_audio is not None else ""
        self.remux = codec in _REMUXABLE_AUDIO.get(container_format, set())
        self.out_audio = None

    def add_stream(self, output) -> None:
        if self.in_audio is None:
            return
        try:
            if self.remux:
                self.out_audio = output.add_stream_from_template(self.in_audio)
            else:
                self.out_audio = output.add_stream(
                    "aac", rate=self.in_audio.codec_context.sample_rate or 44100
                )
        except (av.error.FFmpegError, ValueError) as err:
            raise VideoReadError(f"{self.source}: cannot copy its audio track: {err}") from err

    def mux(self, output, max_seconds: float | None) -> None:
        if self.out_audio is None:
            return
        try:
            if self.remux:
                for packet in self.src.demux(self.in_audio):
                    if packet.dts is None:  # the demuxer's flush packet
                        continue
                    if max_seconds is not None and packet.pts is not None and packet.time_base is not None:
                        if float(packet.pts * packet.time_base) >= max_seconds:
                            break
                    packet.stream = self.out_audio
                    output.mux(packet)
                return
            for frame in self.src.decode(self.in_audio):
                if max_seconds is not None and frame.time is not None and frame.time >= max_seconds:
                    break
                frame.pts = None
                for packet in self.out_audio.encode(frame):
                    output.mux(packet)
            for packet in self.out_audio.encode(None):
                output.mux(packet)
        except av.error.FFmpegError as err:
            raise VideoReadError(f"{self.source}: cannot copy its audio track: {err}") from err

    def close(self) -> None:
        self.src.close()


def enlarge_frames(frames: np.ndarray, scale: int) -> np.ndarray:
    """(F, H, W, 3) uint8 -> (F, scale·H, scale·W, 3), bicubic (small models' frames are tiny in a video or
    on a page); scale <= 1 returns the frames as they are."""
    if scale <= 1:
        return frames
    height, width = frames.shape[1:3]
    size = (width * scale, height * scale)
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BICUBIC)) for f in frames])


def write_video_file(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    audio_from: str | os.PathLike | None = None,
    crf: int = 18,
    trim_audio: bool = True,
) -> int:
    """Encode uint8 RGB frames (H, W, 3) as H.264/yuv420p into .mp4/.mov/.mkv; returns the frame count.

    The file appears only when complete. Odd sizes are padded by one edge pixel (yuv420p needs even).
    audio_from: copy that file's first audio track (re-encoded to AAC only when the container needs it),
    cut at the video's length when trim_audio.
    """
    path = Path(path)
    container_format = _CONTAINERS.get(path.suffix.lower())
    if container_format is None:
        raise ValueError(
            f"{path}: cannot write H.264 video to a {path.suffix!r} file; use .mp4, .mov or .mkv"
        )
    if fps <= 0:
        raise ValueError(f"{path}: fps must be positive, got {fps}")
    rate = Fraction(fps).limit_denominator(1001)
    count = 0
    audio = _AudioCopy(audio_from, container_format) if audio_from is not None else None
    try:
        with atomic_path(path) as tmp:
            # faststart puts the index first, so browsers can play the file while it loads.
            options = {"movflags": "+faststart"} if container_format in ("mp4", "mov") else {}
            output = av.open(str(tmp), mode="w", format=container_format, options=options)
            try:
                stream = None
                size = None
                for frame in frames:
                    image = np.asarray(frame)
                    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                        raise ValueError(
                            f"{path}: frames must be HxWx3 uint8, got {image.dtype} {image.shape}"
                        )
                    image = _even(np.ascontiguousarray(image))
                    if stream is None:
                        size = image.shape[:2]
                        stream = output.add_stream("libx264", rate=rate)
                        stream.height, stream.width = size
                        stream.pix_fmt = "yuv420p"
                        stream.options = {"crf": str(crf), "preset": "medium"}
                        if audio is not None:
                            audio.add_stream(output)
                    elif image.shape[:2] != size:
                        raise ValueError(f"{path}: frame {count} is {image.shape[:2]}, the first was {size}")
                    for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                        output.mux(packet)
                    count += 1
                if stream is None:
                    raise ValueError(f"{path}: no frames to write")
                for packet in stream.encode(None):
                    output.mux(packet)
                if audio is not None:
                    audio.mux(output, count / float(rate) if trim_audio else None)
            finally:
                output.close()
            os.chmod(tmp, 0o644)  # the temporary file was private (mkstemp); the video is for viewing
    finally:
        if audio is not None:
            audio.close()
    return count
