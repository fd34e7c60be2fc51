"""Evaluation metrics, registered by name so that the command line can check the names it is given.

Two kinds of metric:
- **paired**: one value per (generated, real) frame pair: SSIM, PSNR, L1, CSIM, landmark error.
  `Metric.compute(pairs, resources)` -> (B,) tensor; NaN marks a frame the metric could not score
  (e.g. no face detected); `summarize` reports such frames instead of averaging them in.
- **distribution**: a Fréchet distance between Gaussians fitted to features of all real and all generated
  frames: FID (Inception; only when its weight file is given) and the identity Fréchet distance
  (dlib's face-identity descriptors; its own name, never "FID"). `Metric.compute(images, landmarks,
  resources)` -> (B, D) features per frame, so that features of many videos can be gathered (in
  parallel, see evaluation.runner) and the distance taken once over all of them
  (`distribution_score`).

Images follow the package convention: float (B, 3, H, W) in [-1, 1]; SSIM, PSNR and L1 are computed on
the [0, 1] scale (data range 1). Heavy resources (the identity network, Inception, a landmark detector)
are built on first use by `MetricResources`.

Add a metric with::

    @register_metric("name", higher_is_better=True, description="...")
    def _name(pairs: FramePairs, resources: MetricResources) -> torch.Tensor: ...
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from metahead.landmarks.parts import NUM_LANDMARKS

MetricKind = Literal["paired", "distribution"]
# What a metric needs beyond the images; MetricResources provides each on demand.
NEEDS = ("landmarks", "identity_net", "inception", "landmark_detector")

# A landmark detector for metrics: images (B, 3, H, W) in [-1, 1] -> landmarks (B, 68, 2), a row of NaN
# where no face was found.
ImageLandmarkDetector = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Metric:
    name: str
    kind: MetricKind
    higher_is_better: bool
    compute: Callable[..., torch.Tensor]
    description: str = ""
    needs: frozenset[str] = frozenset()
    unit: str = ""

    @property
    def arrow(self) -> str:
        """↑ or ↓, as in the paper's table headers."""
        return "↑" if self.higher_is_better else "↓"


METRICS: dict[str, Metric] = {}


def register_metric(
    name: str,
    *,
    higher_is_better: bool,
    kind: MetricKind = "paired",
    needs: Iterable[str] = (),
    description: str = "",
    unit: str = "",
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator adding a metric to METRICS under `name`."""
    needs = frozenset(needs)
    if unknown := needs - set(NEEDS):
        raise ValueError(f"metric {name!r}: unknown needs {sorted(unknown)}; choose from {list(NEEDS)}")
    if kind not in ("paired", "distribution"):
        raise ValueError(f"metric {name!r}: kind must be 'paired' or 'distribution', got {kind!r}")

    def add(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        METRICS[name] = Metric(
            name, kind, higher_is_better, fn, description or (fn.__doc__ or "").strip(), needs, unit
        )
        return fn

    return add


class UnknownMetricError(ValueError):
    pass


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise UnknownMetricError(
            f"unknown metric {name!r}; valid metrics: {', '.join(sorted(METRICS))}"
        ) from None


def get_metrics(names: Iterable[str]) -> list[Metric]:
    """Metrics by name, checking all names first (one error listing every unknown name)."""
    names = list(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UnknownMetricError(
            f"unknown metric(s) {', '.join(map(repr, unknown))}; valid metrics: {', '.join(sorted(METRICS))}"
        )
    return [METRICS[n] for n in names]


# ----------------------------------------------------------------------------------------------
# Inputs and lazily built resources


@dataclass
class FramePairs:
    """Generated frames and the real frames they are compared with, all (B, 3, H, W) in [-1, 1].

    real_landmarks: (B, 68, 2) landmarks of the real frames; fake_landmarks: those the generated frames
    were driven with (default: real_landmarks, as in self-reenactment).
    """

    fake: torch.Tensor
    real: torch.Tensor
    real_landmarks: torch.Tensor | None = None
    fake_landmarks: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.fake.dim() != 4 or self.fake.shape[1] != 3:
            raise ValueError(f"fake images must be (B, 3, H, W), got {tuple(self.fake.shape)}")
        if self.real.dim() != 4 or self.real.shape[1] != 3:
            raise ValueError(f"real images must be (B, 3, H, W), got {tuple(self.real.shape)}")
        if self.fake.shape[0] != self.real.shape[0]:
            raise ValueError(f"{self.fake.shape[0]} generated frames but {self.real.shape[0]} real frames")
        for name in ("real_landmarks", "fake_landmarks"):
            points = getattr(self, name)
            if points is not None and tuple(points.shape) != (self.fake.shape[0], NUM_LANDMARKS, 2):
                raise ValueError(
                    f"{name} must be ({self.fake.shape[0]}, {NUM_LANDMARKS}, 2), got {tuple(points.shape)}"
                )

    @property
    def driving_landmarks(self) -> torch.Tensor | None:
        return self.real_landmarks if self.fake_landmarks is None else self.fake_landmarks

    def require_landmarks(self, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
        if self.real_landmarks is None:
            raise ValueError(
                f"metric {metric!r} needs the real frames' landmarks (FramePairs.real_landmarks)"
            )
        return self.real_landmarks, self.driving_landmarks  # type: ignore[return-value]


@dataclass
class MetricResources:
    """Networks and detectors the metrics need, built on first use and then kept.

    inception_weights: path of pt_inception-2015-12-05-*.pth (else $METAHEAD_INCEPTION_WEIGHTS);
    identity_net / inception / landmark_detector may be given ready-made (tests, shared instances).
    """

    device: str | torch.device = "cpu"
    inception_weights: str | os.PathLike | None = None
    identity_weights: str | os.PathLike | None = None  # dlib .dat; None = face-recognition-models' file
    identity_net: Any = None
    inception: Any = None
    landmark_detector: ImageLandmarkDetector | None = None
    detector_name: str = "dlib"

    def get_identity_net(self):
        if self.identity_net is None:
            from metahead.models.face_identity import FaceIdentityNet

            self.identity_net = FaceIdentityNet.from_dlib_file(self.identity_weights).to(self.device).eval()
        return self.identity_net

    def get_inception(self):
        if self.inception is None:
            from metahead.evaluation.inception import load_fid_inception

            self.inception = load_fid_inception(self.inception_weights, device=self.device)
        return self.inception

    def get_landmark_detector(self) -> ImageLandmarkDetector:
        if self.landmark_detector is None:
            from metahead.landmarks.detect import make_detector

            self.landmark_detector = detector_on_images(make_detector(self.detector_name))
        return self.landmark_detector

    def check(self, metrics: Sequence[Metric]) -> None:
        """Fail early, before hours of evaluation, when a metric's resource cannot be had."""
        needs = set().union(*(m.needs for m in metrics)) if metrics else set()
        if "inception" in needs and self.inception is None:
            from metahead.evaluation.inception import inception_weights_path

            inception_weights_path(self.inception_weights)  # raises InceptionWeightsMissing with advice
        if "identity_net" in needs and self.identity_net is None and self.identity_weights is None:
            from metahead.models.face_identity import default_dlib_model_path

            default_dlib_model_path()


def available_metric_names(resources: MetricResources | None = None) -> list[str]:
    """The default metric set: FID only where the Inception weights are configured."""
    from metahead.evaluation.inception import InceptionWeightsMissing, inception_weights_path

    names = ["ssim", "psnr", "l1", "sharpness", "blockiness", "csim", "landmark_error", "identity_fd"]
    try:
        inception_weights_path(resources.inception_weights if resources else None)
        names.insert(0, "fid")
    except InceptionWeightsMissing:
        pass
    return names


# ----------------------------------------------------------------------------------------------
# Plain functions (also usable on their own)


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]."""
    return (images + 1) / 2


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian, the taps scipy.ndimage.gaussian_filter uses (radius (size - 1) / 2)."""
    offsets = torch.arange(size, dtype=dtype) - (size - 1) / 2
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / taps.sum()


def _blur_valid(images: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur per channel, only where the window fits (no padding)."""
    channels = images.shape[1]
    horizontal = window.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = window.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    return F.conv2d(F.conv2d(images, horizontal, groups=channels), vertical, groups=channels)


def ssim(
    images_a: torch.Tensor,
    images_b: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity per image (B,) of (B, C, H, W) images with the given data range.

    Wang et al. 2004: Gaussian window (11 taps, σ 1.5), C1 = (k1 L)², C2 = (k2 L)², population
    (co)variances; the SSIM map is averaged over the positions where the whole window fits and over
    channels. Equals skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=L, channel_axis=...) per image.
    """
    if images_a.shape != images_b.shape or images_a.dim() != 4:
        raise ValueError(
            f"SSIM needs two (B, C, H, W) batches of one shape, got {tuple(images_a.shape)} "
            f"and {tuple(images_b.shape)}"
        )
    if min(images_a.shape[-2:]) < window_size:
        raise ValueError(
            f"images of {tuple(images_a.shape[-2:])} are smaller than the {window_size}-pixel window"
        )
    dtype = torch.float64 if images_a.dtype == torch.float64 else torch.float32
    a, b = images_a.to(dtype), images_b.to(dtype)
    window = gaussian_window(window_size, sigma, dtype).to(a.device)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mean_a, mean_b = _blur_valid(a, window), _blur_valid(b, window)
    var_a = _blur_valid(a * a, window) - mean_a**2
    var_b = _blur_valid(b * b, window) - mean_b**2
    cov_ab = _blur_valid(a * b, window) - mean_a * mean_b
    ssim_map = ((2 * mean_a * mean_b + c1) * (2 * cov_ab + c2)) / (
        (mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2)
    )
    return ssim_map.mean(dim=(1, 2, 3))


# PSNR of identical images is infinite; the MSE floor caps it (at 100 dB for data range 1).
_MSE_FLOOR = 1e-10


def psnr(images_a: torch.Tensor, images_b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image (B,) in dB: 10 log10(L² / MSE)."""
    if images_a.shape != images_b.shape:
        raise ValueError(
            f"PSNR needs two batches of one shape, got {tuple(images_a.shape)} and {tuple(images_b.shape)}"
        )
    mse = (images_a.double() - images_b.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(_MSE_FLOOR * data_range**2))


def l1_error(images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per image (B,)."""
    if images_a.shape != images_b.shape:
        raise ValueError(
            f"L1 needs two batches of one shape, got {tuple(images_a.shape)} and {tuple(images_b.shape)}"
        )
    return (images_a.double() - images_b.double()).abs().flatten(1).mean(1)


# Sharpness: detail energy of a band-pass (Laplacian of a Gaussian) on the face region. σ = 1 px keeps the
# band that carries eyes, mouth and hair at 64²-256² and takes out the Nyquist band where upsampling
# checkerboards live (a 2-pixel checkerboard passes at 0.7 % of its amplitude; 8-pixel detail at ~70 %).
SHARPNESS_SIGMA = 1.0
FACE_BOX_MARGIN = 0.1  # of the landmarks' box size, on each side


def face_box_mask(landmarks: torch.Tensor, height: int, width: int, margin: float = FACE_BOX_MARGIN):
    """(B, 68, 2) landmarks -> (B, 1, H, W) bool: their bounding box grown by `margin` on each side."""
    low, high = landmarks.amin(dim=1), landmarks.amax(dim=1)  # (B, 2) as (x, y)
    pad = (high - low) * margin
    low, high = low - pad, high + pad
    xs = torch.arange(width, dtype=landmarks.dtype).view(1, 1, width)
    ys = torch.arange(height, dtype=landmarks.dtype).view(1, height, 1)
    inside = (
        (xs >= low[:, 0, None, None]) & (xs <= high[:, 0, None, None])
        & (ys >= low[:, 1, None, None]) & (ys <= high[:, 1, None, None])
    )  # fmt: skip
    return inside.unsqueeze(1)


def _luma(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB → (B, 1, H, W) Rec. 601 luma, float64."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64, device=images.device)
    return (images.double() * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)


def band_detail(images: torch.Tensor, sigma: float = SHARPNESS_SIGMA) -> torch.Tensor:
    """Laplacian of a Gaussian (σ px) of the luma of (B, 3, H, W) images in [0, 1]: (B, 1, H, W)."""
    luma = _luma(images)
    radius = max(1, math.ceil(3 * sigma))
    window = gaussian_window(2 * radius + 1, sigma)
    padded = F.pad(luma, (radius + 1,) * 4, mode="replicate")
    blurred = _blur_valid(padded, window)
    laplacian = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    return F.conv2d(blurred, laplacian.view(1, 1, 3, 3))


def sharpness(images: torch.Tensor, reference: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """Per image (B,): the variance of `band_detail` of `images` over that of `reference` ([0, 1], B, 3, H,
    W), both on the face box of `landmarks` (the reference's). 1 = as much detail as the real frame, a
    blur scores towards 0; above 1 is more detail (or noise) than the real frame has. NaN where the
    reference has no detail there."""
    height, width = images.shape[-2:]
    mask = face_box_mask(landmarks.double().cpu(), height, width).to(images.device)

    def masked_variance(detail: torch.Tensor) -> torch.Tensor:
        count = mask.flatten(1).sum(1).clamp_min(1)
        values = torch.where(mask, detail, torch.zeros_like(detail)).flatten(1)
        mean = values.sum(1) / count
        return (torch.where(mask, detail - mean.view(-1, 1, 1, 1), torch.zeros_like(detail)) ** 2).flatten(
            1
        ).sum(1) / count

    fake_variance = masked_variance(band_detail(images))
    real_variance = masked_variance(band_detail(reference))
    return torch.where(
        real_variance > 1e-12, fake_variance / real_variance, torch.full_like(real_variance, math.nan)
    )


# Blockiness: a generator that upsamples by nearest neighbour (G's up blocks, their skip paths above all)
# leaves seams on a grid of 2, 4 or 8 pixels when it is undertrained: a mosaic that the band-pass of
# `sharpness` counts as detail. Edges between pixels p-1 and p (mod p) are compared with all others.
BLOCK_PERIODS = (2, 4, 8)


def blockiness(images: torch.Tensor, landmarks: torch.Tensor, periods: Sequence[int] = BLOCK_PERIODS):
    """Per image (B,): the largest, over `periods`, of the mean luma step across grid lines (every p-th
    pixel boundary, rows and columns) over the mean step elsewhere, on the face box of `landmarks`.
    ~1 for a photograph (no grid is special), above 1 for a mosaic (inf: steps only on the grid); NaN for a
    flat face box."""
    height, width = images.shape[-2:]
    luma = _luma(images).squeeze(1)
    inside = face_box_mask(landmarks.double().cpu(), height, width).squeeze(1).to(images.device)
    # steps between neighbours: across columns (B, H, W-1) and across rows (B, H-1, W), each kept where
    # both pixels lie in the face box
    steps = ((luma[:, :, 1:] - luma[:, :, :-1]).abs(), (luma[:, 1:, :] - luma[:, :-1, :]).abs())
    kept = (inside[:, :, 1:] & inside[:, :, :-1], inside[:, 1:, :] & inside[:, :-1, :])
    worst = torch.full((images.shape[0],), -math.inf, dtype=torch.float64, device=images.device)
    for period in periods:
        on_grid = [torch.zeros_like(k) for k in kept]
        on_grid[0][:, :, period - 1 :: period] = True
        on_grid[1][:, period - 1 :: period, :] = True
        grid_sum = sum((s * (k & g)).flatten(1).sum(1) for s, k, g in zip(steps, kept, on_grid))
        grid_count = sum((k & g).flatten(1).sum(1) for k, g in zip(kept, on_grid))
        off_sum = sum((s * (k & ~g)).flatten(1).sum(1) for s, k, g in zip(steps, kept, on_grid))
        off_count = sum((k & ~g).flatten(1).sum(1) for k, g in zip(kept, on_grid))
        grid_mean, off_mean = grid_sum / grid_count.clamp_min(1), off_sum / off_count.clamp_min(1)
        worst = torch.maximum(worst, grid_mean / off_mean)  # x/0 = inf: a pure mosaic; 0/0 = NaN: flat
    return worst


# Outer eye corners of the 68-point scheme: 300-W's inter-ocular normalisation.
OUTER_EYE_CORNERS = (36, 45)


def interocular_distance(landmarks: torch.Tensor) -> torch.Tensor:
    """(B, 68, 2) -> (B,) distance between the outer eye corners (points 37 and 46, 1-based)."""
    right, left = OUTER_EYE_CORNERS
    return (landmarks[:, right] - landmarks[:, left]).norm(dim=-1)


def landmark_error(predicted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean point-to-point distance (B,) between two (B, 68, 2) landmark sets, divided by the reference's
    inter-ocular distance. NaN where either set is missing (a NaN row: no face found)."""
    predicted, reference = torch.as_tensor(predicted).double(), torch.as_tensor(reference).double()
    if predicted.shape != reference.shape or predicted.dim() != 3 or predicted.shape[-1] != 2:
        raise ValueError(
            f"landmark sets must both be (B, 68, 2), got {tuple(predicted.shape)}, {tuple(reference.shape)}"
        )
    distance = (predicted - reference).norm(dim=-1).mean(dim=1)
    iod = interocular_distance(reference)
    return torch.where(iod > 0, distance / iod, torch.full_like(distance, math.nan))


def detector_on_images(detector: Any, policy: str = "largest", min_side: int = 256) -> ImageLandmarkDetector:
    """Wrap a `metahead.landmarks.detect.LandmarkDetector` (uint8 HWC images, list of faces) into the
    batched callable the metrics take: (B, 3, H, W) in [-1, 1] -> (B, 68, 2), NaN rows for no face.
    Frames smaller than `min_side` are upsampled (bilinear) for detection, since dlib's HOG detector
    misses faces below ~80 px, and the landmarks mapped back to the frame's pixels."""
    from metahead.landmarks.detect import select_face

    def detect(images: torch.Tensor) -> torch.Tensor:
        images = images.detach().float().cpu()
        height, width = images.shape[-2:]
        scale = max(1, math.ceil(min_side / min(height, width)))
        if scale > 1:
            images = F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
        pixels = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        out = torch.full((images.shape[0], NUM_LANDMARKS, 2), math.nan, dtype=torch.float32)
        for i, image in enumerate(pixels.permute(0, 2, 3, 1).numpy()):
            face = select_face(detector.detect(np.ascontiguousarray(image)), image.shape, policy)
            if face is not None:
                out[i] = torch.from_numpy(np.asarray(face.landmarks, dtype=np.float32))
        # pixel centres at integers: x_small = (x_big + 0.5) / scale - 0.5
        return (out + 0.5) / scale - 0.5

    return detect


# ----------------------------------------------------------------------------------------------
# Registered metrics


@register_metric(
    "ssim", higher_is_better=True, description="structural similarity (Gaussian 11/1.5, [0,1] scale)"
)
def _ssim_metric(pairs: FramePairs, resources: MetricResources) -> torch.Tensor:
    return ssim(_to_unit(pairs.fake), _to_unit(pairs.real), data_range=1.0)


@register_metric(
    "psnr", higher_is_better=True, unit="dB", description="peak signal-to-noise ratio, [0,1] scale"
)
def _psnr_metric(pairs: FramePairs, resources: MetricResources) -> torch.Tensor:
    return psnr(_to_unit(pairs.fake), _to_unit(pairs.real), data_range=1.0)


@register_metric("l1", higher_is_better=False, description="mean absolute pixel error, [0,1] scale")
def _l1_metric(pairs: FramePairs, resources: MetricResources) -> torch.Tensor:
    return l1_error(_to_unit(pairs.fake), _to_unit(pairs.real))


@register_metric(
    "sharpness",
    higher_is_better=True,
    needs=("landmarks",),
    description="band-pass (LoG σ 1 px) detail on the face box, generated over real (1 = real's detail; a "
    "blur scores towards 0, a checkerboard does not count)",
)
def _sharpness_metric(pairs: FramePairs, resources: MetricResources) -> torch.Tensor:
    real_landmarks, _ = pairs.require_landmarks("sharpness")
    return sharpness(_to_unit(pairs.fake), _to_unit(pairs.real), real_landmarks)


@register_metric(
    "blockiness",
    higher_is_better=False,
    needs=("landmarks",),
    description="luma steps across every 2nd/4th/8th pixel boundary over those elsewhere, on the face box "
    "(worst period; ~1 for a photograph, above 1 for a nearest-upsampling mosaic)",
)
def _blockiness_metric(pairs: FramePairs, resources: MetricResources) -> torch.Tensor:
    real_landmarks, _ = pairs.require_landmarks("blockiness")
    return blockiness(_to_unit(pairs.fake), real_landmarks)


@register_metric(
    "csim",
    higher_is_better=True,
    needs=("landmarks", "identity_net"),
    description="cosine similarity of dlib face-identity descriptors of generated and real faces",
)
def _csim_metric(pairs: FramePairs, resources: MetricResources) -> torch.Tensor:
    from metahead.evaluation.csim import csim_from_images

    real_landmarks, fake_landmarks = pairs.require_landmarks("csim")
    net = resources.get_identity_net()
    return csim_from_images(net, pairs.fake, fake_landmarks, pairs.real, real_landmarks).double().cpu()


@register_metric(
    "landmark_error",
    higher_is_better=False,
    needs=("landmark_detector",),
    description="mean distance of landmarks detected on generated vs real frames / inter-ocular distance",
)
def _landmark_error_metric(pairs: FramePairs, resources: MetricResources) -> torch.Tensor:
    detect = resources.get_landmark_detector()
    return landmark_error(detect(pairs.fake), detect(pairs.real))


@register_metric(
    "fid",
    higher_is_better=False,
    kind="distribution",
    needs=("inception",),
    description="Fréchet Inception distance (pt_inception-2015-12-05 weights, 2048-d pool features)",
)
def _fid_features(
    images: torch.Tensor, landmarks: torch.Tensor | None, resources: MetricResources
) -> torch.Tensor:
    from metahead.evaluation.inception import inception_features

    return inception_features(resources.get_inception(), images)


@register_metric(
    "identity_fd",
    higher_is_better=False,
    kind="distribution",
    needs=("landmarks", "identity_net"),
    description="Fréchet distance of dlib face-identity descriptors (not FID: another network and space)",
)
def _identity_fd_features(
    images: torch.Tensor, landmarks: torch.Tensor | None, resources: MetricResources
) -> torch.Tensor:
    from metahead.evaluation.csim import face_descriptors

    if landmarks is None:
        raise ValueError("metric 'identity_fd' needs landmarks to align the faces")
    return face_descriptors(resources.get_identity_net(), images, landmarks).double().cpu()


# ----------------------------------------------------------------------------------------------
# Applying several metrics


@dataclass
class FrameResults:
    """What a set of metrics gives for one batch of frame pairs (e.g. one test video).

    per_frame: paired metric -> list of per-frame values (NaN = not scorable);
    features: distribution metric -> (real features (B, D), generated features (B, D)).
    """

    per_frame: dict[str, list[float]] = field(default_factory=dict)
    features: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@torch.no_grad()
def evaluate_frames(
    metrics: Sequence[Metric | str], pairs: FramePairs, resources: MetricResources
) -> FrameResults:
    """Apply each metric to the frame pairs."""
    metrics = [get_metric(m) if isinstance(m, str) else m for m in metrics]
    results = FrameResults()
    for metric in metrics:
        if metric.kind == "paired":
            values = metric.compute(pairs, resources)
            results.per_frame[metric.name] = [float(v) for v in values.double().cpu()]
        else:
            real = metric.compute(pairs.real, pairs.real_landmarks, resources)
            fake = metric.compute(pairs.fake, pairs.driving_landmarks, resources)
            results.features[metric.name] = (
                real.double().cpu().numpy(),
                fake.double().cpu().numpy(),
            )
    return results


def distribution_score(real_features: Sequence[np.ndarray], fake_features: Sequence[np.ndarray]) -> float:
    """Fréchet distance between all gathered real and generated features (lists of (B_i, D) arrays)."""
    from metahead.evaluation.frechet import frechet_distance

    return frechet_distance(np.concatenate(list(real_features)), np.concatenate(list(fake_features)))


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float
    count: int  # values averaged
    missing: int  # NaN values left out (frames the metric could not score)

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "std": self.std, "count": self.count, "missing": self.missing}


def summarize(values: Iterable[float]) -> Summary:
    """Mean and population standard deviation over finite values; NaNs counted as missing."""
    array = np.asarray(list(values), dtype=np.float64)
    finite = array[~np.isnan(array)]
    if finite.size == 0:
        return Summary(math.nan, math.nan, 0, int(array.size))
    return Summary(float(finite.mean()), float(finite.std()), int(finite.size), int(array.size - finite.size))
