"""A whole synthetic corpus in the dataset format (metahead.data.format), split by identity.

Every video is a pure function of (seed, identity, video), so the corpus is the same whatever the number
of worker processes, and a rerun into a finished or half-finished folder only makes what is missing.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from metahead.config import SynthConfig
from metahead.data.format import (
    DataError,
    DatasetInfo,
    VideoReader,
    VideoRecord,
    read_info,
    write_info,
    write_manifest,
    write_video,
)
from metahead.data.synthetic.identity import Identity, sample_identity
from metahead.data.synthetic.motion import Motion, sample_motion
from metahead.data.synthetic.render import VideoRenderer
from metahead.data.synthetic.scene import VideoStyle, sample_video_style
from metahead.fileio import atomic_write_text

SETTINGS_FILE = "synthetic.json"  # the generator settings, so a rerun cannot mix two corpora
GENERATOR_VERSION = 1  # bump when the same seed would render different pixels
_IDENTITY_STREAM, _VIDEO_STREAM, _SPLIT_STREAM = 0, 1, 2


def identity_name(index: int) -> str:
    return f"synth{index:05d}"


def video_name(identity_index: int, video_index: int) -> str:
    return f"{identity_name(identity_index)}_v{video_index:02d}"


def make_identity(seed: int, identity_index: int) -> Identity:
    return sample_identity(np.random.default_rng([seed, _IDENTITY_STREAM, identity_index]))


def make_video(
    seed: int, identity_index: int, video_index: int, num_frames: int, size: int, supersample: int = 2
) -> tuple[VideoRenderer, Motion]:
    """The renderer (person + setting) and the motion of one video; deterministic in its arguments."""
    identity = make_identity(seed, identity_index)
    rng = np.random.default_rng([seed, _VIDEO_STREAM, identity_index, video_index])
    style: VideoStyle = sample_video_style(rng, identity.masculinity)
    motion = sample_motion(rng, num_frames, identity)
    return VideoRenderer(identity, style, size, supersample), motion


def render_video(
    seed: int, identity_index: int, video_index: int, num_frames: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(frames (T, S, S, 3) uint8, landmarks (T, 68, 2) float32) of one video, in memory."""
    renderer, motion = make_video(seed, identity_index, video_index, num_frames, size)
    frames = np.stack([frame.image for frame in renderer.render(motion)])
    return frames, renderer.landmarks(motion)


def split_identities(cfg: SynthConfig) -> list[str]:
    """The split of each identity: test_fraction of them (at least one when there are two or more)."""
    count = cfg.identities
    num_test = int(round(cfg.test_fraction * count))
    if cfg.test_fraction > 0 and count >= 2:
        num_test = min(max(num_test, 1), count - 1)
    test = set(np.random.default_rng([cfg.seed, _SPLIT_STREAM]).permutation(count)[:num_test].tolist())
    return ["test" if i in test else "train" for i in range(count)]


@dataclass(frozen=True)
class _Job:
    root: str
    seed: int
    identity_index: int
    video_index: int
    num_frames: int
    size: int


def _make_and_write(job: _Job) -> int:
    renderer, motion = make_video(job.seed, job.identity_index, job.video_index, job.num_frames, job.size)
    landmarks = renderer.landmarks(motion)
    rel = f"{identity_name(job.identity_index)}/{video_name(job.identity_index, job.video_index)}"
    return write_video(
        job.root, rel, (frame.image for frame in renderer.render(motion)), landmarks, codec="jpeg"
    )


def _is_complete(root: Path, rel: str, num_frames: int) -> bool:
    try:
        VideoReader(root, rel, expected_frames=num_frames)
    except DataError:
        return False
    return True


def _check_settings(root: Path, cfg: SynthConfig) -> None:
    """Refuse to resume into a folder made with other settings; record ours."""
    settings = {
        "generator_version": GENERATOR_VERSION,
        "seed": cfg.seed,
        "frames": cfg.frames,
        "size": cfg.size,
    }
    info_path = root / "dataset.json"
    if info_path.exists():
        info = read_info(root)
        if info.image_size != cfg.size or info.source != "synthetic":
            raise DataError(
                f"{info_path}: holds a {info.source or 'non-synthetic'} dataset at {info.image_size}px; "
                f"choose another folder for a synthetic corpus at {cfg.size}px"
            )
    path = root / SETTINGS_FILE
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: malformed: {err}") from err
        changed = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if changed:
            detail = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
            raise DataError(
                f"{path}: this folder was generated with other settings ({detail}); use a new folder"
            )
    settings["config"] = asdict(cfg)
    atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


def generate_corpus(
    out: str | os.PathLike, cfg: SynthConfig, workers: int = 1, progress: bool = True
) -> list[VideoRecord]:
    """Write cfg.identities x cfg.videos_per_identity videos of cfg.frames frames at cfg.size² into `out`.

    Identity names are synth00000, ..., videos synth00000_v00, ...; test_fraction of the identities go to
    the "test" split, the rest to "train". Videos already complete in `out` are kept (resumable).
    """
    if cfg.identities < 1 or cfg.videos_per_identity < 1 or cfg.frames < 1:
        raise ValueError(
            f"need at least one identity, video and frame (got {cfg.identities}, "
            f"{cfg.videos_per_identity}, {cfg.frames})"
        )
    if not 16 <= cfg.size <= 1024:
        raise ValueError(
            f"image size must be between 16 and 1024 (64 to 256 is the tested range), got {cfg.size}"
        )
    if not 0.0 <= cfg.test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {cfg.test_fraction}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    _check_settings(root, cfg)
    write_info(root, DatasetInfo(image_size=cfg.size, frame_codec="jpeg", source="synthetic"))

    splits = split_identities(cfg)
    records, jobs = [], []
    for i in range(cfg.identities):
        for v in range(cfg.videos_per_identity):
            rel = f"{identity_name(i)}/{video_name(i, v)}"
            records.append(VideoRecord(identity_name(i), video_name(i, v), splits[i], cfg.frames, rel))
            if not _is_complete(root, rel, cfg.frames):
                jobs.append(_Job(str(root), cfg.seed, i, v, cfg.frames, cfg.size))

    bar = tqdm(
        total=len(records),
        initial=len(records) - len(jobs),
        unit="video",
        desc=f"synth {root.name}",
        disable=not progress,
    )
    with bar:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                _make_and_write(job)
                bar.update(1)
        else:
            # spawn: workers start clean (no inherited locks or thread pools from the parent).
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                for _ in pool.map(_make_and_write, jobs, chunksize=1):
                    bar.update(1)
    write_manifest(root, records)
    return records
