"""Baselines for the evaluation table, in the role X2Face and Pix2pixHD played in the paper's Table 1.

- nearest shot: for each target frame, the one of the T frames whose landmarks are closest to the target's
  (mean point distance in pixels): what an avatar gets by just showing its photos.
- from scratch: the same networks, freshly initialised, fine-tuned on the T frames alone for the same
  steps as the meta-learned model (the paper's Pix2pixHD: an image-to-image network trained on the
  few shots). Made by `Avatar.create` with `from_scratch_networks(cfg)` instead of a model file.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from metahead.config import ExperimentConfig


def nearest_shot_indices(shot_landmarks: torch.Tensor, target_landmarks: torch.Tensor) -> torch.Tensor:
    """(E,) index of the shot (T, 68, 2) whose landmarks are closest to each target's (E, 68, 2)."""
    if (
        shot_landmarks.dim() != 3
        or target_landmarks.dim() != 3
        or shot_landmarks.shape[1:] != target_landmarks.shape[1:]
    ):
        raise ValueError(
            f"landmarks must be (T, 68, 2) and (E, 68, 2), got {tuple(shot_landmarks.shape)}, "
            f"{tuple(target_landmarks.shape)}"
        )
    # (E, T) mean point-to-point distance
    distance = (target_landmarks[:, None].double() - shot_landmarks[None].double()).norm(dim=-1).mean(-1)
    return distance.argmin(dim=1)


def nearest_shot(
    shot_images: torch.Tensor, shot_landmarks: torch.Tensor, target_landmarks: torch.Tensor
) -> torch.Tensor:
    """The nearest-shot baseline's frames (E, 3, S, S): per target, the shot with the closest landmarks."""
    if shot_images.shape[0] != shot_landmarks.shape[0]:
        raise ValueError(f"{shot_images.shape[0]} shot images but {shot_landmarks.shape[0]} landmark sets")
    return shot_images[nearest_shot_indices(shot_landmarks, target_landmarks)]


def from_scratch_networks(
    cfg: ExperimentConfig, seed: int = 0
) -> tuple[nn.Module, nn.Module, nn.Module, ExperimentConfig]:
    """Freshly initialised (E, G, D, cfg) of the model's architecture, for the from-scratch baseline."""
    from metahead.models.discriminator import Discriminator
    from metahead.models.embedder import Embedder
    from metahead.models.generator import Generator

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        networks = (Embedder(cfg.model), Generator(cfg.model), Discriminator(cfg.model, num_videos=1))
    finally:
        torch.random.set_rng_state(state)
    for net in networks:
        net.eval()
    return (*networks, copy.deepcopy(cfg))
