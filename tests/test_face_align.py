"""Face-chip alignment: dlib's chips reproduced pixel for pixel, batching, gradients, bad landmarks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metahead.models.face_align import FIT_LANDMARKS, _template_points, align_face_chips

dlib = pytest.importorskip("dlib")


def landmarks_from_template(
    scale: float, angle: float, centre: tuple[float, float], size: int = 150
) -> np.ndarray:
    """68 integer landmarks (as dlib's shape predictor gives) whose fit points are dlib's template
    moved by a similarity; the unused points sit at the template's centre."""
    template = _template_points(size, 0.25, torch.float64, torch.device("cpu")).numpy() - size / 2
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    points = np.tile(np.array(centre, dtype=np.float64), (68, 1))
    points[list(FIT_LANDMARKS)] = template @ rotation.T * scale + np.array(centre)
    return np.round(points)


def dlib_chip(image: np.ndarray, landmarks: np.ndarray, size: int = 150) -> np.ndarray:
    parts = dlib.points([dlib.point(int(x), int(y)) for x, y in landmarks])
    shape = dlib.full_object_detection(dlib.rectangle(0, 0, 1, 1), parts)
    return dlib.get_face_chip(image, shape, size=size, padding=0.25)


def test_known_geometry_is_dlibs_half_pixel_convention():
    # Template landmarks at scale 1 in a 150x150 image: chip pixel u samples image x = u + 0.5.
    ramp = torch.arange(150, dtype=torch.float64).expand(150, 150)
    image = torch.stack([ramp, ramp.T, torch.zeros_like(ramp)])[None]
    landmarks = torch.from_numpy(_template_points(150, 0.25, torch.float64, torch.device("cpu")).numpy())
    full = torch.full((1, 68, 2), 75.0, dtype=torch.float64)
    full[0, list(FIT_LANDMARKS)] = landmarks
    chip = align_face_chips(image, full)[0]
    # Last row/column: their right/bottom neighbour is outside the image, so dlib paints them black.
    expected = torch.arange(149, dtype=torch.float64) + 0.5
    assert torch.allclose(chip[0, 10, :149], expected, atol=1e-9)
    assert torch.allclose(chip[1, :149, 10], expected, atol=1e-9)
    assert chip[:, 149, :].abs().max() == 0 and chip[:, :, 149].abs().max() == 0


@pytest.mark.parametrize(
    "scale, angle, centre, image_size",
    [
        (0.9, 0.3, (120.5, 100.0), (240, 260)),  # plain bilinear
        (2.6, -0.2, (250.0, 230.0), (480, 500)),  # one pyramid level
        (5.5, 0.1, (420.0, 400.0), (820, 800)),  # two pyramid levels
        (1.3, 0.5, (40.0, 200.0), (300, 320)),  # face partly outside the image
    ],
)
def test_chips_equal_dlib_get_face_chip(scale, angle, centre, image_size):
    rng = np.random.default_rng(0)
    h, w = image_size
    # smooth random image plus noise: exercises both flat and textured regions
    base = rng.uniform(0, 255, (h // 16 + 2, w // 16 + 2, 3))
    image = np.kron(base, np.ones((16, 16, 1)))[:h, :w] + rng.normal(0, 20, (h, w, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    landmarks = landmarks_from_template(scale, angle, centre)
    expected = dlib_chip(image, landmarks).astype(np.float32)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    chip = align_face_chips(tensor, torch.from_numpy(landmarks)[None].float(), quantize=True)
    got = chip[0].permute(1, 2, 0).numpy()
    assert got.dtype == np.float32
    mismatched = np.abs(got - expected) > 0
    assert np.abs(got - expected).max() <= 1 and mismatched.mean() < 1e-3
    # Without the 8-bit truncation the chip is the continuous version: about half a level brighter.
    smooth = align_face_chips(tensor, torch.from_numpy(landmarks)[None].float())[0].permute(1, 2, 0).numpy()
    inside = expected > 0
    assert 0.2 < (smooth - expected)[inside].mean() < 2.0


def test_batch_equals_items_and_other_sizes():
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.uniform(0, 255, (2, 3, 500, 500)))
    landmarks = torch.from_numpy(
        np.stack(
            [landmarks_from_template(1.0, 0.1, (200, 220)), landmarks_from_template(3.0, -0.4, (260, 250))]
        )
    )
    both = align_face_chips(image, landmarks, size=64, padding=0.3)
    assert both.shape == (2, 3, 64, 64) and both.dtype == torch.float64
    for i in range(2):
        assert torch.equal(
            align_face_chips(image[i : i + 1], landmarks[i : i + 1], size=64, padding=0.3)[0], both[i]
        )


def test_gradient_wrt_images():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 40, 40, dtype=torch.float64, requires_grad=True)
    landmarks = torch.from_numpy(landmarks_from_template(0.2, 0.3, (20, 21)))[None]
    assert torch.autograd.gradcheck(
        lambda x: align_face_chips(x, landmarks, size=12), (image,), fast_mode=True
    )
    # quantize: floor in the forward pass, identity in the backward pass
    chips = align_face_chips(image * 255, landmarks, size=12, quantize=True)
    assert torch.equal(chips, chips.floor())
    chips.sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_degenerate_landmarks_are_reported_per_item():
    good = torch.from_numpy(landmarks_from_template(1.0, 0.0, (100, 100)))
    images = torch.zeros(4, 3, 200, 200)
    landmarks = torch.stack([good, good.clone(), good.clone(), good.clone()])
    landmarks[1] = 50.0  # all points equal
    landmarks[3, 40, 0] = float("nan")
    with pytest.raises(
        ValueError, match=r"items 1 \(landmarks collapse to a point\), 3 \(NaN/inf landmarks\)"
    ):
        align_face_chips(images, landmarks)
    with pytest.raises(ValueError, match="68, 2"):
        align_face_chips(images, landmarks[:, :5])
    with pytest.raises(ValueError, match="4 images but 2 landmark sets"):
        align_face_chips(images, landmarks[:2])
