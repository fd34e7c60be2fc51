"""Datasets of the two learning stages (paper Sec. 3.2 and 3.3).

- `EpisodeDataset`: meta-learning episodes, one item per training video: K+1 frames drawn afresh every
  time (K to embed, one target) with their landmarks and landmark images.
- `FewShotDataset`: the T frames of one person that fine-tuning uses, one item per frame.

Both are map-style torch datasets of plain tensors and strings, so torch's `default_collate`,
DataLoader workers and DistributedSampler all work with them as they are.
"""

from __future__ import annotations

import operator
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from metahead.data.format import (
    MANIFEST,
    DataError,
    DataWarning,
    VideoReader,
    VideoRecord,
    read_info,
    read_manifest,
)
from metahead.landmarks.draw import draw_landmarks
from metahead.landmarks.parts import MIRROR_ORDER, NUM_LANDMARKS

# Names of the skipped videos quoted in the warning; a VoxCeleb-sized set may skip thousands.
_MAX_NAMED = 50
_SEED_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads dataset seeds over the generator's seeds
_BY_NAME = operator.attrgetter("identity", "video")  # the stable order of videos (rows of W)


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def resize_frames(
    images: torch.Tensor, landmarks: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize (N, 3, H, W) images to size² (anti-aliased bilinear) and move their (N, 68, 2) landmarks
    along (pixel centres at integers). Unchanged when already size²."""
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images, landmarks
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    scale = torch.tensor([size / width, size / height], dtype=landmarks.dtype)
    return images.clamp_(-1.0, 1.0), (landmarks + 0.5) * scale - 0.5


def mirror_frames(images: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) images and their (N, 68, 2) landmarks, mirrored left to right: the points move with the
    pixels (pixel centres at integers) and are re-indexed so that each part is still the part it is named."""
    width = images.shape[-1]
    mirrored = landmarks[:, list(MIRROR_ORDER)].clone()
    mirrored[..., 0] = (width - 1) - mirrored[..., 0]
    return images.flip(-1), mirrored


# RGB <-> YIQ (NTSC): Y is luminance, (I, Q) the chroma plane that a hue rotation turns.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
# The ranges an episode's colours are drawn from (`recolour_frames`): a face still, but another one's
# colouring (±29° of hue, ±30 % saturation, ±0.1 of the [0, 1] brightness).
COLOUR_JITTER_RANGES = {"hue": 0.5, "saturation": 0.3, "brightness": 0.1}


def recolour_frames(images: torch.Tensor, hue: float, saturation: float, brightness: float) -> torch.Tensor:
    """(N, 3, H, W) images in [-1, 1], all recoloured alike: the chroma plane turned by `hue` radians and
    scaled by `saturation`, `brightness` added to the luminance (in [0, 1] units); clamped to [-1, 1]."""
    cos, sin = float(np.cos(hue)), float(np.sin(hue))
    chroma = torch.tensor([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
    chroma[1:] *= saturation
    transform = _YIQ_TO_RGB @ chroma @ _RGB_TO_YIQ
    unit = (images + 1.0) / 2.0
    recoloured = torch.einsum("ij,njhw->nihw", transform.to(images.dtype), unit) + brightness
    return (recoloured * 2.0 - 1.0).clamp_(-1.0, 1.0)


def random_recolouring(images: torch.Tensor) -> torch.Tensor:
    """`recolour_frames` with hue, saturation and brightness drawn uniformly from COLOUR_JITTER_RANGES
    (torch's global RNG)."""
    r = COLOUR_JITTER_RANGES
    hue, saturation, brightness = (torch.rand(3) * 2.0 - 1.0).tolist()
    return recolour_frames(
        images, hue * r["hue"], 1.0 + saturation * r["saturation"], brightness * r["brightness"]
    )


def landmark_images(landmarks: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 68, 2) -> landmark images (N, 3, size, size) in [-1, 1]."""
    return draw_landmarks(landmarks, size).mul_(2.0).sub_(1.0)


def _check_size(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _read_video(
    root: Path, record: VideoRecord, frame_ids: Sequence[int], size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames (N, 3, size, size) in [-1, 1] and landmarks (N, 68, 2) of one stored video."""
    reader = VideoReader(root, record.path, record.num_frames)
    frames = reader.read_frames(frame_ids)
    landmarks = torch.from_numpy(reader.read_landmarks(frame_ids))
    return resize_frames(frames_to_tensor(frames), landmarks, size)


class EpisodeDataset(torch.utils.data.Dataset):
    """Meta-learning episodes: item i is video i of the split (row i of the discriminator's W).

    Videos are ordered by (identity, video), whatever the manifest's row order, so a video's index is
    stable; `video_ids[i]` names row i of W. Videos with fewer than K+1 frames are skipped, with one
    DataWarning naming them.

    Each item draws K+1 distinct frames of its video afresh from torch's global RNG: DataLoader workers
    (seeded per worker and epoch by torch) and the trainer's per-episode seeding both work, and with
    torch.manual_seed and no workers the draws repeat. `seed` is mixed into every draw, so datasets with
    different seeds draw different frames from the same torch RNG state.

    Item: "images", "landmark_images" (K+1, 3, S, S) in [-1, 1]; "landmarks" (K+1, 68, 2) pixels at S²;
    "frame_indices" (K+1,) long; "augmented" bool scalar (mirrored or recoloured); "video_index" long
    scalar; "identity", "video" str. Frames 0..K-1 are embedded, frame K is the target.

    `mirror_probability`: the chance that an episode's K+1 frames are all mirrored left to right (with their
    landmarks, `mirror_frames`), drawn from the same RNG after the frames; 0 draws nothing, so the frames
    drawn are the same with or without the option. `colour_jitter_probability`: likewise, the chance that
    they are all recoloured alike (`random_recolouring`), drawn after the mirroring.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        shots: int = 8,
        image_size: int | None = None,
        seed: int = 0,
        mirror_probability: float = 0.0,
        colour_jitter_probability: float = 0.0,
    ):
        _check_size("shots", shots)
        _check_size("image_size", image_size)
        for name, value in (
            ("mirror_probability", mirror_probability),
            ("colour_jitter_probability", colour_jitter_probability),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        self.mirror_probability = float(mirror_probability)
        self.colour_jitter_probability = float(colour_jitter_probability)
        self.root = Path(root)
        self.info = read_info(self.root)
        self.split = split
        self.shots = shots  # K
        self.image_size = image_size or self.info.image_size
        self.seed = int(seed)
        manifest = self.root / MANIFEST
        all_records = read_manifest(self.root)
        if not all_records:
            raise DataError(f"{manifest}: manifest lists no videos")
        in_split = sorted((r for r in all_records if r.split == split), key=_BY_NAME)
        if not in_split:
            present = sorted({r.split for r in all_records})
            raise DataError(f"{manifest}: no videos in split {split!r} (splits present: {present})")
        needed = shots + 1
        self.records: list[VideoRecord] = [r for r in in_split if r.num_frames >= needed]
        skipped = [r for r in in_split if r.num_frames < needed]
        if not self.records:
            longest = max(r.num_frames for r in in_split)
            raise DataError(
                f"{manifest}: none of the {len(in_split)} videos in split {split!r} has the K+1={needed} "
                f"frames an episode needs (the longest has {longest}); lower the number of shots"
            )
        if skipped:
            names = ", ".join(f"{r.identity}/{r.video} ({r.num_frames})" for r in skipped[:_MAX_NAMED])
            more = f" and {len(skipped) - _MAX_NAMED} more" if len(skipped) > _MAX_NAMED else ""
            warnings.warn(
                DataWarning(
                    f"{manifest}: skipping {len(skipped)} of {len(in_split)} {split!r} videos with fewer "
                    f"than K+1={needed} frames: {names}{more}"
                ),
                stacklevel=2,
            )
        self.video_ids: list[str] = [f"{r.identity}/{r.video}" for r in self.records]

    @property
    def num_videos(self) -> int:
        """Rows of the discriminator's W."""
        return len(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def read_frames(self, index: int, frame_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (N, 3, S, S) in [-1, 1] and landmarks (N, 68, 2) of video `index`, as stored (no mirroring
        or recolouring)."""
        return _read_video(self.root, self.records[index], list(frame_ids), self.image_size)

    def draw_frames(self, num_frames: int) -> torch.Tensor:
        """K+1 distinct frame indices of a video with `num_frames` frames, from torch's global RNG."""
        draw = int(torch.randint(0, 2**62, ()))
        generator = torch.Generator().manual_seed((draw + self.seed * _SEED_MIX) % 2**63)
        return torch.randperm(num_frames, generator=generator)[: self.shots + 1]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"episode {index} out of range: {self.split!r} has {len(self)} videos")
        index %= len(self)
        record = self.records[index]
        frame_ids = self.draw_frames(record.num_frames)
        images, landmarks = _read_video(self.root, record, frame_ids.tolist(), self.image_size)
        augmented = False
        if self.mirror_probability > 0 and float(torch.rand(())) < self.mirror_probability:
            images, landmarks = mirror_frames(images, landmarks)
            augmented = True
        if self.colour_jitter_probability > 0 and float(torch.rand(())) < self.colour_jitter_probability:
            images = random_recolouring(images)
            augmented = True
        return {
            "images": images,
            "landmark_images": landmark_images(landmarks, self.image_size),
            "landmarks": landmarks,
            "frame_indices": frame_ids,
            # mirrored or recoloured: the images are not the stored frames (per-frame caches must not apply)
            "augmented": torch.tensor(augmented),
            "video_index": torch.tensor(index, dtype=torch.long),
            "identity": record.identity,
            "video": record.video,
        }


class FewShotDataset(torch.utils.data.Dataset):
    """The T frames of one person for fine-tuning, one item per frame, prepared once and held in memory.

    From a dataset folder: `FewShotDataset(root, identity=..., shots=T)` picks T distinct frames of the
    identity's videos (in `split` if given; only `video` if given), drawn with `seed`; `frame_indices`
    (with one video) picks exact frames instead. From arrays: `FewShotDataset(frames, landmarks)` with
    frames (T, H, W, 3) uint8 or (T, 3, H, W) float in [-1, 1] and landmarks (T, 68, 2) in their pixels.

    Item: "image", "landmark_image" (3, S, S) in [-1, 1]; "landmarks" (68, 2); "frame_index" long;
    "identity", "video" str. The whole set is also at hand as `.images`, `.landmark_images`, `.landmarks`.
    """

    def __init__(
        self,
        root_or_frames: str | os.PathLike | np.ndarray | torch.Tensor,
        landmarks: np.ndarray | torch.Tensor | None = None,
        *,
        shots: int | None = None,
        identity: str | None = None,
        video: str | None = None,
        split: str | None = None,
        frame_indices: Sequence[int] | None = None,
        image_size: int | None = None,
        seed: int = 0,
    ):
        _check_size("shots", shots)
        _check_size("image_size", image_size)
        if isinstance(root_or_frames, str | os.PathLike):
            if landmarks is not None:
                raise ValueError("landmarks come from the dataset folder; pass them only with frames")
            images, points, names, indices, size = self._from_folder(
                Path(root_or_frames), shots or 8, identity, video, split, frame_indices, image_size, seed
            )
        else:
            if landmarks is None:
                raise ValueError("FewShotDataset(frames, landmarks): landmarks are missing")
            images, points = self._from_arrays(root_or_frames, landmarks)
            if shots is not None and shots != len(images):
                raise ValueError(f"shots={shots} but {len(images)} frames given")
            size = image_size or images.shape[-1]
            names = [(identity or "", video or "")] * len(images)
            indices = list(range(len(images)))
        self.images, self.landmarks = resize_frames(images, points, size)
        self.landmark_images = landmark_images(self.landmarks, size)
        self.image_size = size
        self.names = names  # (identity, video) of each frame
        self.frame_indices = torch.as_tensor(indices, dtype=torch.long)

    @staticmethod
    def _from_folder(
        root: Path,
        shots: int,
        identity: str | None,
        video: str | None,
        split: str | None,
        frame_indices: Sequence[int] | None,
        image_size: int | None,
        seed: int,
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]], list[int], int]:
        info = read_info(root)
        manifest = root / MANIFEST
        if identity is None and video is None:
            raise ValueError("FewShotDataset from a dataset folder needs identity= (and/or video=)")
        records = [
            r
            for r in read_manifest(root, split)
            if (identity is None or r.identity == identity) and (video is None or r.video == video)
        ]
        records.sort(key=_BY_NAME)
        wanted = f"identity {identity!r}" if video is None else f"video {identity or '*'}/{video}"
        if not records:
            raise DataError(f"{manifest}: no {wanted}" + (f" in split {split!r}" if split else ""))
        if len({r.identity for r in records}) > 1:
            raise ValueError(f"{manifest}: {wanted} is ambiguous; pass identity= too")
        if frame_indices is not None:
            if len(records) != 1:
                raise ValueError(
                    f"frame_indices need one video, but {wanted} has {len(records)}; pass video="
                )
            picks = [(0, int(i)) for i in frame_indices]
        else:
            pool = [(v, f) for v, r in enumerate(records) for f in range(r.num_frames)]
            if len(pool) < shots:
                raise DataError(f"{manifest}: {wanted} has {len(pool)} frames, fewer than shots T={shots}")
            chosen = np.sort(np.random.default_rng(seed).choice(len(pool), size=shots, replace=False))
            picks = [pool[i] for i in chosen]
        size = image_size or info.image_size
        images, points, names, indices = [], [], [], []
        for v, record in enumerate(records):
            ids = [f for rv, f in picks if rv == v]
            if not ids:
                continue
            frames, lms = _read_video(root, record, ids, size)
            images.append(frames)
            points.append(lms)
            names += [(record.identity, record.video)] * len(ids)
            indices += ids
        return torch.cat(images), torch.cat(points), names, indices, size

    @staticmethod
    def _from_arrays(
        frames: np.ndarray | torch.Tensor, landmarks: np.ndarray | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        points = torch.as_tensor(np.asarray(landmarks), dtype=torch.float32)
        if points.ndim != 3 or points.shape[1:] != (NUM_LANDMARKS, 2):
            raise ValueError(f"landmarks must be (T, 68, 2), got {tuple(points.shape)}")
        if not torch.isfinite(points).all():
            raise ValueError("landmarks contain NaN or inf")
        if frames.dtype in (np.uint8, torch.uint8):
            array = np.asarray(frames)
            if array.ndim != 4 or array.shape[-1] != 3:
                raise ValueError(f"uint8 frames must be (T, H, W, 3), got {array.shape}")
            images = frames_to_tensor(array)
        else:
            images = torch.as_tensor(frames, dtype=torch.float32)
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"float frames must be (T, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
        if len(images) != len(points) or len(images) == 0:
            raise ValueError(
                f"{len(images)} frames and {len(points)} landmark sets: need as many, at least one"
            )
        return images, points

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        identity, video = self.names[index]
        return {
            "image": self.images[index],
            "landmark_image": self.landmark_images[index],
            "landmarks": self.landmarks[index],
            "frame_index": self.frame_indices[index],
            "identity": identity,
            "video": video,
        }
