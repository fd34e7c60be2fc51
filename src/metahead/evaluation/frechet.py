"""Fréchet distance between Gaussians fitted to feature sets: FID (Inception pool features) and the
identity Fréchet distance (face-identity descriptors, reported under its own name, never as "FID").

    d² = |μ₁ − μ₂|² + tr(Σ₁) + tr(Σ₂) − 2 tr((Σ₁ Σ₂)^½)

tr((Σ₁ Σ₂)^½) is computed as Σ √λᵢ of the symmetric positive semi-definite matrix Σ₁^½ Σ₂ Σ₁^½, which
has the same eigenvalues as Σ₁ Σ₂. Unlike `scipy.linalg.sqrtm(Σ₁ Σ₂)` this never yields complex
values or NaN for the singular covariances that fewer samples than dimensions give (2048-d Inception
features from a few hundred frames); eigenvalues at round-off level are set to zero.
All of it runs in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class GaussianStats:
    """Mean (D,) and covariance (D, D) of a feature set, and how many samples made them."""

    mean: np.ndarray
    covariance: np.ndarray
    count: int


def _as_features(features: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    array = features.detach().cpu().double().numpy() if torch.is_tensor(features) else np.asarray(features)
    array = array.astype(np.float64, copy=False)
    if array.ndim != 2:
        raise ValueError(f"{name}: features must be (num_samples, dim), got shape {array.shape}")
    if array.shape[0] < 2:
        raise ValueError(f"{name}: a covariance needs at least 2 samples, got {array.shape[0]}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: features contain NaN or infinity")
    return array


def gaussian_stats(features: torch.Tensor | np.ndarray, name: str = "features") -> GaussianStats:
    """Mean and (unbiased, N − 1) covariance of (N, D) features, as the FID implementations compute them."""
    array = _as_features(features, name)
    return GaussianStats(
        mean=array.mean(axis=0),
        covariance=np.atleast_2d(np.cov(array, rowvar=False)),
        count=array.shape[0],
    )


def _clip_round_off(eigenvalues: np.ndarray) -> np.ndarray:
    """Zero the eigenvalues of a PSD matrix that are round-off, not signal: below dim·ε·λmax (the
    accuracy of a symmetric eigensolver). Their square roots would otherwise add up to ~1e-6 of the
    trace over the null space of a singular covariance."""
    tolerance = (
        eigenvalues.size * np.finfo(np.float64).eps * max(float(np.abs(eigenvalues).max(initial=0.0)), 0.0)
    )
    return np.where(eigenvalues > tolerance, eigenvalues, 0.0)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(_clip_round_off(eigenvalues))) @ eigenvectors.T


def trace_sqrt_product(covariance_a: np.ndarray, covariance_b: np.ndarray) -> float:
    """tr((Σa Σb)^½) for symmetric PSD Σa, Σb, via the eigenvalues of Σa^½ Σb Σa^½."""
    root_a = _psd_sqrt(covariance_a)
    middle = root_a @ covariance_b @ root_a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(_clip_round_off(eigenvalues)).sum())


def frechet_distance_from_stats(a: GaussianStats, b: GaussianStats) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(μa, Σa) and N(μb, Σb) (the quantity FID reports)."""
    mean_a, mean_b = (
        np.atleast_1d(np.asarray(a.mean, np.float64)),
        np.atleast_1d(np.asarray(b.mean, np.float64)),
    )
    cov_a = np.atleast_2d(np.asarray(a.covariance, np.float64))
    cov_b = np.atleast_2d(np.asarray(b.covariance, np.float64))
    dim = mean_a.shape[0]
    if mean_a.shape != mean_b.shape or cov_a.shape != (dim, dim) or cov_b.shape != (dim, dim):
        raise ValueError(
            f"Gaussians of different dimensions: mean {mean_a.shape} / {mean_b.shape}, "
            f"covariance {cov_a.shape} / {cov_b.shape}"
        )
    diff = mean_a - mean_b
    distance = (
        float(diff @ diff)
        + float(np.trace(cov_a))
        + float(np.trace(cov_b))
        - 2.0 * trace_sqrt_product(cov_a, cov_b)
    )
    return max(distance, 0.0)  # round-off can make identical sets come out at -1e-12


def frechet_distance(features_a: torch.Tensor | np.ndarray, features_b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets."""
    return frechet_distance_from_stats(
        gaussian_stats(features_a, "first set"), gaussian_stats(features_b, "second set")
    )


def fid(real_images: torch.Tensor, fake_images: torch.Tensor, inception, batch_size: int = 32) -> float:
    """FID between two image sets (B, 3, H, W) in [-1, 1] with an `inception.FIDInception` network."""
    from metahead.evaluation.inception import inception_features

    return frechet_distance(
        inception_features(inception, real_images, batch_size=batch_size),
        inception_features(inception, fake_images, batch_size=batch_size),
    )


def identity_frechet_distance(
    identity_net,
    real_images: torch.Tensor,
    real_landmarks: torch.Tensor,
    fake_images: torch.Tensor,
    fake_landmarks: torch.Tensor | None = None,
) -> float:
    """Fréchet distance between the face-identity descriptors (dlib's 128-D network on aligned chips) of
    real and generated faces. Not FID: a different network and feature space; report it by its own name.
    Generated faces are aligned with `fake_landmarks` (default: the real frames' landmarks, which
    drove the generator)."""
    from metahead.evaluation.csim import face_descriptors

    fake_landmarks = real_landmarks if fake_landmarks is None else fake_landmarks
    return frechet_distance(
        face_descriptors(identity_net, real_images, real_landmarks),
        face_descriptors(identity_net, fake_images, fake_landmarks),
    )
