"""Checks of what the page receives: photos and videos within the app's limits, faces counted per image.
Input the page refuses raises AppInputError with a message meant for a person, naming the uploaded file
by its own name rather than the server's temporary path."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metahead.app.settings import AppConfig

MEGABYTE = 1024 * 1024


class AppInputError(ValueError):
    """Input the page refuses; the message is shown as it is."""


def display_name(path: str | os.PathLike) -> str:
    """An uploaded file's own name (uploads sit in the server's temporary folders under their names)."""
    return Path(path).name


def with_upload_names(message: str, paths: Sequence[str | os.PathLike]) -> str:
    """A lower layer's message with the server's paths replaced by the uploaded files' names."""
    for path in sorted({str(p) for p in paths}, key=len, reverse=True):
        message = message.replace(path, display_name(path))
    return message


def check_upload_size(path: Path, cfg: AppConfig) -> None:
    """AppInputError naming the upload if it is missing, empty or larger than max_upload_mb."""
    if not path.is_file():
        raise AppInputError(f"{display_name(path)}: the upload did not arrive; upload it again")
    size = path.stat().st_size
    if size > cfg.max_upload_mb * MEGABYTE:
        raise AppInputError(
            f"{display_name(path)}: {size / MEGABYTE:.1f} MB, "
            f"larger than the {cfg.max_upload_mb:g} MB allowed"
        )
    if size == 0:
        raise AppInputError(f"{display_name(path)}: the file is empty")


def check_photos(paths: Sequence[str | os.PathLike] | None, cfg: AppConfig) -> list[Path]:
    """1 to max_photos readable image files, each within the size limits; AppInputError naming the first
    that is not."""
    from PIL import Image

    from metahead.data.video_io import IMAGE_EXTENSIONS, is_image_file

    paths = [Path(p) for p in paths or []]
    if not paths:
        raise AppInputError(f"upload 1 to {cfg.max_photos} photos of the person, or a video")
    if len(paths) > cfg.max_photos:
        raise AppInputError(f"{len(paths)} photos uploaded; at most {cfg.max_photos} are used: upload fewer")
    for path in paths:
        name = display_name(path)
        if not is_image_file(path):
            allowed = " ".join(sorted(IMAGE_EXTENSIONS))
            raise AppInputError(f"{name}: not a photo (the file name should end in one of {allowed})")
        check_upload_size(path, cfg)
        try:
            with Image.open(path) as image:
                width, height = image.size
                image.verify()  # reads the whole file: a truncated or fake image fails here
        except Exception:  # Pillow raises many types for files that are not images
            raise AppInputError(f"{name}: not an image that can be read (is it really a photo?)") from None
        if width * height > cfg.max_image_pixels:
            raise AppInputError(
                f"{name}: {width}×{height} pixels, more than the {cfg.max_image_pixels / 1e6:g} megapixels "
                "allowed; scale it down"
            )
    return paths


def check_video(path: str | os.PathLike | None, cfg: AppConfig, role: str = "video") -> Any:
    """A readable video within the size and length limits; returns its data.video_io.VideoInfo."""
    from metahead.data.video_io import VIDEO_EXTENSIONS, VideoReadError, iter_video_frames, probe_video

    if path is None:
        raise AppInputError(f"upload a {role}")
    path = Path(path)
    name = display_name(path)
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        allowed = " ".join(sorted(VIDEO_EXTENSIONS))
        raise AppInputError(f"{name}: not a video (the file name should end in one of {allowed})")
    check_upload_size(path, cfg)
    try:
        info = probe_video(path)
        seconds = info.duration or (info.num_frames / info.fps if info.num_frames and info.fps else 0.0)
        if seconds <= 0:  # the container does not say: count frames, up to the limit
            limit = int(cfg.max_video_seconds * (info.fps or 25.0)) + 1
            counted = sum(1 for _ in iter_video_frames(path, max_frames=limit, check_truncation=False))
            seconds = counted / (info.fps or 25.0)
    except VideoReadError as err:
        raise AppInputError(
            f"{name}: not a video that can be read ({with_upload_names(str(err), [path])})"
        ) from None
    if seconds > cfg.max_video_seconds:
        raise AppInputError(
            f"{name}: {seconds:.1f} s long; {role}s of up to {cfg.max_video_seconds:g} s are accepted: "
            "cut it shorter"
        )
    return info


class FaceCountingDetector:
    """A landmark detector that remembers how many faces each image it looked at holds."""

    def __init__(self, detector: Any):
        self.detector = detector
        self.name = getattr(detector, "name", "detector")
        self.counts: list[int] = []

    def detect(self, image: np.ndarray) -> list[Any]:
        faces = [f for f in self.detector.detect(image) if np.isfinite(f.landmarks).all()]
        self.counts.append(len(faces))
        return faces

    def detect_boxes(self, image: np.ndarray) -> list[Any]:
        return self.detector.detect_boxes(image)

    def fit(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        return self.detector.fit(image, box)
