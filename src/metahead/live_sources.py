"""Where live frames come from (metahead.live's FrameSource): a video file played as a camera, or a camera.

    source = camera_source(0, fps=25, size=(640, 480))    # a device index: OpenCV, else PyAV's v4l2
    source = camera_source("http://phone:8080/video")     # a stream URL or a device path: PyAV (FFmpeg)
    for index, image in source.frames(): ...              # (H, W, 3) uint8 RGB; CameraLost when it fails

A camera is opened when `frames()` starts and released when it stops; a camera that cannot be opened or
stops delivering raises CameraLost, so that FramePump (metahead.live) opens it again a second later (a
camera unplugged and plugged back). One class per backend (OpenCVCamera, FFmpegCamera) on a shared
`Camera`: the backend opens, reads and releases, `Camera` numbers the frames and turns failures into
CameraLost. Device indices go to OpenCV because PyPI's PyAV wheels bundle an FFmpeg without camera
inputs, while OpenCV's wheels read cameras on Linux (V4L2), macOS (AVFoundation) and Windows (MSMF).

Also here: webcam-like synthetic clips for tests and benchmarks (`synthetic_camera_clip`).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

CAMERA_EXTRA_HINT = "pip install 'metahead[camera]'; in a clone: pip install -e '.[camera]'"


class CameraLost(RuntimeError):
    """The camera stopped delivering frames (unplugged, or the device went away)."""


class FrameSource(Protocol):
    """Frames as they arrive; `frames()` ends when the source is used up, raises CameraLost if it fails."""

    name: str
    fps: float

    def frames(self) -> Iterator[tuple[int, np.ndarray]]: ...


class VideoFileSource:
    """A video file played as a camera: frame i is delivered at i / fps seconds after the start (real time,
    never faster); a slow reader gets the frame due now, the ones it missed are skipped by the loop."""

    def __init__(self, path: str | Path, loop: bool = False, max_frames: int | None = None):
        from metahead.data.video_io import probe_video

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such video file")
        info = probe_video(self.path)
        self.fps = info.fps or 25.0
        self.name = self.path.name
        self.loop = loop
        self.max_frames = max_frames

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        from metahead.data.video_io import iter_video_frames

        start = time.monotonic()
        index = 0
        while True:
            for frame in iter_video_frames(self.path, max_frames=self.max_frames, threads=1):
                wait = start + index / self.fps - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                yield index, frame.image
                index += 1
            if not self.loop:
                return


# =========================================================================================================
# Cameras
# =========================================================================================================


def parse_frame_size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480): width and height."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"a frame size is WIDTHxHEIGHT, e.g. 640x480; got {text!r}")
    return int(parts[0]), int(parts[1])


class Camera(abc.ABC):
    """A camera read frame by frame (a FrameSource). A backend subclass opens the device (`_open`, which
    returns its handle), reads it (`_images`: RGB frames until the camera stops) and releases it
    (`_release`); the errors its library raises are `errors`. Each `frames()` opens the camera anew."""

    errors: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, name: str, fps: float, size: tuple[int, int] | None):
        self.name = name
        self.fps = fps  # asked of the camera (what it delivers may differ)
        self.size = size  # (width, height) asked of the camera; None: its default

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        try:
            handle = self._open()
        except self.errors as err:
            raise CameraLost(f"{self.name}: cannot open the camera: {err}") from err
        index = 0
        try:
            for image in self._images(handle):
                yield index, image
                index += 1
        except self.errors as err:
            raise CameraLost(f"{self.name}: the camera stopped delivering frames: {err}") from err
        finally:
            self._release(handle)
        raise CameraLost(f"{self.name}: the camera stopped delivering frames (unplugged?)")

    @abc.abstractmethod
    def _open(self) -> Any:
        """Open the device (what `_images` and `_release` take); raises one of `errors`."""

    @abc.abstractmethod
    def _images(self, handle: Any) -> Iterator[np.ndarray]:
        """The frames as (H, W, 3) uint8 RGB until the device stops; raises one of `errors`."""

    @abc.abstractmethod
    def _release(self, handle: Any) -> None:
        """Give the device back (also after an error)."""


class OpenCVCamera(Camera):
    """A camera device through OpenCV's VideoCapture (`pip install 'metahead[camera]'`): the system's
    camera API (V4L2, AVFoundation, MSMF). Raises ImportError when OpenCV is not installed."""

    def __init__(self, device: int | str, fps: float = 25.0, size: tuple[int, int] | None = None):
        import cv2

        self.cv2 = cv2
        self.errors = (OSError, cv2.error)
        self.device = device
        super().__init__(f"camera {device}", fps, size)
        # A camera that is unplugged is opened again every second: OpenCV would warn on stderr each time,
        # while the page and the terminal already say that the camera stopped.
        log = getattr(getattr(cv2, "utils", None), "logging", None)
        if log is not None:
            log.setLogLevel(log.LOG_LEVEL_ERROR)

    def _open(self) -> Any:
        capture = self.cv2.VideoCapture(self.device)
        if not capture.isOpened():
            capture.release()
            raise OSError("no such camera, or it is in use (on macOS: allow this terminal to use the camera)")
        capture.set(self.cv2.CAP_PROP_FPS, float(self.fps))
        if self.size is not None:
            capture.set(self.cv2.CAP_PROP_FRAME_WIDTH, float(self.size[0]))
            capture.set(self.cv2.CAP_PROP_FRAME_HEIGHT, float(self.size[1]))
        return capture

    def _images(self, capture: Any) -> Iterator[np.ndarray]:
        while True:
            ok, image = capture.read()
            if not ok or image is None:
                return
            yield np.ascontiguousarray(image[..., 2::-1])  # OpenCV's BGR (or BGRA) to RGB

    def _release(self, capture: Any) -> None:
        capture.release()


class FFmpegCamera(Camera):
    """Any input FFmpeg opens, through PyAV: an http MJPEG stream, rtsp://, a device path; with
    `device_format` (e.g. "v4l2") a camera device, asked for `fps` and `size`."""

    def __init__(
        self,
        url: str,
        fps: float = 25.0,
        size: tuple[int, int] | None = None,
        device_format: str | None = None,
    ):
        import av

        self.errors = (OSError, av.error.FFmpegError)
        self.url = url
        self.format = device_format
        self.options: dict[str, str] = {}
        if device_format is not None:
            self.options["framerate"] = f"{fps:g}"
            if size is not None:
                self.options["video_size"] = f"{size[0]}x{size[1]}"
        super().__init__(url, fps, size)

    def _open(self) -> Any:
        import av

        return av.open(self.url, format=self.format, options=self.options, timeout=5.0)

    def _images(self, container: Any) -> Iterator[np.ndarray]:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")

    def _release(self, container: Any) -> None:
        container.close()


def camera_source(spec: str | int, fps: float = 25.0, size: tuple[int, int] | None = None) -> Camera:
    """The camera `spec` names (nothing is opened yet). A device index (0, 1, …): through OpenCV when it
    is installed, else PyAV's v4l2 input (/dev/videoN) where its FFmpeg has one, else a ValueError that
    says what to install. Anything else (a stream URL, a device path): through PyAV."""
    spec = str(spec).strip()
    if not spec.isdigit():
        return FFmpegCamera(spec, fps, size)
    try:
        return OpenCVCamera(int(spec), fps, size)
    except ImportError as err:
        opencv_missing = f"OpenCV cannot be imported ({err})"
    import av

    if "v4l2" in av.formats_available:
        return FFmpegCamera(f"/dev/video{spec}", fps, size, device_format="v4l2")
    raise ValueError(
        f"camera {spec}: nothing here can open a camera device: {opencv_missing}, and this PyAV build has "
        f"no v4l2 input. Install OpenCV ({CAMERA_EXTRA_HINT}), or give the camera as a stream URL "
        "(--camera http://…)"
    )


# =========================================================================================================
# Synthetic webcam clips (tests, benchmarks, Chromium's fake camera)
# =========================================================================================================


def synthetic_camera_frames(
    seconds: float = 4.0,
    fps: float = 25.0,
    width: int = 320,
    height: int = 240,
    face: int = 200,
    person: int = 0,
    seed: int = 2019,
) -> np.ndarray:
    """Webcam-like frames (F, height, width, 3) of a synthetic person talking (data.synthetic), the face
    `face` px square in the middle of a grey frame: a driver for tests and benchmarks, no real person."""
    from metahead.data.synthetic import render_video

    count = max(1, int(round(seconds * fps)))
    faces, _ = render_video(seed, person, 0, count, face)
    frames = np.full((count, height, width, 3), 96, np.uint8)
    top, left = (height - face) // 2, (width - face) // 2
    frames[:, top : top + face, left : left + face] = faces
    return frames


def synthetic_camera_clip(path: str | Path, seconds: float = 4.0, fps: float = 25.0, **frames: Any) -> Path:
    """`synthetic_camera_frames` written as a clip: .y4m or .mjpeg (what Chromium's fake camera reads) or
    any container write_video_file knows."""
    return write_camera_clip(path, synthetic_camera_frames(seconds, fps, **frames), fps)


def write_camera_clip(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Frames (F, H, W, 3) uint8 as .y4m (raw YUV 4:2:0) or .mjpeg (Chromium's fake-camera formats), or as
    H.264 for other suffixes."""
    import av

    from metahead.data.video_io import write_video_file
    from metahead.fileio import atomic_path

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".y4m", ".mjpeg", ".mjpg"):
        write_video_file(path, frames, fps)
        return path
    from fractions import Fraction

    with atomic_path(path) as tmp:
        fmt, codec, pix = (("yuv4mpegpipe", "rawvideo", "yuv420p") if suffix == ".y4m"
                           else ("mjpeg", "mjpeg", "yuvj420p"))  # fmt: skip
        with av.open(str(tmp), mode="w", format=fmt) as output:
            stream = output.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.height, stream.width = frames.shape[1:3]
            stream.pix_fmt = pix
            for image in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), "rgb24")):
                    output.mux(packet)
            for packet in stream.encode():
                output.mux(packet)
    return path


__all__ = [
    "CAMERA_EXTRA_HINT",
    "Camera",
    "CameraLost",
    "FFmpegCamera",
    "FrameSource",
    "OpenCVCamera",
    "VideoFileSource",
    "camera_source",
    "parse_frame_size",
    "synthetic_camera_clip",
    "synthetic_camera_frames",
    "write_camera_clip",
]
