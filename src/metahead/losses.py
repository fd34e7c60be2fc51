"""The paper's losses: L_CNT (content), L_ADV (adversarial + feature matching), L_MCH (embedding matching),
L_DSC (hinge). Weights and the source of every default: LossConfig and docs/losses.md.

Each loss returns its total and a dict of named terms (for logging); the caller sums the totals.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metahead.config import LossConfig
from metahead.models.face_identity import chip_features

log = logging.getLogger(__name__)

VGG19_ENV = "METAHEAD_VGG19_WEIGHTS"
VGGFACE_ENV = "METAHEAD_VGGFACE_WEIGHTS"


def l1_feature_loss(
    real_features: Sequence[torch.Tensor], fake_features: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Σ over layers of mean |real − fake| (real treated as a constant)."""
    if len(real_features) != len(fake_features):
        raise ValueError(f"feature lists differ in length: {len(real_features)} vs {len(fake_features)}")
    return sum(F.l1_loss(fake, real.detach()) for real, fake in zip(real_features, fake_features))


def multiscale_l1(fake: torch.Tensor, real: torch.Tensor, scales: int) -> torch.Tensor:
    """Mean over `scales` resolutions (full, 1/2, 1/4, ...) of the pixel L1."""
    total = fake.new_zeros(())
    for i in range(scales):
        if i:
            fake, real = F.avg_pool2d(fake, 2), F.avg_pool2d(real, 2)
        total = total + F.l1_loss(fake, real)
    return total / scales


def laplacian_l1(fake: torch.Tensor, real: torch.Tensor, levels: int) -> torch.Tensor:
    """Mean over `levels` band-pass levels of a Laplacian pyramid (each level: the image minus its 2x
    average-pooled copy upsampled bilinearly; then the next level from the pooled copy) of the L1 between
    the two images' levels. A blur that keeps the means scores as much as the detail it lost. The pyramid
    is linear, so it is built once, of the difference."""
    difference = fake - real
    total = fake.new_zeros(())
    for _ in range(levels):
        low = F.avg_pool2d(difference, 2)
        band = difference - F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
        total = total + band.abs().mean()
        difference = low
    return total / levels


def resolve_weights_path(configured: str | None, env_var: str, what: str) -> str | None:
    """The config's path, else the environment variable's, else None. A named file that does not exist
    raises FileNotFoundError naming it and where the name came from."""
    source = "config"
    path = configured
    if not path:
        path, source = os.environ.get(env_var) or None, f"${env_var}"
    if path is None:
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} weights file not found: {path} (set by {source})")
    return path


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def offline_content_loss_refused() -> ValueError:
    return ValueError(
        "no VGG19/VGGFace weights configured, and this config's content loss needs them "
        f"(loss.allow_offline=false). Set ${VGG19_ENV} and ${VGGFACE_ENV} (or loss.vgg19_weights_path and "
        "loss.vggface_weights_path) to the weight files (docs/losses.md says which files), or set "
        "loss.allow_offline=true to train on the offline content loss (pixel L1 + identity features) instead"
    )


def content_loss_differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two ContentLoss.record dicts, in words (file paths may differ: checksums
    decide)."""
    differences = []
    for key in sorted(set(before) | set(now)):
        if key == "paths":
            continue
        if before.get(key) != now.get(key):
            differences.append(f"{key}: {before.get(key)!r} -> {now.get(key)!r}")
    return differences


class IdentityFeatureLoss(nn.Module):
    """L1 between a face network's features on aligned face chips of real and fake frames.

    `network.features(chips 0..255) -> (list of block activations, descriptor)`; `align(images 0..255,
    landmarks (B, 68, 2), size=chip_size) -> chips`. Both are pluggable (tests use stand-ins); the default is
    dlib's face-recognition ResNet (metahead.models.face_identity) on chips from metahead.models.face_align.
    """

    def __init__(self, network: nn.Module, align: Callable[..., torch.Tensor], chip_size: int = 150) -> None:
        super().__init__()
        self.network = network.requires_grad_(False).eval()
        self.align = align
        self.chip_size = chip_size

    def train(self, mode: bool = True) -> IdentityFeatureLoss:  # frozen network: stays in eval mode
        return super().train(False)

    def forward(
        self,
        fake: torch.Tensor,
        real: torch.Tensor,
        fake_landmarks: torch.Tensor,
        real_landmarks: torch.Tensor,
    ) -> torch.Tensor:
        (fake_blocks, fake_descriptor), (real_blocks, real_descriptor) = chip_features(
            self.network, fake, real, fake_landmarks, real_landmarks, self.align, self.chip_size
        )
        return l1_feature_loss(real_blocks, fake_blocks) + F.l1_loss(fake_descriptor, real_descriptor)


def dlib_identity_loss() -> IdentityFeatureLoss:
    """The offline default's identity term: dlib's face network (face-recognition-models' file)."""
    from metahead.models.face_align import align_face_chips
    from metahead.models.face_identity import FaceIdentityNet

    return IdentityFeatureLoss(FaceIdentityNet.from_dlib_file(), align_face_chips)


class ContentLoss(nn.Module):
    """L_CNT = w19 · Σ_l L1(VGG19_l(x), VGG19_l(x̂)) + wface · Σ_l L1(VGGFace_l(x), VGGFace_l(x̂)).

    Each VGG network is used when its weights file is configured (LossConfig path or environment variable).
    With neither configured, the offline default: pixel_weight · multi-scale pixel L1 (plus
    laplacian_weight · Laplacian-pyramid L1 where set), plus
    identity_weight · identity-feature L1 on aligned face chips when landmarks are given (and
    identity_network != "none"). `identity_loss` overrides the identity term's network (tests, other nets).
    """

    def __init__(self, loss_cfg: LossConfig, identity_loss: nn.Module | None = None) -> None:
        super().__init__()
        from metahead.models import perceptual

        self.cfg = loss_cfg
        vgg19_path = resolve_weights_path(loss_cfg.vgg19_weights_path, VGG19_ENV, "VGG19")
        vggface_path = resolve_weights_path(loss_cfg.vggface_weights_path, VGGFACE_ENV, "VGGFace")
        self.vgg19 = perceptual.load_vgg19(vgg19_path, loss_cfg.vgg19_input) if vgg19_path else None
        self.vggface = perceptual.load_vggface(vggface_path, loss_cfg.vggface_input) if vggface_path else None
        self.offline = self.vgg19 is None and self.vggface is None
        if self.offline and not loss_cfg.allow_offline:
            raise offline_content_loss_refused()
        self.identity: nn.Module | None = None
        if self.offline and loss_cfg.identity_weight > 0:
            if identity_loss is not None:
                self.identity = identity_loss
            elif loss_cfg.identity_network == "dlib":
                self.identity = dlib_identity_loss()
            elif loss_cfg.identity_network != "none":
                raise ValueError(
                    f"unknown identity_network {loss_cfg.identity_network!r}; choose 'dlib' or 'none'"
                )
        terms = []
        if self.vgg19 is not None:
            terms.append(f"vgg19 ({vgg19_path}, input {loss_cfg.vgg19_input}) x {loss_cfg.vgg19_weight:g}")
        if self.vggface is not None:
            terms.append(
                f"vggface ({vggface_path}, input {loss_cfg.vggface_input}) x {loss_cfg.vggface_weight:g}"
            )
        if self.offline:
            terms.append(f"pixel L1 over {loss_cfg.pixel_scales} scales x {loss_cfg.pixel_weight:g}")
            if loss_cfg.laplacian_weight > 0:
                levels, weight = loss_cfg.pixel_scales, loss_cfg.laplacian_weight
                terms.append(f"Laplacian-pyramid L1 over {levels} levels x {weight:g}")
            if self.identity is not None:
                terms.append(f"identity features x {loss_cfg.identity_weight:g} (when landmarks are given)")
        self.description = "content loss: " + " + ".join(terms)
        self._paths = {"vgg19": vgg19_path, "vggface": vggface_path}
        self._custom_identity = identity_loss is not None
        if self.offline:
            log.warning(
                "no VGG19/VGGFace weights configured (LossConfig paths or $%s / $%s): using the offline "
                "default, %s",
                VGG19_ENV,
                VGGFACE_ENV,
                self.description,
            )

    @functools.cached_property
    def record(self) -> dict[str, Any]:
        """What this loss is, as plain values for configs and checkpoints: its terms with their weights (and
        input conventions), and the weight files' sha256 (paths kept aside: they may differ between
        machines). Computed when first asked for (hashing a VGG file takes a second or two)."""
        cfg, custom_identity = self.cfg, self._custom_identity
        vgg19_path, vggface_path = self._paths["vgg19"], self._paths["vggface"]
        terms: dict[str, Any] = {}
        files: dict[str, str] = {}
        paths: dict[str, str] = {}
        if self.offline:
            terms["pixel"] = {"weight": cfg.pixel_weight, "scales": cfg.pixel_scales}
            if cfg.laplacian_weight > 0:
                terms["laplacian"] = {"weight": cfg.laplacian_weight, "levels": cfg.pixel_scales}
            if self.identity is not None:
                name = "custom" if custom_identity else cfg.identity_network
                terms["identity"] = {"weight": cfg.identity_weight, "network": name}
                if name == "dlib":
                    from metahead.models.face_identity import default_dlib_model_path

                    paths["identity"] = str(default_dlib_model_path())
        for name, path, weight, convention in (
            ("vgg19", vgg19_path, cfg.vgg19_weight, cfg.vgg19_input),
            ("vggface", vggface_path, cfg.vggface_weight, cfg.vggface_input),
        ):
            if path is not None:
                terms[name] = {"weight": weight, "input": convention}
                paths[name] = path
        for name, path in paths.items():
            files[name] = file_sha256(path)
        return {"terms": terms, "sha256": files, "paths": paths}

    def forward(
        self,
        fake: torch.Tensor,
        real: torch.Tensor,
        fake_landmarks: torch.Tensor | None = None,
        real_landmarks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """fake, real: (B, 3, H, W) in [-1, 1]; landmarks (B, 68, 2) pixel coords for the identity term
        (fake_landmarks default to real_landmarks). Returns (weighted total, unweighted terms)."""
        terms: dict[str, torch.Tensor] = {}
        total = fake.new_zeros(())
        for name, net, weight in (("vgg19", self.vgg19, self.cfg.vgg19_weight),
                                  ("vggface", self.vggface, self.cfg.vggface_weight)):  # fmt: skip
            if net is None:
                continue
            with torch.no_grad():
                real_features = net(real)
            terms[name] = l1_feature_loss(real_features, net(fake))
            total = total + weight * terms[name]
        if self.offline:
            terms["pixel"] = multiscale_l1(fake, real.detach(), self.cfg.pixel_scales)
            total = total + self.cfg.pixel_weight * terms["pixel"]
            if self.cfg.laplacian_weight > 0:
                terms["laplacian"] = laplacian_l1(fake, real.detach(), self.cfg.pixel_scales)
                total = total + self.cfg.laplacian_weight * terms["laplacian"]
            if self.identity is not None and real_landmarks is not None:
                fake_landmarks = real_landmarks if fake_landmarks is None else fake_landmarks
                terms["identity"] = self.identity(fake, real, fake_landmarks, real_landmarks)
                total = total + self.cfg.identity_weight * terms["identity"]
        return total, terms


def adversarial_loss(
    fake_realism: torch.Tensor,
    real_features: Sequence[torch.Tensor],
    fake_features: Sequence[torch.Tensor],
    feature_matching_weight: float,
    adversarial_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_ADV = −mean(r̂) + w_fm · (mean over D's blocks of L1(real_feat, fake_feat)); real features are
    constants (feature matching trains G, not D)."""
    realism_term = -fake_realism.mean()
    if len(real_features) == 0:
        raise ValueError("feature matching needs at least one block activation")
    feature_matching = l1_feature_loss(real_features, fake_features) / len(real_features)
    total = adversarial_weight * realism_term + feature_matching_weight * feature_matching
    return total, {"adversarial": realism_term, "feature_matching": feature_matching}


def matching_loss(frame_embeddings: torch.Tensor, video_embedding: torch.Tensor) -> torch.Tensor:
    """L_MCH: mean L1 between every frame embedding ê_i(k) (B, K, N) and the video's row W_i (B, N).
    Gradients reach both E and W (paper)."""
    if frame_embeddings.ndim != 3 or video_embedding.shape != (
        frame_embeddings.shape[0],
        frame_embeddings.shape[2],
    ):
        raise ValueError(
            f"expected frame_embeddings (B, K, N) and video_embedding (B, N), "
            f"got {tuple(frame_embeddings.shape)} and {tuple(video_embedding.shape)}"
        )
    return (frame_embeddings - video_embedding.unsqueeze(1)).abs().mean()


def discriminator_loss(
    real_realism: torch.Tensor, fake_realism: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_DSC hinge: mean(max(0, 1 + r̂)) + mean(max(0, 1 − r))."""
    real_term = F.relu(1.0 - real_realism).mean()
    fake_term = F.relu(1.0 + fake_realism).mean()
    return real_term + fake_term, {"real": real_term, "fake": fake_term}
