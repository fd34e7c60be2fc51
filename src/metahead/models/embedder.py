"""Embedder E(x, y): a frame and its landmark image → an N-dim vector ê(k); the person's ê is their mean."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from metahead.config import IDENTITY_PRIORS, ModelConfig
from metahead.models.blocks import DownPath, sum_pool

DESCRIPTOR_DIM = 128  # dlib's face descriptor


class FaceDescriptorPrior(nn.Module):
    """E's identity prior (model.identity_prior = "dlib"): dlib's face descriptor of each frame, projected to
    N. The face network is frozen (`network`, any module mapping 150² chips in 0..255 to descriptors; dlib's
    by default); the projection starts at zero, so a new model starts where one without the prior does.
    E gets no landmark coordinates, so chips are cut where the mean face sits in a prepared crop: on
    real-train frames their descriptors have cosine 0.98 to those of chips aligned on each frame's own
    landmarks."""

    def __init__(
        self,
        image_size: int,
        embedding_dim: int,
        network: nn.Module | None = None,
        standardised: bool = False,
    ) -> None:
        super().__init__()
        from metahead.landmarks.mean_face import mean_face_landmarks
        from metahead.models.face_identity import FaceIdentityNet

        self.network = network if network is not None else FaceIdentityNet.from_dlib_file()
        self.network.requires_grad_(False)
        self.projection = nn.Linear(DESCRIPTOR_DIM, embedding_dim, bias=False)
        nn.init.zeros_(self.projection.weight)
        marks = torch.as_tensor(mean_face_landmarks(image_size), dtype=torch.float32)
        self.register_buffer("chip_landmarks", marks, persistent=False)
        # model.identity_prior_standardised: the descriptors' mean and spread over training frames (set by
        # set_standardisation at the start of meta-learning; saved with the model). Identity until then.
        self.standardised = standardised
        if standardised:
            self.register_buffer("descriptor_mean", torch.zeros(DESCRIPTOR_DIM))
            self.register_buffer("descriptor_scale", torch.ones(DESCRIPTOR_DIM))

    @torch.no_grad()
    def set_standardisation(self, descriptors: torch.Tensor) -> None:
        """Measure the standardisation on descriptors (M, 128) of training frames (`descriptors`' output):
        their mean, and each component's standard deviation about it."""
        if not self.standardised:
            raise ValueError("this prior has no standardisation (model.identity_prior_standardised)")
        if descriptors.ndim != 2 or descriptors.shape[1] != DESCRIPTOR_DIM or len(descriptors) < 2:
            raise ValueError(
                f"expected descriptors of at least 2 frames, shape (M, {DESCRIPTOR_DIM}), "
                f"got {tuple(descriptors.shape)}"
            )
        descriptors = descriptors.float()
        self.descriptor_mean.copy_(descriptors.mean(dim=0))
        # a component that never varies is left at its scale instead of blown up
        self.descriptor_scale.copy_(descriptors.std(dim=0).clamp_min(1e-3))

    def descriptors(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> unit descriptors scaled to unit variance per component (B, 128)."""
        from metahead.models.face_align import align_face_chips
        from metahead.models.face_identity import to_dlib_pixels

        with torch.no_grad():
            marks = self.chip_landmarks.expand(len(images), -1, -1)
            chips = align_face_chips(to_dlib_pixels(images.float()), marks)
            # sqrt(128): components near 1, so that Adam's steps move the projection at E's own pace
            return F.normalize(self.network(chips).float(), dim=1) * math.sqrt(DESCRIPTOR_DIM)

    def forward(self, images: torch.Tensor, descriptors: torch.Tensor | None = None) -> torch.Tensor:
        """The prior's part of ê(k): projected descriptors, of `images` or as given (B, 128) (descriptors
        of these images computed earlier, e.g. by training/face_descriptors.py's cache)."""
        if descriptors is None:
            descriptors = self.descriptors(images)
        elif descriptors.shape != (len(images), DESCRIPTOR_DIM):
            raise ValueError(
                f"expected face descriptors of shape ({len(images)}, {DESCRIPTOR_DIM}), "
                f"got {tuple(descriptors.shape)}"
            )
        if self.standardised:
            descriptors = (descriptors.float() - self.descriptor_mean) / self.descriptor_scale
        weight = self.projection.weight
        return self.projection(descriptors.to(weight.dtype))


class Embedder(nn.Module):
    """E: residual down blocks without normalisation on concat(x, y) (6 channels), self-attention at
    attention_down_resolution, ReLU, global sum pooling. Output width N = cfg.embedding_dim (the last block
    is built with N channels, so no linear layer follows the pooling)."""

    def __init__(self, cfg: ModelConfig, face_network: nn.Module | None = None) -> None:
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
        if cfg.identity_prior not in IDENTITY_PRIORS:
            raise ValueError(f"model.identity_prior={cfg.identity_prior!r}: choose one of {IDENTITY_PRIORS}")
        self.identity_prior = (
            FaceDescriptorPrior(
                cfg.image_size, cfg.embedding_dim, face_network, standardised=cfg.identity_prior_standardised
            )
            if cfg.identity_prior == "dlib"
            else None
        )

    def forward(
        self,
        images: torch.Tensor,
        landmark_images: torch.Tensor,
        face_descriptors: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """images, landmark_images: (B, 3, H, W) in [-1, 1] → frame embeddings ê(k): (B, N).

        face_descriptors: (B, 128), the identity prior's descriptors of `images` when already known
        (FaceDescriptorPrior.descriptors); computed here when None."""
        embedding = sum_pool(self.down(torch.cat([images, landmark_images], dim=1))[-1])
        if self.identity_prior is not None:
            embedding = embedding + self.identity_prior(images, face_descriptors).to(embedding.dtype)
        elif face_descriptors is not None:
            raise ValueError("face descriptors given, but this embedder has no identity prior")
        return embedding


def embed_person(
    embedder: Embedder,
    images: torch.Tensor,
    landmark_images: torch.Tensor,
    face_descriptors: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """K frames per person in one batched pass.

    images, landmark_images: (B, K, 3, H, W); face_descriptors: (B, K, 128) or None (see Embedder).
    Returns (person_embedding ê (B, N) = mean over the K frame embeddings, frame_embeddings ê(k) (B, K, N)).
    """
    if images.ndim != 5 or images.shape != landmark_images.shape:
        raise ValueError(
            f"expected images and landmark_images of equal shape (B, K, 3, H, W), "
            f"got {tuple(images.shape)} and {tuple(landmark_images.shape)}"
        )
    b, k = images.shape[:2]
    if face_descriptors is not None:
        face_descriptors = face_descriptors.flatten(0, 1)
    frame_embeddings = embedder(
        images.flatten(0, 1), landmark_images.flatten(0, 1), face_descriptors=face_descriptors
    ).view(b, k, -1)
    return frame_embeddings.mean(dim=1), frame_embeddings
