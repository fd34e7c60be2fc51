"""An avatar's inputs: photos, a video or a stored dataset video -> the T face crops and their landmarks.

The crops are made the way `metahead prepare` crops photos and clips (data.face_crop, with prepare's
settings) at the model's image size.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metahead.data.format import DataError, VideoReader


class InputWarning(UserWarning):
    """Input that was used with a fallback (e.g. the largest of several faces in a photo)."""


@dataclass
class FaceFrames:
    """Frames of one person, cropped as `metahead prepare` crops them, with their landmarks."""

    frames: np.ndarray  # uint8 (T, S, S, 3)
    landmarks: np.ndarray  # float32 (T, 68, 2), crop pixels
    sources: list[str]  # where each frame came from ("photo.jpg", "clip.mp4 frame 12")

    def __len__(self) -> int:
        return len(self.frames)

    def subset(self, indices: Sequence[int]) -> FaceFrames:
        idx = list(indices)
        return FaceFrames(self.frames[idx], self.landmarks[idx], [self.sources[i] for i in idx])


def evenly_spaced(count: int, wanted: int) -> list[int]:
    """`wanted` distinct indices spread evenly over range(count), first and last included."""
    if wanted > count:
        raise ValueError(f"cannot pick {wanted} of {count}")
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, wanted)}) if wanted > 1 else [count // 2]


def prepare_settings(size: int, prepare_config: Any | None) -> Any:
    """prepare's settings (crop margin, detector, ...) at the model's image size."""
    from metahead.data.prepare.config import PrepareConfig

    cfg = prepare_config if prepare_config is not None else PrepareConfig()
    return dataclasses.replace(cfg, size=size)


def detector_or_default(detector: Any | None, prepare_cfg: Any) -> Any:
    """`detector` if given, else the landmark detector prepare's settings name."""
    if detector is not None:
        return detector
    from metahead.landmarks.detect import make_detector

    return make_detector(prepare_cfg.detector, **prepare_cfg.detector_options)


def faces_from_photos(
    paths: Sequence[str | os.PathLike],
    size: int,
    detector: Any | None = None,
    prepare_config: Any | None = None,
) -> FaceFrames:
    """Detect the face in every photo and crop it like `metahead prepare` crops photos (one box per photo).

    A photo without a face raises DataError naming it; with several faces, the largest is used and an
    InputWarning names the photo.
    """
    from metahead.data.face_crop import crop_boxes, crop_frame, to_crop_coordinates
    from metahead.data.video_io import read_image
    from metahead.landmarks.detect import select_face

    if not paths:
        raise ValueError("no photos given")
    cfg = prepare_settings(size, prepare_config)
    crop_cfg = cfg.crop_config("frame")
    detector = detector_or_default(detector, cfg)
    frames, marks = [], []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such photo")
        image = read_image(path)
        faces = [f for f in detector.detect(image) if np.isfinite(f.landmarks).all()]
        if not faces:
            raise DataError(f"{path}: no face found in this photo")
        face = select_face(faces, image.shape, "largest")
        if len(faces) > 1:
            warnings.warn(f"{path}: {len(faces)} faces found; using the largest", InputWarning, stacklevel=2)
        (box,), _ = crop_boxes(face.landmarks[None], np.zeros(1), image.shape[:2], crop_cfg)
        frames.append(crop_frame(image, box, size))
        marks.append(to_crop_coordinates(face.landmarks, box, size))
    return FaceFrames(np.stack(frames), np.stack(marks).astype(np.float32), [str(p) for p in paths])


def faces_from_video(
    path: str | os.PathLike,
    size: int,
    count: int,
    detector: Any | None = None,
    prepare_config: Any | None = None,
) -> FaceFrames:
    """`count` frames spread evenly over a video, with the face detected in each and the clip's crop of
    `metahead prepare` (one box for the clip when the head stays inside it, else a smoothed track).

    Looks at up to 2·count evenly spaced frames so that frames without a face can be skipped; raises
    ValueError when fewer than `count` frames show a face (or the video has fewer frames).
    """
    from metahead.data.face_crop import crop_boxes, crop_frame, to_crop_coordinates
    from metahead.data.video_io import iter_video_frames, probe_video
    from metahead.landmarks.detect import select_face

    cfg = prepare_settings(size, prepare_config)
    detector = detector_or_default(detector, cfg)
    declared = probe_video(path).num_frames
    candidates = None
    if declared > 0:
        candidates = set(evenly_spaced(declared, min(declared, 2 * count)))
    images, marks, times, names = [], [], [], []
    decoded = 0
    for frame in iter_video_frames(path, check_truncation=False):
        decoded += 1
        if candidates is not None and frame.index not in candidates:
            continue
        faces = [f for f in detector.detect(frame.image) if np.isfinite(f.landmarks).all()]
        face = select_face(faces, frame.image.shape, "largest")
        if face is None:
            continue
        images.append(frame.image)
        marks.append(face.landmarks)
        times.append(frame.time)
        names.append(f"{path} frame {frame.index}")
    if len(images) < count:
        seen = decoded if candidates is None else min(len(candidates), decoded)
        raise ValueError(
            f"{path}: T={count} frames wanted, but only {len(images)} of the {seen} frames looked at show a "
            f"face (the video has {decoded} frames)"
        )
    boxes, _ = crop_boxes(np.stack(marks), np.asarray(times), images[0].shape[:2], cfg.crop_config())
    keep = evenly_spaced(len(images), count)
    return FaceFrames(
        np.stack([crop_frame(images[i], boxes[i], size) for i in keep]),
        np.stack([to_crop_coordinates(marks[i], boxes[i], size) for i in keep]).astype(np.float32),
        [names[i] for i in keep],
    )


def dataset_video_root(folder: str | os.PathLike) -> tuple[Path, str]:
    """(dataset root, video path) of a stored video folder DATA/videos/<path>; DataError if it is not one."""
    folder = Path(folder).resolve()
    for parent in folder.parents:
        if parent.name == "videos" and (parent.parent / "dataset.json").is_file():
            return parent.parent, folder.relative_to(parent).as_posix()
    raise DataError(
        f"{folder}: not a video folder of a metahead dataset (DATA/videos/<path> with DATA/dataset.json)"
    )


def is_dataset_video(path: str | os.PathLike) -> bool:
    return (
        Path(path).is_dir()
        and (Path(path) / "landmarks.npy").is_file()
        and (Path(path) / "frames.bin").is_file()
    )


def faces_from_dataset_video(folder: str | os.PathLike, size: int, count: int) -> FaceFrames:
    """`count` evenly spaced frames of a stored dataset video (exact landmarks, e.g. synthetic), at `size`."""
    root, rel = dataset_video_root(folder)
    reader = VideoReader(root, rel)
    if count > len(reader):
        raise ValueError(f"{folder}: T={count} frames wanted, but the video has {len(reader)}")
    ids = evenly_spaced(len(reader), count)
    frames, marks = resize_crops(reader.read_frames(ids), reader.read_landmarks(ids), size)
    return FaceFrames(frames, marks, [f"{folder} frame {i}" for i in ids])


def resize_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """One square crop (s, s, 3) uint8 resized to size² (bicubic); unchanged when already that size."""
    from PIL import Image

    if frame.shape[0] != frame.shape[1]:
        raise DataError(f"frames must be square crops, got {frame.shape[0]}x{frame.shape[1]}")
    if frame.shape[0] == size:
        return frame
    return np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BICUBIC))


def resize_crops(frames: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Square crops (N, s, s, 3) uint8 and their landmarks, resized to size² (landmarks moved along)."""
    resized = np.stack([resize_crop(f, size) for f in frames])
    return resized, rescale_landmarks(landmarks, frames.shape[1], size)


def rescale_landmarks(landmarks: np.ndarray, source_size: int, size: int) -> np.ndarray:
    """Landmarks in a source_size² crop moved to the same crop at size² (pixel centres at integers)."""
    if source_size == size:
        return np.asarray(landmarks, dtype=np.float32)
    return ((np.asarray(landmarks, dtype=np.float32) + 0.5) * (size / source_size) - 0.5).astype(np.float32)
