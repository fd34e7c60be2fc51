"""CSIM: cosine similarity of face-identity descriptors (the paper uses a face-recognition
network's embeddings; here dlib's 128-D ResNet, see docs/face-identity.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metahead.models.face_align import align_face_chips
from metahead.models.face_identity import FaceIdentityNet, to_dlib_pixels


def csim(descriptors_a: torch.Tensor, descriptors_b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of paired descriptors (B, D), (B, D) -> (B,); 1 = same direction."""
    if descriptors_a.shape != descriptors_b.shape or descriptors_a.dim() != 2:
        raise ValueError(
            f"descriptors must be paired (B, D) tensors, got {tuple(descriptors_a.shape)} "
            f"and {tuple(descriptors_b.shape)}"
        )
    return F.cosine_similarity(descriptors_a.float(), descriptors_b.float(), dim=1)


def mean_csim_to(descriptors: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """For each descriptor (F, D), its mean CSIM to every reference (R, D) -> (F,): e.g. result frames
    against all of the avatar's photos."""
    frames = F.normalize(descriptors.double(), dim=1)
    return (frames @ F.normalize(references.double(), dim=1).T).mean(dim=1)


@torch.no_grad()
def face_descriptors(
    net: FaceIdentityNet,
    images: torch.Tensor,
    landmarks: torch.Tensor,
    value_range: tuple[float, float] = (-1.0, 1.0),
    quantize: bool = True,
) -> torch.Tensor:
    """Descriptors (B, 128) of faces in images (B, 3, H, W) in value_range with landmarks (B, 68, 2).
    quantize=True cuts chips exactly as dlib does from 8-bit frames."""
    pixels = to_dlib_pixels(images, value_range)
    if quantize:
        pixels = pixels.round().clamp(0, 255)  # the 8-bit frame dlib would be given
    chips = align_face_chips(pixels, landmarks, quantize=quantize)
    return net(chips.to(next(net.parameters()).dtype))


def csim_from_images(
    net: FaceIdentityNet,
    images_a: torch.Tensor,
    landmarks_a: torch.Tensor,
    images_b: torch.Tensor,
    landmarks_b: torch.Tensor,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> torch.Tensor:
    """CSIM (B,) between the faces of two image batches, each aligned with its own landmarks."""
    return csim(
        face_descriptors(net, images_a, landmarks_a, value_range),
        face_descriptors(net, images_b, landmarks_b, value_range),
    )
