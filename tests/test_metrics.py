"""Metrics pinned on known inputs: SSIM against scikit-image, PSNR of a known MSE, Fréchet distances of
known Gaussians, landmark error of a known shift, the Inception loader on a random state dict."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from metahead.evaluation import frechet, inception, metrics
from metahead.evaluation.metrics import FramePairs, MetricResources
from metahead.landmarks.mean_face import mean_face_landmarks, random_faces

skimage_metrics = pytest.importorskip("skimage.metrics")


def structured_images(seed: int = 0, size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth gradients, a bright square and a sinusoid, and a blurred, noisy, shifted copy, in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([x, y, 0.5 + 0.5 * np.sin(8 * x + 5 * y)])
    base[:, 10:25, 12:30] = 0.9
    other = 0.8 * np.roll(base, 2, axis=2) + 0.1 + rng.normal(0, 0.05, base.shape)
    return torch.from_numpy(base)[None], torch.from_numpy(np.clip(other, 0, 1))[None]


def skimage_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    return skimage_metrics.structural_similarity(
        a.numpy(),
        b.numpy(),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=0,
    )


# ----------------------------------------------------------------------------------------------
# SSIM, PSNR, L1


def test_ssim_of_identical_images_is_one():
    images = torch.rand(3, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(metrics.ssim(images, images), torch.ones(3), atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ssim_matches_skimage(dtype):
    gen = torch.Generator().manual_seed(1)
    random_a = torch.rand(2, 3, 40, 36, generator=gen, dtype=torch.float64)
    random_b = (random_a + 0.3 * torch.rand(2, 3, 40, 36, generator=gen, dtype=torch.float64)).clamp(0, 1)
    struct_a, struct_b = structured_images()
    for a, b in [(random_a, random_b), (struct_a, struct_b), (struct_a, torch.rand_like(struct_a))]:
        ours = metrics.ssim(a.to(dtype), b.to(dtype))
        reference = torch.tensor([skimage_ssim(a[i], b[i]) for i in range(a.shape[0])], dtype=torch.float64)
        assert torch.allclose(ours.double(), reference, atol=1e-3 if dtype == torch.float32 else 1e-9)


def test_ssim_drops_with_noise_and_rejects_small_images():
    a, _ = structured_images()
    noisy = [(a + s * torch.randn_like(a)).clamp(0, 1) for s in (0.02, 0.1, 0.3)]
    values = [float(metrics.ssim(a, n)) for n in noisy]
    assert values[0] > values[1] > values[2]
    with pytest.raises(ValueError, match="window"):
        metrics.ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_psnr_of_known_mse_and_l1():
    real = torch.full((2, 3, 16, 16), -0.2)
    fake = real + 0.2  # 0.1 on the [0, 1] scale: MSE 0.01 -> 20 dB, L1 0.1
    pairs = FramePairs(fake=fake, real=real)
    resources = MetricResources()
    assert torch.allclose(
        metrics.get_metric("psnr").compute(pairs, resources), torch.full((2,), 20.0, dtype=torch.float64)
    )
    assert torch.allclose(
        metrics.get_metric("l1").compute(pairs, resources), torch.full((2,), 0.1, dtype=torch.float64)
    )
    a, b = structured_images()
    reference = skimage_metrics.peak_signal_noise_ratio(a[0].numpy(), b[0].numpy(), data_range=1.0)
    assert float(metrics.psnr(a, b)) == pytest.approx(reference, abs=1e-9)
    assert float(metrics.psnr(a, a)) == pytest.approx(100.0)  # capped, not inf


def test_registered_ssim_works_on_minus_one_to_one_images():
    a, b = structured_images()
    pairs = FramePairs(fake=b * 2 - 1, real=a * 2 - 1)
    value = metrics.get_metric("ssim").compute(pairs, MetricResources())
    assert float(value) == pytest.approx(skimage_ssim(b[0], a[0]), abs=1e-6)


# ----------------------------------------------------------------------------------------------
# Registry


def test_registry_names_and_errors():
    expected = {"ssim", "psnr", "l1", "csim", "landmark_error", "fid", "identity_fd"}
    assert expected <= set(metrics.METRICS)
    assert metrics.get_metric("fid").kind == "distribution" and not metrics.get_metric("fid").higher_is_better
    assert metrics.get_metric("ssim").arrow == "↑"
    with pytest.raises(metrics.UnknownMetricError, match="valid metrics: .*csim.*ssim"):
        metrics.get_metric("ssmi")
    with pytest.raises(metrics.UnknownMetricError, match="'foo', 'bar'"):
        metrics.get_metrics(["ssim", "foo", "bar"])
    with pytest.raises(ValueError, match="already registered"):
        metrics.register_metric("ssim", higher_is_better=True)(lambda pairs, resources: pairs.fake)
    with pytest.raises(ValueError, match="unknown needs"):
        metrics.register_metric("x", higher_is_better=True, needs=("gpu",))


def test_default_metric_set_has_fid_only_with_weights(tmp_path, monkeypatch):
    monkeypatch.delenv(inception.INCEPTION_WEIGHTS_ENV, raising=False)
    names = metrics.available_metric_names()
    assert "fid" not in names and "identity_fd" in names
    weights = tmp_path / inception.INCEPTION_WEIGHTS_FILE
    weights.write_bytes(b"x")
    monkeypatch.setenv(inception.INCEPTION_WEIGHTS_ENV, str(weights))
    assert metrics.available_metric_names()[0] == "fid"


def test_summarize_leaves_out_nan():
    summary = metrics.summarize([1.0, 3.0, math.nan])
    assert (summary.mean, summary.std, summary.count, summary.missing) == (2.0, 1.0, 2, 1)
    assert math.isnan(metrics.summarize([math.nan]).mean)


# ----------------------------------------------------------------------------------------------
# Fréchet distance


def test_frechet_distance_of_diagonal_gaussians_is_closed_form():
    rng = np.random.default_rng(0)
    mean_a, mean_b = rng.normal(size=6), rng.normal(size=6)
    std_a, std_b = rng.uniform(0.5, 2, 6), rng.uniform(0.5, 2, 6)
    a = frechet.GaussianStats(mean_a, np.diag(std_a**2), 100)
    b = frechet.GaussianStats(mean_b, np.diag(std_b**2), 100)
    closed_form = np.sum((mean_a - mean_b) ** 2) + np.sum((std_a - std_b) ** 2)
    assert frechet.frechet_distance_from_stats(a, b) == pytest.approx(closed_form, rel=1e-10)


def test_frechet_distance_matches_sqrtm_formula_on_full_covariances():
    rng = np.random.default_rng(1)
    dim = 12
    factors = [rng.normal(size=(dim, dim)) for _ in range(2)]
    covs = [f @ f.T + 0.1 * np.eye(dim) for f in factors]
    means = [rng.normal(size=dim) for _ in range(2)]
    sqrt_product = scipy.linalg.sqrtm(covs[0] @ covs[1]).real
    reference = np.sum((means[0] - means[1]) ** 2) + np.trace(covs[0] + covs[1] - 2 * sqrt_product)
    ours = frechet.frechet_distance_from_stats(
        frechet.GaussianStats(means[0], covs[0], 0), frechet.GaussianStats(means[1], covs[1], 0)
    )
    assert ours == pytest.approx(reference, rel=1e-8)


def test_frechet_distance_from_samples():
    rng = np.random.default_rng(2)
    a = rng.normal(0.0, 1.0, size=(20000, 3))
    b = rng.normal(1.0, 2.0, size=(20000, 3))
    assert frechet.frechet_distance(a, b) == pytest.approx(3 * 1.0 + 3 * 1.0, rel=0.03)  # |Δμ|² + Σ(σa-σb)²
    # Fewer samples than dimensions (singular covariances): still ~0 against itself, finite otherwise.
    few = rng.normal(size=(10, 64))
    assert frechet.frechet_distance(few, few) == pytest.approx(0.0, abs=1e-8)
    assert frechet.frechet_distance(torch.from_numpy(few), torch.from_numpy(few + 1.0)) == pytest.approx(
        64.0, rel=1e-8
    )
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet.frechet_distance(few[:1], few)
    with pytest.raises(ValueError, match="different dimensions"):
        frechet.frechet_distance(few, few[:, :3])


# ----------------------------------------------------------------------------------------------
# Landmark error


def test_landmark_error_of_known_shift():
    reference = torch.from_numpy(random_faces(3, 128, seed=3))
    shifted = reference + torch.tensor([3.0, 4.0])  # every point 5 px away
    interocular = (reference[:, 36] - reference[:, 45]).norm(dim=-1).double()
    assert torch.allclose(metrics.landmark_error(shifted, reference), 5.0 / interocular)
    assert torch.allclose(metrics.landmark_error(reference, reference), torch.zeros(3, dtype=torch.float64))
    missing = shifted.clone()
    missing[1] = math.nan
    error = metrics.landmark_error(missing, reference)
    assert math.isnan(error[1]) and not math.isnan(error[0])


def test_landmark_error_metric_uses_the_detector_on_both_frame_sets():
    base = torch.from_numpy(mean_face_landmarks(64))

    def detector(images: torch.Tensor) -> torch.Tensor:
        # A stand-in detector: faces in bright images sit 2 px to the right; dark images have no face.
        out = base.expand(images.shape[0], 68, 2).clone()
        out[images.mean(dim=(1, 2, 3)) > 0.25] += torch.tensor([2.0, 0.0])
        out[images.mean(dim=(1, 2, 3)) < -0.75] = math.nan
        return out

    real = torch.zeros(3, 3, 64, 64)
    fake = torch.stack([torch.zeros(3, 64, 64), torch.full((3, 64, 64), 0.5), torch.full((3, 64, 64), -0.9)])
    resources = MetricResources(landmark_detector=detector)
    result = metrics.evaluate_frames(["landmark_error"], FramePairs(fake=fake, real=real), resources)
    values = result.per_frame["landmark_error"]
    interocular = float(metrics.interocular_distance(base[None]))
    assert values[0] == 0.0 and values[1] == pytest.approx(2.0 / interocular) and math.isnan(values[2])
    assert metrics.summarize(values).missing == 1


# ----------------------------------------------------------------------------------------------
# CSIM and identity Fréchet distance (with a stand-in identity network; dlib's is tested by its owner)


class StandInIdentityNet(nn.Module):
    """Chips (B, 3, 150, 150) in 0..255 -> 128-d descriptors, by fixed random projection of a pooled chip."""

    def __init__(self) -> None:
        super().__init__()
        self.project = nn.Linear(3 * 10 * 10, 128)
        nn.init.normal_(self.project.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        return self.project(nn.functional.adaptive_avg_pool2d(chips / 255, 10).flatten(1))


def face_batch(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(count, 3, 128, 128, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return images, torch.from_numpy(random_faces(count, 128, max_angle_degrees=5, seed=seed))


def test_csim_and_identity_fd_with_stand_in_network():
    images, landmarks = face_batch(3, seed=4)
    others, other_landmarks = face_batch(3, seed=5)
    resources = MetricResources(identity_net=StandInIdentityNet())
    same = metrics.evaluate_frames(
        ["csim", "identity_fd"], FramePairs(fake=images, real=images, real_landmarks=landmarks), resources
    )
    assert np.allclose(same.per_frame["csim"], 1.0, atol=1e-5)
    real_features, fake_features = same.features["identity_fd"]
    assert real_features.shape == (3, 128)
    assert metrics.distribution_score([real_features], [fake_features]) == pytest.approx(0.0, abs=1e-6)

    different = metrics.evaluate_frames(
        ["csim", "identity_fd"],
        FramePairs(fake=others, real=images, real_landmarks=landmarks, fake_landmarks=other_landmarks),
        resources,
    )
    assert max(different.per_frame["csim"]) < 0.999
    assert metrics.distribution_score(*map(lambda f: [f], different.features["identity_fd"])) > 1e-3
    # The direct function agrees with the metric.
    direct = frechet.identity_frechet_distance(
        resources.identity_net, images, landmarks, others, other_landmarks
    )
    assert direct == pytest.approx(
        metrics.distribution_score(*map(lambda f: [f], different.features["identity_fd"]))
    )
    with pytest.raises(ValueError, match="needs the real frames' landmarks"):
        metrics.evaluate_frames(["csim"], FramePairs(fake=images, real=images), resources)


def test_frame_pairs_check_shapes():
    with pytest.raises(ValueError, match="3 generated frames but 2 real"):
        FramePairs(fake=torch.zeros(3, 3, 8, 8), real=torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="real_landmarks must be"):
        FramePairs(
            fake=torch.zeros(2, 3, 8, 8), real=torch.zeros(2, 3, 8, 8), real_landmarks=torch.zeros(2, 5, 2)
        )


@pytest.mark.slow
def test_csim_with_dlib_network_separates_images():
    images, landmarks = face_batch(2, seed=6)
    resources = MetricResources()
    pairs = FramePairs(
        fake=images.flip(0), real=images, real_landmarks=landmarks, fake_landmarks=landmarks.flip(0)
    )
    same = metrics.evaluate_frames(
        ["csim"], FramePairs(fake=images, real=images, real_landmarks=landmarks), resources
    )
    assert np.allclose(same.per_frame["csim"], 1.0, atol=1e-5)
    assert max(metrics.evaluate_frames(["csim"], pairs, resources).per_frame["csim"]) < 0.999


# ----------------------------------------------------------------------------------------------
# Inception for FID


def random_inception_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the pt_inception file's layout: our keys plus what the file carries beyond them
    (the 1008-class classifier and batch-norm counters)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in inception.FIDInception().state_dict().items():
        noise = torch.randn(value.shape, generator=gen) * 0.1
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("conv.weight"):  # He initialisation keeps the signal alive through 94 layers
            state[key] = torch.randn(value.shape, generator=gen) * math.sqrt(2 / value[0].numel())
        elif key.endswith(("bn.weight", "running_var")):
            state[key] = 1 + noise.abs()
        else:
            state[key] = noise
    state["fc.weight"] = torch.randn(1008, 2048, generator=gen)
    state["fc.bias"] = torch.randn(1008, generator=gen)
    return state


def test_inception_layout():
    model = inception.FIDInception()
    state = model.state_dict()
    convs = [m for m in model.modules() if isinstance(m, inception.ConvBN)]
    assert len(convs) == 94  # Inception-v3's 94 conv + batch-norm units, no auxiliary head
    # torchvision's inception_v3 has 27,161,264 parameters; less its auxiliary head (3,326,696) and the
    # 1000-class classifier (2,049,000) leaves the feature extractor's.
    assert sum(p.numel() for p in model.parameters()) == 21_785_568
    for key, shape in {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_4a_3x3.bn.running_var": (192,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    }.items():
        assert tuple(state[key].shape) == shape
    assert model.Conv2d_1a_3x3.bn.eps == 1e-3
    model.train()
    assert not model.training  # batch norm always uses the file's statistics


def test_inception_loads_weight_file_and_gives_2048_features(tmp_path, monkeypatch):
    state = random_inception_state_dict()
    path = tmp_path / inception.INCEPTION_WEIGHTS_FILE
    torch.save(state, path)
    monkeypatch.setenv(inception.INCEPTION_WEIGHTS_ENV, str(path))
    model = inception.load_fid_inception()
    loaded = model.state_dict()
    assert torch.equal(loaded["Mixed_7c.branch_pool.conv.weight"], state["Mixed_7c.branch_pool.conv.weight"])
    assert torch.equal(
        loaded["Mixed_6b.branch7x7_2.bn.running_mean"], state["Mixed_6b.branch7x7_2.bn.running_mean"]
    )

    # Inception at 299x299 costs seconds per image on a loaded CPU: two images, four passes.
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    images[1] = torch.linspace(-1, 1, 64)  # a smooth ramp, unlike the noise image
    features = inception.inception_features(model, images, batch_size=1)
    assert features.shape == (2, inception.FEATURE_DIM) and torch.isfinite(features).all()
    assert (features >= 0).all()  # an average of ReLU outputs
    assert torch.allclose(features, model(images), atol=1e-5)  # batching does not matter
    assert not torch.allclose(features[0], features[1], atol=1e-3)


@pytest.mark.slow
def test_fid_of_a_set_with_itself_is_zero(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(random_inception_state_dict(), path)
    model = inception.load_fid_inception(path)
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    assert frechet.fid(images, images, model) == pytest.approx(0.0, abs=1e-4)
    assert frechet.fid(images, images.flip(-1) * 0.5, model) > 1e-3


def test_inception_preprocessing_is_fids():
    model = inception.FIDInception(quantize=False)
    images = torch.rand(2, 3, 50, 70) * 2 - 1
    prepared = model.preprocess(images)
    unit = torch.nn.functional.interpolate(
        (images + 1) / 2, size=(299, 299), mode="bilinear", align_corners=False
    )
    assert prepared.shape == (2, 3, 299, 299) and torch.allclose(prepared, unit * 2 - 1, atol=1e-6)
    quantized = inception.FIDInception(quantize=True).preprocess(torch.full((1, 3, 299, 299), 0.001))
    assert torch.allclose(quantized, torch.full_like(quantized, 128 / 255 * 2 - 1), atol=1e-6)


def test_tensorflow_pooling_ignores_padding():
    # A constant input stays constant through the SAME average pool, corners included.
    x = torch.full((1, 2, 5, 5), 3.0)
    assert torch.allclose(inception._same_average_pool(x), x)
    assert not torch.allclose(torch.nn.functional.avg_pool2d(x, 3, 1, 1), x)  # PyTorch's default would not


def test_inception_weight_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(inception.INCEPTION_WEIGHTS_ENV, raising=False)
    with pytest.raises(inception.InceptionWeightsMissing, match="METAHEAD_INCEPTION_WEIGHTS.*identity_fd"):
        inception.load_fid_inception()
    with pytest.raises(inception.InceptionWeightsMissing, match="not found"):
        inception.load_fid_inception(tmp_path / "nope.pth")
    with pytest.raises(inception.InceptionWeightsMissing):
        MetricResources().check([metrics.get_metric("fid")])

    state = random_inception_state_dict()
    del state["Mixed_5b.branch1x1.conv.weight"]
    state["Mixed_5b.branch1x1.bn.weight"] = torch.zeros(3)
    state["Extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(
        ValueError,
        match=r"bad\.pth.*1 missing keys.*Mixed_5b\.branch1x1\.conv\.weight.*"
        r"1 unexpected keys.*Extra\.weight.*shape mismatches.*Mixed_5b\.branch1x1\.bn\.weight",
    ):
        inception.load_fid_inception(path)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pth: cannot read"):
        inception.load_fid_inception(garbage)


def test_dlib_detector_on_small_frames_finds_the_same_landmarks():
    pytest.importorskip("dlib")
    from skimage import data

    from metahead.landmarks.detect import make_detector

    crop = (
        torch.from_numpy(data.astronaut()[26:226, 122:322].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    )
    small = torch.nn.functional.interpolate(
        crop, size=(64, 64), mode="bilinear", antialias=True, align_corners=False
    )
    detect = metrics.detector_on_images(make_detector("dlib"))
    full_points, small_points = detect(crop), detect(small)  # the 64-px face is found only upsampled
    assert torch.isfinite(full_points).all() and torch.isfinite(small_points).all()
    expected = (full_points + 0.5) * (64 / 200) - 0.5
    assert float(metrics.landmark_error(small_points, expected)) < 0.1
    no_face = detect(torch.zeros(1, 3, 64, 64))
    assert torch.isnan(no_face).all()


def test_mean_csim_to_is_the_mean_pairwise_cosine():
    from metahead.evaluation.csim import csim, mean_csim_to

    gen = torch.Generator().manual_seed(0)
    frames, references = torch.randn(5, 16, generator=gen), torch.randn(3, 16, generator=gen)
    expected = torch.stack([csim(f.expand(3, -1), references).mean() for f in frames])
    assert torch.allclose(mean_csim_to(frames, references).float(), expected, atol=1e-6)
    same_direction = mean_csim_to(references[:1], references[:1] * 2.0)
    assert torch.allclose(same_direction, torch.ones(1, dtype=torch.float64))


def _textured_face(size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A (1, 3, S, S) image in [0, 1] with detail a few pixels across, landmarks covering its middle."""
    noise = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    image = metrics._blur_valid(torch.nn.functional.pad(noise, (3,) * 4, mode="replicate"), _window(7, 1.0))
    corners = torch.tensor([[size * 0.2, size * 0.25], [size * 0.8, size * 0.9]], dtype=torch.float64)
    landmarks = torch.cat([corners, corners.mean(0, keepdim=True).expand(66, 2)]).unsqueeze(0)
    return image, landmarks


def _window(size: int, sigma: float) -> torch.Tensor:
    return metrics.gaussian_window(size, sigma)


def _blurred(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    padded = torch.nn.functional.pad(image, (radius,) * 4, mode="replicate")
    return metrics._blur_valid(padded, _window(2 * radius + 1, sigma))


def test_sharpness_is_one_for_the_real_frame_and_falls_with_blur():
    image, landmarks = _textured_face()
    assert metrics.sharpness(image, image, landmarks).item() == pytest.approx(1.0)
    mild, strong = (
        metrics.sharpness(_blurred(image, 0.8), image, landmarks),
        metrics.sharpness(_blurred(image, 2.0), image, landmarks),
    )
    assert strong.item() < mild.item() < 0.8
    assert strong.item() < 0.1


def test_a_checkerboard_on_a_blur_does_not_score_as_sharp():
    image, landmarks = _textured_face()
    blurred = _blurred(image, 2.0)
    size = image.shape[-1]
    checkerboard = ((torch.arange(size)[:, None] + torch.arange(size)[None, :]) % 2 * 2 - 1).double()
    checkered = (blurred + 0.15 * checkerboard).clamp(0, 1)
    # the pixel-level pattern is as strong as the texture itself, yet the score stays that of the blur
    assert (checkered - blurred).abs().mean() > 0.1
    assert (
        metrics.sharpness(checkered, image, landmarks).item()
        < metrics.sharpness(blurred, image, landmarks).item() + 0.05
    )
    assert metrics.sharpness(checkered, image, landmarks).item() < 0.15


def test_sharpness_looks_only_at_the_face_box_and_is_registered():
    image, landmarks = _textured_face()
    outside = image.clone()
    outside[..., :, :3] = 0.5  # a flat band left of the face box (x >= 9) and of its filter's reach
    assert metrics.sharpness(outside, image, landmarks).item() == pytest.approx(1.0)
    flat = torch.full_like(image, 0.5)
    assert math.isnan(metrics.sharpness(image, flat, landmarks).item())  # no detail to compare with
    pairs = FramePairs(fake=image * 2 - 1, real=image * 2 - 1, real_landmarks=landmarks.float())
    value = metrics.get_metric("sharpness").compute(pairs, MetricResources())
    assert value.shape == (1,) and value.item() == pytest.approx(1.0)
    assert "sharpness" in metrics.available_metric_names()


def test_blockiness_is_about_one_for_a_photograph_and_flags_a_nearest_upsampling_mosaic():
    image, landmarks = _textured_face()
    assert metrics.blockiness(image, landmarks).item() == pytest.approx(1.0, abs=0.15)
    assert metrics.blockiness(_blurred(image, 2.0), landmarks).item() == pytest.approx(1.0, abs=0.15)
    coarse = torch.nn.functional.avg_pool2d(image, 8)
    mosaic = torch.nn.functional.interpolate(coarse, scale_factor=8, mode="nearest")
    assert math.isinf(metrics.blockiness(mosaic, landmarks).item())  # steps only on the 8-px grid
    # a faint mosaic on a blurred face: sharpness barely moves, blockiness does
    faint = 0.85 * _blurred(image, 1.0) + 0.15 * mosaic
    assert metrics.blockiness(faint, landmarks).item() > 1.25
    # seams off the pixel grid a generator's upsampling makes (shifted 3 px) are not what it counts
    assert metrics.blockiness(torch.roll(faint, (3, 3), dims=(-2, -1)), landmarks).item() < 1.15
    assert math.isnan(metrics.blockiness(torch.full_like(image, 0.5), landmarks).item())


def test_blockiness_is_registered_and_reported_beside_sharpness():
    from metahead.evaluation.report import PAPER_COLUMNS

    image, landmarks = _textured_face()
    pairs = FramePairs(fake=image * 2 - 1, real=image * 2 - 1, real_landmarks=landmarks.float())
    metric = metrics.get_metric("blockiness")
    assert not metric.higher_is_better
    assert metric.compute(pairs, MetricResources()).shape == (1,)
    assert "blockiness" in metrics.available_metric_names()
    assert PAPER_COLUMNS.index("blockiness") == PAPER_COLUMNS.index("sharpness") + 1
