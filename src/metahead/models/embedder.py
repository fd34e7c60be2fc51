"""Embedder E(x, y): a frame and its landmark image → an N-dim vector ê(k); the person's ê is their mean."""

from __future__ import annotations

import torch
from torch import nn

from metahead.config import ModelConfig
from metahead.models.blocks import DownPath, sum_pool


class Embedder(nn.Module):
    """E: residual down blocks without normalisation on concat(x, y) (6 channels), self-attention at
    attention_down_resolution, ReLU, global sum pooling. Output width N = cfg.embedding_dim (the last block
    is built with N channels, so no linear layer follows the pooling)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.down = DownPath(
            cfg,
            6,
            cfg.embedder_final_resolution,
            norm="none",
            final_channels=cfg.embedding_dim,
            what="embedder",
        )

    def forward(self, images: torch.Tensor, landmark_images: torch.Tensor) -> torch.Tensor:
        """images, landmark_images: (B, 3, H, W) in [-1, 1] → frame embeddings ê(k): (B, N)."""
        return sum_pool(self.down(torch.cat([images, landmark_images], dim=1))[-1])


def embed_person(
    embedder: Embedder, images: torch.Tensor, landmark_images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """K frames per person in one batched pass.

    images, landmark_images: (B, K, 3, H, W). Returns (person_embedding ê (B, N) = mean over the K frame
    embeddings, frame_embeddings ê(k) (B, K, N)).
    """
    if images.ndim != 5 or images.shape != landmark_images.shape:
        raise ValueError(
            f"expected images and landmark_images of equal shape (B, K, 3, H, W), "
            f"got {tuple(images.shape)} and {tuple(landmark_images.shape)}"
        )
    b, k = images.shape[:2]
    frame_embeddings = embedder(images.flatten(0, 1), landmark_images.flatten(0, 1)).view(b, k, -1)
    return frame_embeddings.mean(dim=1), frame_embeddings
