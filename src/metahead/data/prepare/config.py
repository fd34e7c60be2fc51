"""`metahead prepare`'s settings (PrepareConfig), the ones a resumed run must keep, and its default
landmark detector."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from metahead.data.face_crop import CropConfig
from metahead.landmarks.detect import LandmarkDetector, make_detector


@dataclass
class PrepareConfig:
    size: int = 256
    fps: float | None = None  # sample videos to this rate; None keeps every frame
    max_frames: int | None = None  # per video, after sampling
    min_frames: int = 8  # fewer usable frames than this rejects a video (K + 1 = 9 in the paper)
    min_photos: int = 1  # the same for a photo folder
    codec: str = "jpeg"
    quality: int = 95
    margin: float = 2.2  # crop side / face size (see face_crop.CropConfig)
    crop_mode: str = "auto"
    smooth_seconds: float = 1.0
    overflow: str = "shift"
    select: str = "largest"  # several faces: follow the "largest" or most "central", or "reject" the video
    min_face_size: float = 64.0  # source pixels (face_crop.face_geometry: about the face's width)
    max_landmark_jump: float = 0.25  # eye distances (face_crop.landmark_jumps)
    max_jump_fraction: float = 0.2  # more jumping frames than this rejects the video
    detector: str = "dlib"
    detector_options: dict[str, Any] = field(default_factory=dict)
    redetect_every: int = 10  # frames between detector checks while tracking
    decode_threads: int = 0  # 0: FFmpeg's choice (worker processes use 1)
    frame_memory_mb: int = 1024  # frames above this per video are decoded twice instead of held

    def __post_init__(self) -> None:
        if self.select not in ("largest", "central", "reject"):
            raise ValueError(f"face selection must be largest, central or reject, got {self.select!r}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.min_frames < 1 or self.min_photos < 1:
            raise ValueError("min_frames and min_photos must be at least 1")
        self.crop_config("auto")  # validates the crop options

    def crop_config(self, mode: str | None = None) -> CropConfig:
        return CropConfig(
            size=self.size,
            margin=self.margin,
            mode=mode or self.crop_mode,
            smooth_seconds=self.smooth_seconds,
            overflow=self.overflow,
        )


# Options that change what is stored: a resumed run must use the same ones.
OUTPUT_OPTIONS = (
    "size",
    "fps",
    "max_frames",
    "min_frames",
    "min_photos",
    "codec",
    "quality",
    "margin",
    "crop_mode",
    "smooth_seconds",
    "overflow",
    "select",
    "min_face_size",
    "max_landmark_jump",
    "max_jump_fraction",
    "detector",
)


def default_detector_factory(cfg: PrepareConfig) -> Callable[[], LandmarkDetector]:
    return functools.partial(make_detector, cfg.detector, **cfg.detector_options)
