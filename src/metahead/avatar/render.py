"""Rendering helpers of an avatar: G with its spectral normalisation folded into the weights once
(W / σ(W)), landmark-array checks and the conversion of G's output to uint8 frames."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from metahead.config import ExperimentConfig
from metahead.landmarks.parts import NUM_LANDMARKS


def fold_spectral_norm(generator: nn.Module, cfg: ExperimentConfig) -> nn.Module:
    """A new G without spectral norm (eval mode, no gradients) whose weights are `generator`'s effective
    weights W / σ(W), computed once from the stored power-iteration vectors exactly as an eval-mode G
    computes them on every call. `generator` itself is not changed (torch's remove_parametrizations
    would change the class it shares with its copies)."""
    from torch.nn.utils import parametrize

    was_training = generator.training
    generator.eval()  # no power-iteration update while reading the weights
    try:
        with torch.no_grad():
            state = {k: v for k, v in generator.state_dict().items() if ".parametrizations." not in k}
            for prefix, module in generator.named_modules():
                if parametrize.is_parametrized(module):
                    for name in module.parametrizations.keys():
                        state[f"{prefix}.{name}" if prefix else name] = getattr(module, name).detach().clone()
    finally:
        generator.train(was_training)
    folded = render_generator(cfg)
    folded.load_state_dict(state)
    device = next(generator.parameters()).device
    return folded.to(device).eval().requires_grad_(False)


def render_generator(cfg: ExperimentConfig) -> nn.Module:
    """An empty G of the avatar's shape without spectral norm, for folded weights."""
    from metahead.models.generator import Generator

    return Generator(dataclasses.replace(cfg.model, spectral_norm=False))


def as_points(landmarks: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Landmarks (68, 2) or (B, 68, 2) -> (B, 68, 2) float32 on the CPU, and whether one set was given."""
    points = torch.as_tensor(np.asarray(landmarks) if not isinstance(landmarks, torch.Tensor) else landmarks)
    points = points.detach().to("cpu", torch.float32)
    single = points.ndim == 2
    if single:
        points = points[None]
    if points.ndim != 3 or points.shape[1:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must have shape (68, 2) or (B, 68, 2), got {tuple(points.shape)}")
    return points, single


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return (
        ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    )
