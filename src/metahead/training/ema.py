"""A running average (EMA) of E's and G's weights: what samples, the model file, avatars and evaluation use.

The authors' lab code samples from such an average (decay 0.999 in meta-learning). A GAN generator's
weights jitter from step to step with D's moves; their average renders smoother, steadier faces. Each
network's average is a `torch.optim.swa_utils.AveragedModel` with a warm-up: the decay used at update n is
min(decay, (1 + n) / (10 + n)), so a short run is not dominated by its random start (TensorFlow's
ExponentialMovingAverage with num_updates does the same).

Buffers are copied, not averaged: spectral norm keeps its power-iteration vectors u, v in buffers, and an
average of unit vectors is no unit vector. The live network's u, v are close to the averaged weights' own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def _ema_with_warmup(decay: float):
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = int(num_averaged)
        beta = min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(averaged, current, 1.0 - beta)

    return update


class WeightAverage:
    """EMA copies of some networks (decay in (0, 1)); with decay 0 it stands for the live networks.

    `average[name]` is the network to render with: the EMA copy, or the live network when averaging is off.
    """

    def __init__(self, networks: dict[str, nn.Module], decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.live = networks
        self.averaged: dict[str, AveragedModel] = {}
        if decay > 0:
            for name, net in networks.items():
                model = AveragedModel(net, multi_avg_fn=_ema_with_warmup(decay), use_buffers=False)
                self.averaged[name] = model.requires_grad_(False).eval()

    @property
    def enabled(self) -> bool:
        return bool(self.averaged)

    def __getitem__(self, name: str) -> nn.Module:
        return self.averaged[name].module if self.enabled else self.live[name]

    @torch.no_grad()
    def update(self) -> None:
        for name, model in self.averaged.items():
            model.update_parameters(self.live[name])
            for averaged_buffer, live_buffer in zip(model.module.buffers(), self.live[name].buffers()):
                averaged_buffer.copy_(live_buffer)

    def state_dict(self) -> dict[str, Any]:
        return {name: model.state_dict() for name, model in self.averaged.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != set(self.averaged):
            raise ValueError(f"EMA state holds {sorted(state)}, expected {sorted(self.averaged)}")
        for name, model in self.averaged.items():
            model.load_state_dict(state[name])
