"""Drivers: what animates an avatar (landmark arrays or .npy files, dataset video folders, video files),
turned into landmark sequences at the avatar's crop size."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metahead.avatar.faces import (
    dataset_video_root,
    detector_or_default,
    prepare_settings,
    rescale_landmarks,
    resize_crop,
)
from metahead.data.format import DataError, VideoReader, read_info
from metahead.landmarks.parts import NUM_LANDMARKS

DEFAULT_FPS = 25.0  # for drivers that carry no frame rate (landmark files, dataset folders)


@dataclass
class DrivingSequence:
    """A driver's landmarks at the avatar's crop size, and what the animation needs to know about it."""

    landmarks: np.ndarray  # float32 (F, 68, 2), pixels of a size² crop
    size: int
    fps: float
    source: str
    audio_source: str | None = None  # a file whose audio track the animation keeps
    missing_faces: int = 0  # frames without a detected face, given the last pose seen
    read_frames: Callable[[], Iterator[np.ndarray]] | None = (
        None  # the driver's crops (size², uint8), in order
    )

    def __len__(self) -> int:
        return len(self.landmarks)


def check_landmark_sequence(landmarks: np.ndarray, what: str) -> np.ndarray:
    """Landmarks (F, 68, 2) (or one set (68, 2)) as float32 (F, 68, 2); ValueError naming `what` if not."""
    points = np.asarray(landmarks, dtype=np.float32)
    if points.ndim == 2:
        points = points[None]
    if points.ndim != 3 or points.shape[1:] != (NUM_LANDMARKS, 2) or len(points) == 0:
        raise ValueError(f"{what}: landmarks must have shape (F, 68, 2) with F >= 1, got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"{what}: landmarks contain NaN or inf")
    return points


def hold_last_pose(landmarks: Sequence[np.ndarray | None]) -> tuple[np.ndarray, int]:
    """Fill frames without landmarks (None) with the last landmarks seen (leading ones with the first
    seen); returns (F, 68, 2) and the number of frames filled. ValueError if no frame has landmarks."""
    first = next((m for m in landmarks if m is not None), None)
    if first is None:
        raise ValueError("no frame has landmarks")
    filled, last, missing = [], first, 0
    for m in landmarks:
        if m is None:
            missing += 1
        else:
            last = m
        filled.append(last)
    return np.stack(filled).astype(np.float32), missing


def driving_from_video(
    path: str | os.PathLike,
    size: int,
    detector: Any | None = None,
    prepare_config: Any | None = None,
    max_frames: int | None = None,
) -> DrivingSequence:
    """Track the face through a video and crop it like `metahead prepare` (clip box or smoothed track).

    Frames where no face is found keep the last pose (counted in `missing_faces`); DataError naming the
    file if no frame shows a face.
    """
    from metahead.data.face_crop import crop_boxes, crop_frame, to_crop_coordinates
    from metahead.data.video_io import iter_video_frames, probe_video
    from metahead.landmarks.track import LandmarkTracker, TrackerConfig

    cfg = prepare_settings(size, prepare_config)
    tracker = LandmarkTracker(
        detector_or_default(detector, cfg), TrackerConfig(redetect_every=cfg.redetect_every)
    )
    info = probe_video(path)
    marks: list[np.ndarray | None] = []
    times: list[float] = []
    shape = None
    for frame in iter_video_frames(path, max_frames=max_frames, threads=cfg.decode_threads):
        shape = frame.image.shape
        result = tracker.update(frame.image)
        marks.append(None if result.face is None else result.face.landmarks)
        times.append(frame.time)
    try:
        landmarks, missing = hold_last_pose(marks)
    except ValueError:
        raise DataError(f"{path}: no face detected in any of its {len(marks)} frames") from None
    boxes, _ = crop_boxes(landmarks, np.asarray(times), shape[:2], cfg.crop_config())
    crop_marks = np.stack([to_crop_coordinates(m, b, size) for m, b in zip(landmarks, boxes)])

    def read_frames() -> Iterator[np.ndarray]:
        for frame, box in zip(
            iter_video_frames(path, max_frames=max_frames, threads=cfg.decode_threads), boxes
        ):
            yield crop_frame(frame.image, box, size)

    return DrivingSequence(
        landmarks=crop_marks.astype(np.float32),
        size=size,
        fps=info.fps or DEFAULT_FPS,
        source=str(path),
        audio_source=str(path) if info.has_audio else None,
        missing_faces=missing,
        read_frames=read_frames,
    )


def driving_from_dataset_video(
    folder: str | os.PathLike, size: int, max_frames: int | None = None
) -> DrivingSequence:
    """A stored dataset video (exact landmarks, e.g. synthetic) as a driver, rescaled to size²."""
    root, rel = dataset_video_root(folder)
    reader = VideoReader(root, rel)
    count = len(reader) if max_frames is None else min(len(reader), max_frames)
    if count == 0:
        raise DataError(f"{folder}: the video has no frames")
    source_size = read_info(root).image_size
    landmarks = rescale_landmarks(reader.read_landmarks(range(count)), source_size, size)

    def read_frames() -> Iterator[np.ndarray]:
        for i in range(count):
            yield resize_crop(reader.read_frame(i), size)

    return DrivingSequence(landmarks, size, DEFAULT_FPS, str(folder), read_frames=read_frames)


def driving_sequence(
    driver: str | os.PathLike | np.ndarray | torch.Tensor,
    size: int,
    *,
    landmark_size: int | None = None,
    fps: float | None = None,
    detector: Any | None = None,
    prepare_config: Any | None = None,
    max_frames: int | None = None,
) -> DrivingSequence:
    """A driver from any of: landmarks (F, 68, 2) (array, tensor or .npy file) in pixels of a
    landmark_size² crop (default: the avatar's size); a dataset video folder; a video file."""
    from metahead.data.video_io import is_video_file

    if isinstance(driver, np.ndarray | torch.Tensor):
        points = check_landmark_sequence(np.asarray(driver), "driving landmarks")
        source = "landmarks"
    elif Path(driver).suffix.lower() == ".npy":
        if not Path(driver).is_file():
            raise FileNotFoundError(f"{driver}: no such landmark file")
        try:
            points = check_landmark_sequence(np.load(driver, allow_pickle=False), str(driver))
        except (OSError, ValueError) as err:
            raise DataError(f"{driver}: not a landmark array (F, 68, 2): {err}") from err
        source = str(driver)
    elif Path(driver).is_dir():
        seq = driving_from_dataset_video(driver, size, max_frames)
        if fps:
            seq.fps = fps
        return seq
    elif is_video_file(driver):
        seq = driving_from_video(driver, size, detector, prepare_config, max_frames)
        if fps:
            seq.fps = fps
        return seq
    else:
        raise ValueError(
            f"{driver}: give a video file, a dataset video folder or a .npy of landmarks (F, 68, 2)"
        )
    if max_frames is not None:
        points = points[:max_frames]
    if landmark_size is not None and landmark_size != size:
        points = rescale_landmarks(points, landmark_size, size)
    return DrivingSequence(points, size, fps or DEFAULT_FPS, source)
