"""`metahead prepare`: real videos and photo folders into the dataset format (data.format).

Per source (a video file, or a folder of photos treated as one "video"): decode (sampled to --fps),
find and track the face's 68 landmarks, drop frames without landmarks, with too small a face or with
an implausible landmark jump, choose a stable square crop over the clip, resize to --size, store the
frames and the landmarks in crop coordinates (write_video: the folder appears only when complete).

At scale: `workers` processes; `shard=(i, n)` takes a hash share of the sources so a job array can
split VoxCeleb2 across machines; every finished source appends one JSON line to
DATA/progress/shard-i-of-n.jsonl, so a rerun skips what is done and a crash loses only the sources in
flight. Without shards, the run ends by writing manifest.csv, rejects.csv and prepare-summary.json;
with shards, `merge_shards` does that once all shards are done. Bad input never stops the run: it is
counted by reason and listed in rejects.csv.
"""

from __future__ import annotations

import concurrent.futures as futures
import csv
import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from metahead.data.face_crop import (
    CropConfig,
    crop_boxes,
    crop_frame,
    face_geometry,
    jitter_stats,
    landmark_jumps,
    to_crop_coordinates,
)
from metahead.data.format import (
    INFO,
    DataError,
    DatasetInfo,
    VideoRecord,
    read_info,
    video_dir,
    write_info,
    write_manifest,
    write_video,
)
from metahead.data.sources import SourceItem, photo_files, shard_items
from metahead.data.video_io import VideoReadError, iter_video_frames, read_image
from metahead.fileio import atomic_path, atomic_write_text
from metahead.landmarks.detect import Face, LandmarkDetector, make_detector, select_face
from metahead.landmarks.track import LandmarkTracker, TrackerConfig

PROGRESS_DIR = "progress"
OPTIONS_FILE = "prepare.json"
REJECTS_FILE = "rejects.csv"
SUMMARY_FILE = "prepare-summary.json"

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
_OUTPUT_OPTIONS = (
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


def _rejected(item: SourceItem, reason: str, detail: str, **extra: Any) -> ItemResult:
    return ItemResult(
        item.path, item.source, item.identity, item.video, item.split, "rejected", reason, detail, **extra
    )


def _accepted(item: SourceItem, **extra: Any) -> ItemResult:
    return ItemResult(item.path, item.source, item.identity, item.video, item.split, "ok", **extra)


def default_detector_factory(cfg: PrepareConfig) -> Callable[[], LandmarkDetector]:
    return functools.partial(make_detector, cfg.detector, **cfg.detector_options)


# ---------------------------------------------------------------------------------------------------
# One source


def process_item(item: SourceItem, cfg: PrepareConfig, out: str | os.PathLike, detector: LandmarkDetector):
    """Prepare one source into DATA/videos/<item.path>; never raises for bad input."""
    start = time.perf_counter()
    try:
        if item.kind == "photos":
            result = _process_photos(item, cfg, Path(out), detector)
        else:
            result = _process_video(item, cfg, Path(out), detector)
    except VideoReadError as err:
        result = _rejected(item, err.reason, str(err))
    except DataError as err:
        result = _rejected(item, "unreadable", str(err))
    except Exception as err:  # noqa: BLE001 (one bad source must not stop a run over a million)
        tail = traceback.format_exc(limit=-3).strip().replace("\n", " | ")
        result = _rejected(item, "error", f"{type(err).__name__}: {err} [{tail}]")
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
        return _rejected(item, "no_face", "no face found in any frame", **stats)
    if usable.sum() < min_frames and too_small.any():
        return _rejected(
            item,
            "face_too_small",
            f"{int(too_small.sum())} frames with a face under {cfg.min_face_size} px",
            **stats,
        )
    if jumps.sum() > cfg.max_jump_fraction * max(int(usable.sum()), 1):
        return _rejected(
            item, "landmark_jumps", f"{int(jumps.sum())} of {int(usable.sum())} frames jump", **stats
        )
    if kept.sum() < min_frames:
        return _rejected(
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
        return _rejected(item, "several_faces", "a detection found more than one face", **stats)
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
    return _accepted(
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
        return _rejected(item, "unreadable", detail or f"{item.source}: no readable image", **stats)
    if several and cfg.select == "reject":
        return _rejected(item, "several_faces", "a photo shows more than one face", **stats)
    verdict = _judge(item, cfg, has_face_arr, small_arr, jumps, cfg.min_photos, stats)
    if verdict is not None:
        return verdict
    count = write_video(out, item.path, crops, np.stack(crop_marks), cfg.codec, cfg.quality)
    return _accepted(item, frames_kept=count, crop_mode="frame", **stats)


# ---------------------------------------------------------------------------------------------------
# Worker processes. Each holds its own detector (dlib objects do not cross processes); this module-level
# slot is set once per worker by the pool's initializer and is never used in the main process.

_worker_state: dict[str, Any] = {}


def _init_worker(cfg: PrepareConfig, out: str, detector_factory: Callable[[], LandmarkDetector]) -> None:
    _worker_state.update(cfg=cfg, out=out, detector=detector_factory())


def _work(item: SourceItem) -> ItemResult:
    return process_item(item, _worker_state["cfg"], _worker_state["out"], _worker_state["detector"])


# ---------------------------------------------------------------------------------------------------
# Progress files, options, outputs


def progress_path(out: str | os.PathLike, shard: tuple[int, int]) -> Path:
    index, count = shard
    return Path(out) / PROGRESS_DIR / f"shard-{index:05d}-of-{count:05d}.jsonl"


def read_progress(out: str | os.PathLike) -> dict[str, ItemResult]:
    """Every finished source recorded under DATA/progress (all shards); an "ok" outranks a reject and a
    later line an earlier one. A torn last line (a crash mid-write) is ignored."""
    done: dict[str, ItemResult] = {}
    folder = Path(out) / PROGRESS_DIR
    if not folder.is_dir():
        return done
    for file in sorted(folder.glob("*.jsonl")):
        with open(file) as f:
            for line in f:
                try:
                    result = ItemResult.from_dict(json.loads(line))
                except (json.JSONDecodeError, TypeError):
                    continue
                previous = done.get(result.path)
                if previous is None or result.status == "ok" or previous.status != "ok":
                    done[result.path] = result
    return done


class _ProgressLog:
    """Appends one JSON line per finished source and syncs it: a crash loses only sources in flight."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a")

    def append(self, result: ItemResult) -> None:
        self._file.write(json.dumps(asdict(result), sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def _check_options(out: Path, cfg: PrepareConfig) -> None:
    """Record the run's options; refuse to add to a folder prepared with different ones."""
    options_path = out / OPTIONS_FILE
    wanted = {k: getattr(cfg, k) for k in _OUTPUT_OPTIONS}
    if options_path.exists():
        try:
            stored = json.loads(options_path.read_text())["options"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(
                f"{options_path}: unreadable ({err}); delete it only if {out} is disposable"
            ) from err
        changed = {k: (stored.get(k), v) for k, v in wanted.items() if stored.get(k) != v}
        if changed:
            listing = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
            raise DataError(
                f"{out} was prepared with other options ({listing}); use them again or a new --out"
            )
        return
    if (out / INFO).exists():
        raise DataError(f"{out} already holds a dataset not made by `metahead prepare`; choose a new --out")
    atomic_write_text(options_path, json.dumps({"options": wanted}, indent=2) + "\n")


def write_outputs(out: str | os.PathLike, results: Iterable[ItemResult]) -> tuple[int, int]:
    """manifest.csv (kept videos whose folders exist) and rejects.csv; returns (videos, rejects)."""
    out = Path(out)
    records, rejects = [], []
    splits_of: dict[str, set[str]] = {}
    for r in sorted(results, key=lambda r: r.path):
        if r.status == "ok" and video_dir(out, r.path).is_dir():
            records.append(VideoRecord(r.identity, r.video, r.split, r.frames_kept, r.path))
            splits_of.setdefault(r.identity, set()).add(r.split)
        elif r.status != "ok":
            rejects.append(r)
    mixed = sorted(i for i, s in splits_of.items() if len(s) > 1)
    if mixed:
        raise DataError(
            f"{out}: identities {mixed[:5]} have videos in more than one split; were shards or a resumed "
            "run given different inputs or split options?"
        )
    write_manifest(out, records)
    with atomic_path(out / REJECTS_FILE) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "path", "identity", "video", "reason", "detail"])
        for r in rejects:
            writer.writerow([r.source, r.path, r.identity, r.video, r.reason, r.detail])
    return len(records), len(rejects)


def summarise(results: Sequence[ItemResult], seconds: float | None = None) -> dict[str, Any]:
    """Counts by outcome and reason, frame totals, landmark coverage and jitter over the results."""
    ok = [r for r in results if r.status == "ok"]
    frames_read = sum(r.frames_read for r in results)
    drops: Counter[str] = Counter()
    for r in results:
        drops.update(r.drops)
    jitters = [r.jitter.get("jitter_median") for r in ok if r.jitter.get("pairs", 0) >= 2]
    jitters = [j for j in jitters if j is not None and np.isfinite(j)]
    summary: dict[str, Any] = {
        "sources": len(results),
        "videos_ok": len(ok),
        "rejected": len(results) - len(ok),
        "rejects_by_reason": dict(sorted(Counter(r.reason for r in results if r.status != "ok").items())),
        "frames_read": frames_read,
        "frames_kept": sum(r.frames_kept for r in ok),
        "frame_drops_by_reason": dict(sorted(drops.items())),
        "landmark_coverage": (sum(r.landmark_frames for r in results) / frames_read) if frames_read else None,
        "videos_with_several_faces": sum(r.several_faces for r in results),
        "jitter_median_of_videos": float(np.median(jitters)) if jitters else None,
        "crop_modes": dict(sorted(Counter(r.crop_mode for r in ok).items())),
    }
    if seconds is not None:
        summary["seconds"] = round(seconds, 2)
        summary["videos_per_second"] = round(len(results) / seconds, 3) if seconds > 0 else None
        summary["frames_per_second"] = round(frames_read / seconds, 2) if seconds > 0 else None
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"{summary['videos_ok']} videos prepared, {summary['rejected']} rejected of {summary['sources']}"
    ]
    for reason, count in summary["rejects_by_reason"].items():
        lines.append(f"  rejected {reason}: {count}")
    lines.append(f"frames: {summary['frames_read']} read, {summary['frames_kept']} kept")
    for reason, count in summary["frame_drops_by_reason"].items():
        lines.append(f"  frames dropped {reason}: {count}")
    if summary.get("landmark_coverage") is not None:
        lines.append(f"landmarks on {100 * summary['landmark_coverage']:.2f}% of frames read")
    if summary.get("jitter_median_of_videos") is not None:
        lines.append(
            f"landmark jitter (median of videos): {summary['jitter_median_of_videos']:.4f} eye distances"
        )
    if summary.get("seconds") is not None:
        lines.append(
            f"{summary['seconds']} s: {summary['videos_per_second']} videos/s, "
            f"{summary['frames_per_second']} frames/s"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# The run


def prepare_dataset(
    items: Sequence[SourceItem],
    out: str | os.PathLike,
    cfg: PrepareConfig,
    *,
    workers: int = 1,
    shard: tuple[int, int] = (0, 1),
    retry_rejects: bool = False,
    detector_factory: Callable[[], LandmarkDetector] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Prepare this shard's share of `items` (splits already assigned) into `out`; returns the summary.

    Sources already recorded as done under out/progress are skipped (rejected ones too, unless
    retry_rejects). With one shard the run ends by writing the manifest, rejects.csv and the summary.
    """
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_options(out, cfg)
    write_info(out, DatasetInfo(image_size=cfg.size, frame_codec=cfg.codec, source="metahead prepare"))
    factory = detector_factory or default_detector_factory(cfg)
    mine = shard_items(items, *shard)
    done = read_progress(out)
    todo = [
        it
        for it in mine
        if not (
            it.path in done
            and (
                done[it.path].status == "ok"
                and video_dir(out, it.path).is_dir()
                or done[it.path].status != "ok"
                and not retry_rejects
            )
        )
    ]
    log = _ProgressLog(progress_path(out, shard))
    results: list[ItemResult] = []
    frames = 0
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="video", disable=not progress, dynamic_ncols=True, smoothing=0.1)

    def record(result: ItemResult) -> None:
        nonlocal frames
        log.append(result)
        results.append(result)
        frames += result.frames_read
        elapsed = max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(
            {"frames/s": f"{frames / elapsed:.1f}", "rejected": sum(r.status != "ok" for r in results)}
        )
        bar.update(1)

    try:
        if workers <= 1:
            detector = factory()
            for item in todo:
                record(process_item(item, cfg, out, detector))
        else:
            _run_pool(todo, cfg, out, factory, workers, record)
    finally:
        bar.close()
        log.close()
    seconds = time.perf_counter() - start
    summary = summarise(results, seconds)
    summary["skipped_as_done"] = len(mine) - len(todo)
    summary["shard"] = f"{shard[0]}/{shard[1]}"
    if shard[1] == 1:
        all_results = list(read_progress(out).values())
        write_outputs(out, all_results)
        summary["dataset"] = summarise(all_results)
        atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    else:
        atomic_write_text(
            progress_path(out, shard).with_suffix(".summary.json"), json.dumps(summary, indent=2) + "\n"
        )
    return summary


def _run_pool(
    todo: Sequence[SourceItem],
    cfg: PrepareConfig,
    out: Path,
    factory: Callable[[], LandmarkDetector],
    workers: int,
    record: Callable[[ItemResult], None],
) -> None:
    """Keep `workers` processes busy with a bounded queue (a million sources must not mean a million
    futures); a crashed worker costs only the sources in flight, recorded as "worker_crashed"."""
    worker_cfg = PrepareConfig(**{**asdict(cfg), "decode_threads": 1})
    context = multiprocessing.get_context("spawn")  # no fork of a parent that may hold threads
    pending = list(reversed(todo))
    while pending:
        pool = futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(worker_cfg, str(out), factory)
        )
        in_flight: dict[futures.Future, SourceItem] = {}
        try:
            while pending or in_flight:
                while (
                    pending and len(in_flight) < workers + 1
                ):  # one queued: busy, yet little lost in a crash
                    item = pending.pop()
                    in_flight[pool.submit(_work, item)] = item
                finished, _ = futures.wait(in_flight, return_when=futures.FIRST_COMPLETED)
                for fut in finished:
                    result = fut.result()  # raises BrokenProcessPool with the item still in flight
                    del in_flight[fut]
                    record(result)
        except futures.process.BrokenProcessPool as err:
            for item in in_flight.values():
                record(_rejected(item, "worker_crashed", f"a worker process died: {err}"))
            pool.shutdown(wait=False, cancel_futures=True)
            continue
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()


# ---------------------------------------------------------------------------------------------------
# Merging shards


def merge_shards(out: str | os.PathLike, sources: Sequence[str | os.PathLike] = ()) -> dict[str, Any]:
    """Write manifest.csv, rejects.csv and the summary of a sharded run.

    Shards that wrote into `out` itself need nothing more; shards that wrote into their own folders
    (`sources`) have their videos moved into out/videos and their progress files copied into
    out/progress first. All folders must have been prepared with the same options.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for src in map(Path, sources):
        if src.resolve() == out.resolve():
            continue
        if not (src / PROGRESS_DIR).is_dir():
            raise DataError(f"{src}: no {PROGRESS_DIR}/ folder; is it a `metahead prepare --shard` output?")
        src_options = json.loads((src / OPTIONS_FILE).read_text()) if (src / OPTIONS_FILE).exists() else None
        if (out / OPTIONS_FILE).exists():
            if src_options != json.loads((out / OPTIONS_FILE).read_text()):
                raise DataError(f"{src} was prepared with other options than {out} ({OPTIONS_FILE} differs)")
        elif src_options is not None:
            atomic_write_text(out / OPTIONS_FILE, json.dumps(src_options, indent=2) + "\n")
            shutil.copyfile(src / INFO, out / INFO)
        for ok in (r for r in read_progress(src).values() if r.status == "ok"):
            source_dir, target_dir = video_dir(src, ok.path), video_dir(out, ok.path)
            if source_dir.is_dir():
                target_dir.parent.mkdir(parents=True, exist_ok=True)
                if target_dir.exists():
                    shutil.rmtree(target_dir)
                shutil.move(str(source_dir), str(target_dir))
        for file in sorted((src / PROGRESS_DIR).glob("*.jsonl")):
            tag = hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:10]
            target = out / PROGRESS_DIR / f"{file.stem}.from-{tag}.jsonl"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
    read_info(out)  # a clear error if there is no dataset here at all
    results = list(read_progress(out).values())
    if not results:
        raise DataError(f"{out}/{PROGRESS_DIR}: no progress records to merge")
    write_outputs(out, results)
    summary = {"dataset": summarise(results)}
    atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary["dataset"]
