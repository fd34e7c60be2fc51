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
import operator
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
VIDEOS = "videos"  # DATA/videos/<path>/...
SPLITS = ("train", "test", "dev")
FRAME_CODECS = ("jpeg", "png")


class DataError(ValueError):
    """Bad data on disk; the message names the file and the problem."""


class DataWarning(UserWarning):
    """Data that is skipped so that training can go on (e.g. a video too short for an episode)."""


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
        raise DataError(
            f"{path}: missing; is {root} a metahead dataset (made by `metahead synth` or `prepare`)?"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: malformed dataset description: {err}") from err
    if not isinstance(raw, dict):
        raise DataError(f"{path}: malformed dataset description: expected a JSON object")
    # Name and version first: a newer format may add fields this version does not know.
    if raw.get("format") != FORMAT_NAME:
        raise DataError(f"{path}: format is {raw.get('format')!r}, expected {FORMAT_NAME!r}")
    version = raw.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DataError(f"{path}: format version {version!r} is not a positive integer")
    if version > FORMAT_VERSION:
        raise DataError(
            f"{path}: format version {version} is newer than this metahead reads ({FORMAT_VERSION}); "
            "update metahead"
        )
    try:
        info = DatasetInfo(**raw)
    except TypeError as err:
        raise DataError(f"{path}: malformed dataset description: {err}") from err
    if not isinstance(info.image_size, int) or isinstance(info.image_size, bool) or info.image_size < 1:
        raise DataError(f"{path}: image_size {info.image_size!r} is not a positive integer")
    if info.frame_codec not in FRAME_CODECS:
        raise DataError(f"{path}: frame_codec {info.frame_codec!r} is not one of {FRAME_CODECS}")
    return info


def _record_problem(rec: VideoRecord) -> str | None:
    """Why a record cannot be in a manifest, or None."""
    if not rec.identity or not rec.video or not rec.path:
        return "identity, video and path must be non-empty"
    if rec.split not in SPLITS:
        return f"split {rec.split!r} is not one of {SPLITS}"
    if rec.num_frames < 0:
        return f"num_frames {rec.num_frames} is negative"
    # Plain string tests: a VoxCeleb2 manifest has a million rows.
    if rec.path.startswith("/") or "\\" in rec.path or ".." in rec.path.split("/"):
        return f"path {rec.path!r} must be relative to videos/, with / separators and no '..'"
    return None


def write_manifest(root: str | os.PathLike, records: Iterable[VideoRecord]) -> None:
    names = [f.name for f in fields(VideoRecord)]
    path = Path(root) / MANIFEST
    records = list(records)
    for rec in records:
        problem = _record_problem(rec)
        if problem:
            raise ValueError(f"{path}: cannot write {rec}: {problem}")
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        writer.writerows((rec.identity, rec.video, rec.split, rec.num_frames, rec.path) for rec in records)


def read_manifest(root: str | os.PathLike, split: str | None = None) -> list[VideoRecord]:
    path = Path(root) / MANIFEST
    if not path.exists():
        raise DataError(f"{path}: manifest missing")
    names = [f.name for f in fields(VideoRecord)]
    records = []
    seen: dict[tuple[str, str], int] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: manifest is empty (no header)")
            missing = set(names) - set(header)
            if missing:
                raise DataError(
                    f"{path}: manifest lacks columns {sorted(missing)} (header: {header}; "
                    f"expected {','.join(names)})"
                )
            fields_of = operator.itemgetter(*(header.index(name) for name in names))
            for row in reader:
                if not row:  # a blank line
                    continue
                line = reader.line_num
                if len(row) != len(header):
                    raise DataError(f"{path}:{line}: malformed row {row}: {len(header)} fields expected")
                identity, video, row_split, num_frames, rel_path = fields_of(row)
                try:
                    rec = VideoRecord(identity, video, row_split, int(num_frames), rel_path)
                except ValueError as err:
                    raise DataError(f"{path}:{line}: malformed row {row}: {err}") from err
                problem = _record_problem(rec)
                if problem:
                    raise DataError(f"{path}:{line}: malformed row {row}: {problem}")
                key = (identity, video)
                if key in seen:
                    raise DataError(
                        f"{path}:{line}: video {identity}/{video} already listed on line {seen[key]}"
                    )
                seen[key] = line
                if split is None or row_split == split:
                    records.append(rec)
    except (csv.Error, UnicodeDecodeError) as err:
        raise DataError(f"{path}: malformed manifest: {err}") from err
    return records


def video_dir(root: str | os.PathLike, rel_path: str) -> Path:
    return Path(root) / VIDEOS / rel_path


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
    try:
        offsets = [0]
        shape = None
        with open(tmp / "frames.bin", "wb") as f:
            for frame in frames:
                frame = np.asarray(frame)
                if shape is not None and frame.shape != shape:
                    raise ValueError(
                        f"{final}: frame {len(offsets) - 1} has shape {frame.shape}, frame 0 {shape}"
                    )
                shape = frame.shape
                data = encode_image(frame, codec, quality)
                f.write(data)
                offsets.append(offsets[-1] + len(data))
        landmarks = np.asarray(landmarks, dtype=np.float32)
        count = len(offsets) - 1
        if landmarks.shape != (count, 68, 2):
            raise ValueError(
                f"{final}: landmarks shape {landmarks.shape} does not match {count} frames x 68 x 2"
            )
        if not np.isfinite(landmarks).all():
            raise ValueError(f"{final}: landmarks contain NaN or inf")
        np.save(tmp / "frames.idx.npy", np.asarray(offsets, dtype=np.int64))
        np.save(tmp / "landmarks.npy", landmarks)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
        self.offsets = _load_array(idx_path)
        self.landmarks = _load_array(lm_path, mmap_mode="r")
        offsets = self.offsets
        if (
            offsets.ndim != 1
            or len(offsets) < 1
            or not np.issubdtype(offsets.dtype, np.integer)
            or offsets[0] != 0
            or (np.diff(offsets) < 0).any()
        ):
            raise DataError(f"{idx_path}: not a frame index (1-D integers from 0, non-decreasing)")
        n = len(self.offsets) - 1
        if self.landmarks.ndim != 3 or self.landmarks.shape[1:] != (68, 2):
            raise DataError(f"{lm_path}: landmarks have shape {self.landmarks.shape}, expected (N, 68, 2)")
        if self.landmarks.shape[0] != n:
            raise DataError(f"{lm_path}: {self.landmarks.shape[0]} landmark sets for {n} frames")
        if expected_frames is not None and expected_frames != n:
            raise DataError(f"{self.dir}: holds {n} frames, the manifest says {expected_frames}")
        if not np.issubdtype(self.landmarks.dtype, np.floating):
            raise DataError(f"{lm_path}: landmarks are {self.landmarks.dtype}, expected float")
        size = self._bin.stat().st_size
        if self.offsets[-1] != size:
            state = "truncated" if size < self.offsets[-1] else "longer than indexed"
            raise DataError(f"{self._bin}: {size} bytes, the index expects {self.offsets[-1]} ({state})")
        self.num_frames = n
        self._lm_path = lm_path

    def __len__(self) -> int:
        return self.num_frames

    def read_frame(self, index: int) -> np.ndarray:
        return self.read_frames([index])[0]

    def read_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Decode the frames at `indices` (any order, repeats allowed): (len, H, W, 3) uint8."""
        indices = [int(i) for i in indices]
        for index in indices:
            if not 0 <= index < self.num_frames:
                raise IndexError(f"{self.dir}: frame {index} out of range (0..{self.num_frames - 1})")
        frames = []
        shape = None
        with open(self._bin, "rb") as f:
            for index in indices:
                start, stop = int(self.offsets[index]), int(self.offsets[index + 1])
                f.seek(start)
                frame = _decode_frame(f.read(stop - start), self._bin, index)
                if shape is not None and frame.shape != shape:
                    raise DataError(
                        f"{self._bin}: frame {index} is {frame.shape}, frame {indices[0]} is {shape}"
                    )
                shape = frame.shape
                frames.append(frame)
        return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)

    def read_landmarks(self, indices: Sequence[int]) -> np.ndarray:
        """The landmarks of the frames at `indices`: (len, 68, 2) float32."""
        try:
            points = np.asarray(self.landmarks[np.asarray(indices, dtype=np.int64)], dtype=np.float32)
        except (ValueError, OSError) as err:  # e.g. a file truncated after it was opened
            raise DataError(f"{self._lm_path}: unreadable: {err}") from err
        if not np.isfinite(points).all():
            raise DataError(f"{self._lm_path}: landmarks of frames {list(indices)} contain NaN or inf")
        return points


def _load_array(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: unreadable or corrupt: {err}") from err


def _decode_frame(data: bytes, path: Path, index: int) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        # PIL reports bad data as OSError/UnidentifiedImageError, and some decoders as SyntaxError.
        raise DataError(f"{path}: frame {index} is corrupt: {err}") from err


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
