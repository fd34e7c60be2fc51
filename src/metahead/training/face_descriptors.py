"""The identity prior's face descriptors of training frames, computed once per frame (model.identity_prior).

E's identity prior runs dlib's face network, frozen, on every one of the K frames an episode embeds: at
real-64's size that is most of what the prior costs a step. A training frame's descriptor depends on the
stored frame alone, so the meta-learning loop keeps one row per frame of the training set and computes a
frame's descriptor the first time an episode draws it; an episode whose frames were mirrored or recoloured
(train.mirror_probability, train.colour_jitter_probability) is computed afresh, since its images are not
the stored frames. The values are those E would compute itself (to float rounding: a batch of other
frames may take other kernels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from metahead.models.embedder import DESCRIPTOR_DIM, FaceDescriptorPrior

if TYPE_CHECKING:
    from metahead.data.episodes import EpisodeDataset

# 4 bytes x 128 per frame: 2M frames (VoxCeleb1's ~1.1M at 25 fps fit) take 1 GiB. Beyond, no cache.
MAX_CACHED_FRAMES = 2_000_000


class FrameDescriptorCache:
    """Descriptors (K, 128) of each episode's shots, by (video index, frame index) into the training set.

    `frames_per_video[i]`: the number of frames of the training video that is row i of W (EpisodeDataset's
    records, in order).
    """

    def __init__(
        self, prior: FaceDescriptorPrior, frames_per_video: Sequence[int], device: torch.device | str = "cpu"
    ) -> None:
        counts = torch.as_tensor(list(frames_per_video), dtype=torch.long)
        if counts.numel() == 0 or bool((counts < 1).any()):
            raise ValueError("frames_per_video must list at least one video, each with at least one frame")
        self.prior = prior
        self.offsets = (torch.cumsum(counts, 0) - counts).to(device)
        self.frames_per_video = counts.to(device)
        total = int(counts.sum())
        self.table = torch.zeros(total, DESCRIPTOR_DIM, device=device)
        self.known = torch.zeros(total, dtype=torch.bool, device=device)
        self.computed = 0  # descriptors computed so far (cache misses and augmented frames)
        self.looked_up = 0  # descriptors asked for

    @classmethod
    def for_training(
        cls, prior: FaceDescriptorPrior | None, frames_per_video: Sequence[int], device: torch.device | str
    ) -> FrameDescriptorCache | None:
        """A cache for a run whose E has a prior, over a training set small enough for it; else None."""
        if prior is None or sum(frames_per_video) > MAX_CACHED_FRAMES:
            return None
        return cls(prior, frames_per_video, device)

    @torch.no_grad()
    def __call__(
        self,
        shot_images: torch.Tensor,
        video_index: torch.Tensor,
        frame_indices: torch.Tensor,
        augmented: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """shot_images (B, K, 3, S, S), video_index (B,), frame_indices (B, K) of those videos, augmented (B,)
        bool or None (none were) -> descriptors (B, K, 128). Call it in the autocast context E runs in."""
        b, k = shot_images.shape[:2]
        if frame_indices.shape != (b, k) or video_index.shape != (b,):
            raise ValueError(
                f"expected video_index ({b},) and frame_indices ({b}, {k}) for shots of shape "
                f"{tuple(shot_images.shape)}, got {tuple(video_index.shape)} and {tuple(frame_indices.shape)}"
            )
        if bool((frame_indices >= self.frames_per_video[video_index][:, None]).any()):
            raise ValueError("a frame index lies beyond its video's frame count")
        rows = self.offsets[video_index][:, None] + frame_indices  # (B, K)
        stored = torch.ones_like(rows, dtype=torch.bool)  # the images are the stored frames
        if augmented is not None:
            stored &= ~augmented.bool()[:, None]
        missing = ~(self.known[rows] & stored)
        descriptors = self.table[rows]
        if bool(missing.any()):
            fresh = self.prior.descriptors(shot_images[missing]).float()
            descriptors[missing] = fresh
            kept = missing & stored  # new stored frames: remembered
            self.table[rows[kept]] = descriptors[kept]
            self.known[rows[kept]] = True
            self.computed += len(fresh)
        self.looked_up += b * k
        return descriptors


@torch.no_grad()
def measure_standardisation(
    prior: FaceDescriptorPrior,
    dataset: EpisodeDataset,
    frames_per_video: int = 4,
    max_frames: int = 4096,
    batch_size: int = 64,
) -> int:
    """Set the prior's standardisation from `frames_per_video` frames of every training video, spread evenly
    over each video (the same frames on every rank, so ranks agree); returns the number of frames used.
    A corpus with more videos than `max_frames` / `frames_per_video` gives fewer frames a video, down to one
    frame of `max_frames` videos spread over it: a mean and spread over a few thousand faces are as good as
    over all, and dlib's network on every video of VoxCeleb2 would hold up the first step for hours."""
    num_videos = len(dataset.records)
    videos = _spread(num_videos, max_frames)
    per_video = max(1, min(frames_per_video, max_frames // len(videos)))
    videos_per_batch = max(1, batch_size // per_video)
    device = prior.projection.weight.device
    rows = []
    for start in range(0, len(videos), videos_per_batch):
        images = [
            dataset.read_frames(index, _spread(dataset.records[index].num_frames, per_video))[0]
            for index in videos[start : start + videos_per_batch]
        ]
        rows.append(prior.descriptors(torch.cat(images).to(device)).float())
    descriptors = torch.cat(rows)
    prior.set_standardisation(descriptors)
    return len(descriptors)


def _spread(count: int, most: int) -> list[int]:
    """At most `most` of the indices 0..count-1, spread evenly from the first to the last."""
    return torch.linspace(0, count - 1, min(most, count)).round().long().unique().tolist()
