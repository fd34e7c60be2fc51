"""Preparing one source (a video file, or a folder of photos treated as one "video"): decode, track the
face's 68 landmarks, drop unusable frames, judge the source, crop it and store it (write_video). Bad input
never raises: it becomes a rejected ItemResult with its reason."""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from metahead.data.face_crop import (
    crop_boxes,
    crop_frame,
    face_geometry,
    jitter_stats,
    landmark_jumps,
    to_crop_coordinates,
)
from metahead.data.format import DataError, write_video
from metahead.data.prepare.config import PrepareConfig
from metahead.data.sources import SourceItem, photo_files
from metahead.data.video_io import VideoReadError, iter_video_frames, read_image
from metahead.landmarks.detect import Face, LandmarkDetector, select_face
from metahead.landmarks.track import LandmarkTracker, TrackerConfig

# Why a source can be rejected (rejects.csv "reason"), and why single frames are dropped.
REJECT_REASONS = (
    "unreadable",
    "truncated",
    "no_face",
    "several_faces",
    "face_too_small",
    "too_few_frames",
    "landmark_jumps",
    "worker_crashed",
    "error",
)
FRAME_DROP_REASONS = ("no_landmarks", "face_too_small", "landmark_jump", "unreadable")

# Frames further apart than this are not tracked from one to the next, nor compared for jumps.
MAX_TRACKING_GAP_SECONDS = 0.2


@dataclass
class ItemResult:
    path: str  # stored path (the key)
    source: str
    identity: str
    video: str
    split: str
    status: str  # "ok" or "rejected"
    reason: str = ""
    detail: str = ""
    frames_read: int = 0  # sampled frames decoded
    landmark_frames: int = 0  # of those, frames with landmarks
    frames_kept: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    several_faces: bool = False
    crop_mode: str = ""
    jitter: dict[str, float] = field(default_factory=dict)  # crop coordinates, eye distances
    tracker: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ItemResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


def rejected(item: SourceItem, reason: str, detail: str, **extra: Any) -> ItemResult:
    """The result of a source rejected for `reason` (REJECT_REASONS)."""
    return ItemResult(
        item.path, item.source, item.identity, item.video, item.split, "rejected", reason, detail, **extra
    )


def accepted(item: SourceItem, **extra: Any) -> ItemResult:
    """The result of a source stored in the dataset."""
    return ItemResult(item.path, item.source, item.identity, item.video, item.split, "ok", **extra)


def process_item(item: SourceItem, cfg: PrepareConfig, out: str | os.PathLike, detector: LandmarkDetector):
    """Prepare one source into DATA/videos/<item.path>; never raises for bad input."""
    start = time.perf_counter()
    try:
        if item.kind == "photos":
            result = _process_photos(item, cfg, Path(out), detector)
        else:
            result = _process_video(item, cfg, Path(out), detector)
    except VideoReadError as err:
        result = rejected(item, err.reason, str(err))
    except DataError as err:
        result = rejected(item, "unreadable", str(err))
    except Exception as err:  # noqa: BLE001 (one bad source must not stop a run over a million)
        tail = traceback.format_exc(limit=-3).strip().replace("\n", " | ")
        result = rejected(item, "error", f"{type(err).__name__}: {err} [{tail}]")
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def _judge(
    item: SourceItem,
    cfg: PrepareConfig,
    has_face: np.ndarray,
    too_small: np.ndarray,
    jumps: np.ndarray,
    min_frames: int,
    stats: dict[str, Any],
) -> ItemResult | None:
    """The reject verdict for a source from its per-frame flags, or None to keep it."""
    usable = has_face & ~too_small
    kept = usable & ~jumps
    if not has_face.any():
        return rejected(item, "no_face", "no face found in any frame", **stats)
    if usable.sum() < min_frames and too_small.any():
        return rejected(
            item,
            "face_too_small",
            f"{int(too_small.sum())} frames with a face under {cfg.min_face_size} px",
            **stats,
        )
    if jumps.sum() > cfg.max_jump_fraction * max(int(usable.sum()), 1):
        return rejected(
            item, "landmark_jumps", f"{int(jumps.sum())} of {int(usable.sum())} frames jump", **stats
        )
    if kept.sum() < min_frames:
        return rejected(
            item, "too_few_frames", f"{int(kept.sum())} usable frames, need {min_frames}", **stats
        )
    return None


def _drop_counts(has_face: np.ndarray, too_small: np.ndarray, jumps: np.ndarray, unreadable: int = 0):
    drops = {
        "no_landmarks": int((~has_face).sum()),
        "face_too_small": int((has_face & too_small).sum()),
        "landmark_jump": int(jumps.sum()),
        "unreadable": unreadable,
    }
    return {k: v for k, v in drops.items() if v}


def _process_video(item: SourceItem, cfg: PrepareConfig, out: Path, detector: LandmarkDetector) -> ItemResult:
    sparse = cfg.fps is not None and 1.0 / cfg.fps > MAX_TRACKING_GAP_SECONDS
    tracker = LandmarkTracker(
        detector,
        TrackerConfig(
            redetect_every=0 if sparse else cfg.redetect_every,
            select="largest" if cfg.select == "reject" else cfg.select,
        ),
    )
    times: list[float] = []
    faces: list[Face | None] = []
    relations: list[np.ndarray | None] = []
    images: list[np.ndarray] | None = []
    held_bytes = 0
    several = False
    frame_shape = None
    for frame in iter_video_frames(item.source, cfg.fps, cfg.max_frames, cfg.decode_threads):
        if frame_shape is None:
            frame_shape = frame.image.shape
        elif frame.image.shape != frame_shape:
            raise DataError(f"{item.source}: frame size changes from {frame_shape} to {frame.image.shape}")
        result = tracker.update(frame.image)
        several = several or (result.num_faces or 0) > 1
        times.append(frame.time)
        faces.append(result.face)
        relations.append(tracker.relation)
        if images is not None:
            held_bytes += frame.image.nbytes
            if held_bytes > cfg.frame_memory_mb * 2**20:
                images = None  # too long to hold: decode again for the crops
            else:
                images.append(frame.image)

    tracker_stats = dict(tracker.stats)
    if images is not None and not sparse:
        tracker_stats["backfilled"] = _track_backwards(faces, relations, times, images, tracker)
    marks = [None if f is None else f.landmarks for f in faces]
    n = len(marks)
    has_face = np.array([m is not None for m in marks], dtype=bool)
    landmarks = np.stack([m if m is not None else np.full((68, 2), np.nan, np.float32) for m in marks])
    sizes = np.array([face_geometry(m)[1] if m is not None else 0.0 for m in marks])
    too_small = has_face & (sizes < cfg.min_face_size)
    times_arr = np.asarray(times, dtype=np.float64)
    usable_idx = np.flatnonzero(has_face & ~too_small)
    jumps = np.zeros(n, dtype=bool)
    if len(usable_idx) > 1:
        jumps[usable_idx] = landmark_jumps(
            landmarks[usable_idx], times_arr[usable_idx], cfg.max_landmark_jump, MAX_TRACKING_GAP_SECONDS
        )
    stats = dict(
        frames_read=n,
        landmark_frames=int(has_face.sum()),
        drops=_drop_counts(has_face, too_small, jumps),
        several_faces=several,
        tracker=tracker_stats,
    )
    if several and cfg.select == "reject":
        return rejected(item, "several_faces", "a detection found more than one face", **stats)
    verdict = _judge(item, cfg, has_face, too_small, jumps, cfg.min_frames, stats)
    if verdict is not None:
        return verdict

    kept = np.flatnonzero(has_face & ~too_small & ~jumps)
    boxes, mode = crop_boxes(landmarks[kept], times_arr[kept], frame_shape[:2], cfg.crop_config())
    crop_marks = np.stack([to_crop_coordinates(landmarks[i], box, cfg.size) for i, box in zip(kept, boxes)])
    box_of = dict(zip(kept.tolist(), boxes))

    def crops() -> Iterable[np.ndarray]:
        if images is not None:
            for i in kept:
                yield crop_frame(images[i], box_of[int(i)], cfg.size)
            return
        wanted = set(box_of)
        for position, frame in enumerate(
            iter_video_frames(item.source, cfg.fps, cfg.max_frames, cfg.decode_threads)
        ):
            if position in wanted:
                yield crop_frame(frame.image, box_of[position], cfg.size)

    count = write_video(out, item.path, crops(), crop_marks, cfg.codec, cfg.quality)
    consecutive = np.diff(kept) == 1
    return accepted(
        item, frames_kept=count, crop_mode=mode, jitter=jitter_stats(crop_marks, consecutive), **stats
    )


def _track_backwards(
    faces: list[Face | None],
    relations: list[np.ndarray | None],
    times: list[float],
    images: list[np.ndarray],
    tracker: LandmarkTracker,
) -> int:
    """Fill the frames before each (re)acquired track by following it backwards in time: the frontal
    detector often finds a face only once it turns towards the camera. Returns the frames filled."""
    back = LandmarkTracker(tracker.detector, tracker.config)
    filled = 0
    for start in range(1, len(faces)):
        if faces[start] is None or faces[start - 1] is not None:
            continue
        back.seed(faces[start], relations[start])
        j = start - 1
        while j >= 0 and faces[j] is None and times[j + 1] - times[j] <= MAX_TRACKING_GAP_SECONDS:
            face = back.follow(images[j])
            if face is None:
                break
            faces[j], relations[j] = face, back.relation
            filled += 1
            j -= 1
    return filled


def _process_photos(
    item: SourceItem, cfg: PrepareConfig, out: Path, detector: LandmarkDetector
) -> ItemResult:
    files = photo_files(item)
    crops: list[np.ndarray] = []
    crop_marks: list[np.ndarray] = []
    has_face, too_small = [], []
    unreadable = 0
    several = False
    detail = ""
    crop_cfg = cfg.crop_config("frame")
    for file in files:
        try:
            image = read_image(file)
        except DataError as err:
            unreadable += 1
            detail = str(err)
            continue
        faces = [f for f in detector.detect(image) if np.isfinite(f.landmarks).all()]
        several = several or len(faces) > 1
        face = select_face(faces, image.shape, "largest" if cfg.select == "reject" else cfg.select)
        has_face.append(face is not None)
        small = face is not None and face_geometry(face.landmarks)[1] < cfg.min_face_size
        too_small.append(small)
        if face is None or small:
            continue
        (box,), _ = crop_boxes(face.landmarks[None], np.zeros(1), image.shape[:2], crop_cfg)
        crops.append(crop_frame(image, box, cfg.size))
        crop_marks.append(to_crop_coordinates(face.landmarks, box, cfg.size))
    has_face_arr, small_arr = np.array(has_face, dtype=bool), np.array(too_small, dtype=bool)
    jumps = np.zeros(len(has_face), dtype=bool)
    stats = dict(
        frames_read=len(has_face),
        landmark_frames=int(has_face_arr.sum()),
        drops=_drop_counts(has_face_arr, small_arr, jumps, unreadable),
        several_faces=several,
    )
    if not has_face:
        return rejected(item, "unreadable", detail or f"{item.source}: no readable image", **stats)
    if several and cfg.select == "reject":
        return rejected(item, "several_faces", "a photo shows more than one face", **stats)
    verdict = _judge(item, cfg, has_face_arr, small_arr, jumps, cfg.min_photos, stats)
    if verdict is not None:
        return verdict
    count = write_video(out, item.path, crops, np.stack(crop_marks), cfg.codec, cfg.quality)
    return accepted(item, frames_kept=count, crop_mode="frame", **stats)
