"""The on-disk dataset format, shared by synthetic and real data (documented in docs/data-format.md).

    DATA/
      dataset.json                 {"format": "metahead-dataset", "version": 1, "image_size": S, ...}
      manifest.csv                 identity,video,split,num_frames,path  (one row per video)
      videos/<path>/frames.bin     the frames' encoded images (JPEG or PNG), concatenated
      videos/<path>/frames.idx.npy int64 byte offsets, num_frames + 1 of them
      videos/<path>/landmarks.npy  float32 (num_frames, 68, 2), x/y in crop pixels

One packed file per video keeps VoxCeleb2 (~1M utterances) at three files per video, and the offset
index lets an episode decode only the K+1 frames it draws.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image

from metahead.fileio import atomic_path, atomic_write_text

FORMAT_NAME = "metahead-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.csv"
INFO = "dataset.json"
SPLITS = ("train", "test", "dev")


class DataError(ValueError):
    """Bad data on disk; the message names the file and the problem."""


@dataclass(frozen=True)
class VideoRecord:
    identity: str
    video: str
    split: str
    num_frames: int
    path: str  # relative to DATA/videos


@dataclass
class DatasetInfo:
    image_size: int
    frame_codec: str = "jpeg"
    source: str = ""
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION


def write_info(root: str | os.PathLike, info: DatasetInfo) -> None:
    Path(root).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(root) / INFO, json.dumps(asdict(info), indent=2) + "\n")


def read_info(root: str | os.PathLike) -> DatasetInfo:
    path = Path(root) / INFO
    if not path.exists():
        raise DataError(f"{path}: missing; is {root} a metahead dataset (made by `metahead synth` or `prepare`)?")
    try:
        raw = json.loads(path.read_text())
        info = DatasetInfo(**raw)
    except (json.JSONDecodeError, TypeError) as err:
        raise DataError(f"{path}: malformed dataset description: {err}") from err
    if info.format != FORMAT_NAME:
        raise DataError(f"{path}: format is {info.format!r}, expected {FORMAT_NAME!r}")
    if info.version > FORMAT_VERSION:
        raise DataError(f"{path}: format version {info.version} is newer than this metahead ({FORMAT_VERSION})")
    return info


def write_manifest(root: str | os.PathLike, records: Iterable[VideoRecord]) -> None:
    names = [f.name for f in fields(VideoRecord)]
    with atomic_path(Path(root) / MANIFEST) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for rec in records:
            writer.writerow(asdict(rec))


def read_manifest(root: str | os.PathLike, split: str | None = None) -> list[VideoRecord]:
    path = Path(root) / MANIFEST
    if not path.exists():
        raise DataError(f"{path}: manifest missing")
    names = [f.name for f in fields(VideoRecord)]
    records = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise DataError(f"{path}: manifest is empty (no header)")
        missing = set(names) - set(reader.fieldnames)
        if missing:
            raise DataError(f"{path}: manifest lacks columns {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            try:
                rec = VideoRecord(
                    identity=row["identity"],
                    video=row["video"],
                    split=row["split"],
                    num_frames=int(row["num_frames"]),
                    path=row["path"],
                )
            except (TypeError, ValueError) as err:
                raise DataError(f"{path}:{line}: malformed row {row}: {err}") from err
            if not rec.identity or not rec.video or not rec.path or rec.num_frames < 0:
                raise DataError(f"{path}:{line}: malformed row {row}")
            if split is None or rec.split == split:
                records.append(rec)
    return records


def video_dir(root: str | os.PathLike, rel_path: str) -> Path:
    return Path(root) / "videos" / rel_path


def encode_image(image: np.ndarray, codec: str = "jpeg", quality: int = 95) -> bytes:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"frames must be HxWx3 uint8, got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    if codec == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    elif codec == "png":
        Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    else:
        raise ValueError(f"unknown frame codec {codec!r}")
    return buf.getvalue()


def write_video(
    root: str | os.PathLike,
    rel_path: str,
    frames: Iterable[np.ndarray],
    landmarks: np.ndarray,
    codec: str = "jpeg",
    quality: int = 95,
) -> int:
    """Write one video's frames and landmarks; the folder appears only when complete. Returns frame count."""
    final = video_dir(root, rel_path)
    tmp = final.with_name(final.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    offsets = [0]
    with open(tmp / "frames.bin", "wb") as f:
        for frame in frames:
            data = encode_image(frame, codec, quality)
            f.write(data)
            offsets.append(offsets[-1] + len(data))
    landmarks = np.asarray(landmarks, dtype=np.float32)
    count = len(offsets) - 1
    if landmarks.shape != (count, 68, 2):
        shutil.rmtree(tmp)
        raise ValueError(f"{final}: landmarks shape {landmarks.shape} does not match {count} frames x 68 x 2")
    np.save(tmp / "frames.idx.npy", np.asarray(offsets, dtype=np.int64))
    np.save(tmp / "landmarks.npy", landmarks)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return count


class VideoReader:
    """Random access to one stored video: decodes only the frames asked for."""

    def __init__(self, root: str | os.PathLike, rel_path: str, expected_frames: int | None = None):
        self.dir = video_dir(root, rel_path)
        if not self.dir.is_dir():
            raise DataError(f"{self.dir}: video folder missing")
        self._bin = self.dir / "frames.bin"
        idx_path = self.dir / "frames.idx.npy"
        lm_path = self.dir / "landmarks.npy"
        for p in (self._bin, idx_path, lm_path):
            if not p.exists():
                raise DataError(f"{p}: missing")
        try:
            self.offsets = np.load(idx_path)
            self.landmarks = np.load(lm_path, mmap_mode="r")
        except (ValueError, OSError) as err:
            raise DataError(f"{self.dir}: unreadable index or landmarks: {err}") from err
        n = len(self.offsets) - 1
        if self.landmarks.ndim != 3 or self.landmarks.shape[1:] != (68, 2):
            raise DataError(f"{lm_path}: landmarks have shape {self.landmarks.shape}, expected (N, 68, 2)")
        if self.landmarks.shape[0] != n:
            raise DataError(f"{lm_path}: {self.landmarks.shape[0]} landmark sets for {n} frames")
        if expected_frames is not None and expected_frames != n:
            raise DataError(f"{self.dir}: holds {n} frames, the manifest says {expected_frames}")
        size = self._bin.stat().st_size
        if n > 0 and self.offsets[-1] != size:
            raise DataError(f"{self._bin}: {size} bytes, the index expects {self.offsets[-1]} (truncated?)")
        self.num_frames = n

    def __len__(self) -> int:
        return self.num_frames

    def read_frame(self, index: int) -> np.ndarray:
        if not 0 <= index < self.num_frames:
            raise IndexError(f"{self.dir}: frame {index} out of range (0..{self.num_frames - 1})")
        start, stop = int(self.offsets[index]), int(self.offsets[index + 1])
        with open(self._bin, "rb") as f:
            f.seek(start)
            data = f.read(stop - start)
        try:
            with Image.open(io.BytesIO(data)) as img:
                return np.asarray(img.convert("RGB"))
        except (OSError, ValueError) as err:
            raise DataError(f"{self._bin}: frame {index} is corrupt: {err}") from err

    def read_frames(self, indices: Sequence[int]) -> np.ndarray:
        return np.stack([self.read_frame(int(i)) for i in indices])

    def read_landmarks(self, indices: Sequence[int]) -> np.ndarray:
        return np.asarray(self.landmarks[np.asarray(indices)], dtype=np.float32)


class Dataset:
    """A dataset folder: its description, manifest and videos."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.info = read_info(self.root)
        self.records = read_manifest(self.root)
        if not self.records:
            raise DataError(f"{self.root / MANIFEST}: manifest lists no videos")

    def split(self, name: str) -> list[VideoRecord]:
        return [r for r in self.records if r.split == name]

    def reader(self, record: VideoRecord) -> VideoReader:
        return VideoReader(self.root, record.path, record.num_frames)
