"""Discriminator D(x, y, i): realism of frame x under landmark image y for training video i."""

from __future__ import annotations

import torch
from torch import nn

from metahead.config import ModelConfig
from metahead.models.blocks import DownPath, ResidualBlock, sum_pool


class Discriminator(nn.Module):
    """D: V(x, y) = sum-pooled ReLU of residual down blocks on concat(x, y) (no normalisation,
    self-attention at attention_down_resolution) plus one extra residual block at
    discriminator_final_resolution; realism r = V(x, y)ᵀ(W_i + w0) + b.

    W (`video_embeddings`) is an nn.Embedding: a step reads and (with sparse_grad) writes only the
    episode's rows, so it scales to ~150k videos (docs/networks.md has the measurements). W is not
    spectrally normalised: a power iteration over all 150k rows per step would undo that.
    """

    def __init__(self, cfg: ModelConfig, num_videos: int, *, sparse_grad: bool = False) -> None:
        super().__init__()
        if num_videos < 1:
            raise ValueError(f"num_videos must be at least 1, got {num_videos}")
        self.cfg = cfg
        n = cfg.embedding_dim
        self.down = DownPath(
            cfg, 6, cfg.discriminator_final_resolution, norm="none", final_channels=n, what="discriminator"
        )
        self.final_block = ResidualBlock(
            n, n, norm="none", spectral_norm=cfg.spectral_norm, weight_init=cfg.weight_init
        )
        # W, w0, b. Small init: V is a sum over 4x4 positions, so r = V·w is O(1) at init with std 1/N.
        self.video_embeddings = nn.Embedding(num_videos, n, sparse=sparse_grad)
        nn.init.normal_(self.video_embeddings.weight, std=1.0 / n)
        self.w0 = nn.Parameter(torch.randn(n) / n)
        self.b = nn.Parameter(torch.zeros(1))

    @property
    def num_videos(self) -> int:
        return self.video_embeddings.num_embeddings

    def features_and_vector(
        self, images: torch.Tensor, landmark_images: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(V (B, N), activations after every residual block) for images and landmark images (B, 3, H, W)."""
        features = self.down(torch.cat([images, landmark_images], dim=1))
        features.append(self.final_block(features[-1]))
        return sum_pool(features[-1]), features

    def forward(
        self, images: torch.Tensor, landmark_images: torch.Tensor, video_index: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Realism r (B,) = V·(W_i + w0) + b and the block activations (for feature matching)."""
        vector, features = self.features_and_vector(images, landmark_images)
        w = self.video_embeddings(video_index) + self.w0
        return self._realism(vector, w), features

    def forward_with_embedding(
        self, images: torch.Tensor, landmark_images: torch.Tensor, video_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Fine-tuning: r = V·w' + b with w' (B or 1, N) a free tensor (initialised to w0 + ê_NEW by the
        caller; w0 is not added again here)."""
        vector, features = self.features_and_vector(images, landmark_images)
        return self._realism(vector, video_embedding), features

    def _realism(self, vector: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (vector * w.to(vector.dtype)).sum(dim=1) + self.b.to(vector.dtype)
