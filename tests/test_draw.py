"""The landmark rasteriser: parts and colours, line width, closure, anti-aliasing, batching, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metahead.landmarks.draw import default_line_width, draw_landmarks, draw_landmarks_uint8
from metahead.landmarks.mean_face import mean_face_landmarks, random_faces
from metahead.landmarks.parts import FACE_PARTS

FAR = -1000.0  # parts moved here are not drawn


def _only(points: np.ndarray, part_name: str) -> np.ndarray:
    """The landmarks with every part but `part_name` moved far outside the image."""
    out = np.full_like(points, FAR)
    part = next(p for p in FACE_PARTS if p.name == part_name)
    out[part.start : part.stop] = points[part.start : part.stop]
    return out


def _color(part_name: str) -> torch.Tensor:
    return torch.tensor(next(p for p in FACE_PARTS if p.name == part_name).color, dtype=torch.float32) / 255


def reference_drawing(points: torch.Tensor, size: int, line_width: float | None = None) -> torch.Tensor:
    """Brute force in float64: every pixel's exact distance to every segment, parts painted in order."""
    pts = points.double()
    reach = (default_line_width(size) if line_width is None else line_width) / 2 + 0.5
    ys, xs = torch.meshgrid(torch.arange(size).double(), torch.arange(size).double(), indexing="ij")
    pixels = torch.stack([xs, ys], -1).reshape(-1, 2)
    image = torch.zeros(pts.shape[0], 3, size * size, dtype=torch.float64)
    for part in FACE_PARTS:
        idx = list(range(part.start, part.stop)) + ([part.start] if part.closed else [])
        dist = torch.full((pts.shape[0], size * size), float("inf"), dtype=torch.float64)
        for i, j in zip(idx[:-1], idx[1:]):
            a, seg = pts[:, i, None], (pts[:, j] - pts[:, i])[:, None]
            rel = pixels - a
            t = ((rel * seg).sum(-1) / (seg * seg).sum(-1).clamp_min(1e-12)).clamp(0, 1)
            dist = torch.minimum(dist, (rel - t[..., None] * seg).norm(dim=-1))
        alpha = (reach - dist).clamp(0, 1)[:, None]
        image = image * (1 - alpha) + torch.tensor(part.color).double().view(1, 3, 1) / 255 * alpha
    return image.view(-1, 3, size, size).float()


@pytest.mark.parametrize("size", [24, 48, 80])
def test_matches_brute_force_reference(size):
    faces = torch.from_numpy(random_faces(2, size, face_fraction=(0.4, 1.3), max_shift=0.3, seed=size))
    torch.testing.assert_close(draw_landmarks(faces, size), reference_drawing(faces, size), atol=2e-5, rtol=0)
    width = 3.5
    torch.testing.assert_close(
        draw_landmarks(faces, size, line_width=width),
        reference_drawing(faces, size, width),
        atol=2e-5,
        rtol=0,
    )


def test_wild_landmarks_far_outside_are_clipped_exactly():
    faces = torch.from_numpy(random_faces(3, 48, seed=1))
    faces[0, 8] = torch.tensor([1e6, 20.0])  # a jaw segment crossing the whole image
    faces[1, 30] = torch.tensor([-5e5, -3e5])
    faces[2] = FAR  # nothing near the image
    drawn = draw_landmarks(faces, 48)
    torch.testing.assert_close(drawn, reference_drawing(faces, 48), atol=2e-5, rtol=0)
    assert drawn[2].abs().max() == 0


@pytest.mark.parametrize("part", [p.name for p in FACE_PARTS])
def test_each_part_is_drawn_in_its_own_colour(part):
    size = 128
    points = np.round(mean_face_landmarks(size))  # integer points: full coverage on each landmark
    image = draw_landmarks(_only(points, part), size)
    color = _color(part)
    covered = image.amax(0) > 0
    assert covered.sum() > 20
    # every drawn pixel is the part's colour times its coverage: channels in the colour's proportions
    alpha = image[color.argmax()] / color.max()
    torch.testing.assert_close(image, color.view(3, 1, 1) * alpha, atol=1e-6, rtol=0)
    spec = next(p for p in FACE_PARTS if p.name == part)
    for x, y in points[spec.start : spec.stop].astype(int):
        torch.testing.assert_close(image[:, y, x], color)
    assert image[:, 0, 0].abs().max() == 0 and image[:, -1, -1].abs().max() == 0  # black background


def test_full_face_colours_and_black_background():
    size = 256
    points = np.round(mean_face_landmarks(size))
    image = draw_landmarks(points, size)
    assert image.shape == (3, size, size) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1
    assert (image.amax(0) > 0).float().mean() < 0.05  # thin lines on black
    assert image[:, :20].abs().max() == 0 and image[:, :, -20:].abs().max() == 0
    # a landmark of each part away from other parts shows that part's exact colour
    for part in FACE_PARTS:
        x, y = points[(part.start + part.stop) // 2].astype(int)
        torch.testing.assert_close(image[:, y, x], _color(part.name))


def test_later_parts_are_painted_over_earlier_ones():
    points = np.full((68, 2), FAR, np.float32)
    points[0:17] = np.stack([np.linspace(0, 31, 17), np.full(17, 10.0)], -1)  # jaw: a horizontal line
    points[27:31] = np.stack([np.full(4, 16.0), np.linspace(0, 31, 4)], -1)  # nose bridge: a vertical one
    image = draw_landmarks(points, 32, line_width=2.0)
    torch.testing.assert_close(image[:, 10, 16], _color("nose_bridge"))
    torch.testing.assert_close(image[:, 10, 4], _color("jaw"))


@pytest.mark.parametrize("size, line_width", [(256, None), (512, None), (256, 3.0), (128, 5.0)])
def test_line_width_scales_with_size(size, line_width):
    points = mean_face_landmarks(size)
    image = draw_landmarks(_only(points, "nose_bridge"), size, line_width)
    expected = default_line_width(size) if line_width is None else line_width
    row = int(points[28, 1])  # mid-bridge: a vertical line, so a row crosses it once
    measured = image[2, row].sum().item()  # blue is 1.0 in the nose bridge's colour
    assert measured == pytest.approx(expected, abs=0.05)
    assert default_line_width(512) == 2 * default_line_width(256)


def test_closed_parts_are_closed_and_open_parts_open():
    size = 128
    points = np.round(mean_face_landmarks(size))
    eye = draw_landmarks(_only(points, "right_eye"), size)
    x, y = (points[41] + points[36]) / 2  # the closing segment 41 -> 36
    assert eye[:, int(round(y)), int(round(x))].amax() > 0.5
    jaw = draw_landmarks(_only(points, "jaw"), size)
    x, y = (points[16] + points[0]) / 2  # no segment 16 -> 0
    assert jaw[:, int(y) - 3 : int(y) + 3, int(x) - 3 : int(x) + 3].abs().max() == 0


def test_anti_aliased_edges():
    size = 256  # lines 2 px wide: full coverage along their middle, a one-pixel ramp at each edge
    image = draw_landmarks(mean_face_landmarks(size, angle_degrees=7.0), size)
    coverage = image.amax(0)
    partial = (coverage > 0.02) & (coverage < 0.98)
    assert partial.sum() > 500  # soft edges, not a binary mask
    assert (coverage == 1.0).sum() > 500


def test_batch_equals_per_image_and_uint8():
    faces = random_faces(5, 64, seed=7)
    batch = draw_landmarks(torch.from_numpy(faces), 64)
    assert batch.shape == (5, 3, 64, 64)
    for i in range(5):
        torch.testing.assert_close(batch[i], draw_landmarks(faces[i], 64), atol=1e-5, rtol=0)
    as_bytes = draw_landmarks_uint8(faces, 64)
    assert as_bytes.shape == (5, 64, 64, 3) and as_bytes.dtype == np.uint8
    np.testing.assert_array_equal(as_bytes[2], draw_landmarks_uint8(faces[2], 64))
    assert draw_landmarks(torch.zeros(0, 68, 2), 16).shape == (0, 3, 16, 16)


def test_shape_and_value_errors():
    with pytest.raises(ValueError, match="68, 2"):
        draw_landmarks(np.zeros((67, 2)), 32)
    with pytest.raises(ValueError, match="68, 2"):
        draw_landmarks(np.zeros((2, 68, 3)), 32)
    with pytest.raises(ValueError, match="68, 2"):
        draw_landmarks(np.zeros((1, 1, 68, 2)), 32)
    bad = mean_face_landmarks(32)
    bad[5, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        draw_landmarks(bad, 32)
    with pytest.raises(ValueError, match="line width"):
        draw_landmarks(mean_face_landmarks(32), 32, line_width=0)


def test_mean_face_template_is_face_sized():
    points = mean_face_landmarks(200, face_fraction=0.6)
    assert points.shape == (68, 2) and points.dtype == np.float32
    width = points[:, 0].max() - points[:, 0].min()
    assert width == pytest.approx(120, rel=1e-4)
    assert 0 < points.min() and points.max() < 200
    jaw, chin = points[0:17], points[8]
    assert chin[1] == jaw[:, 1].max()  # the chin is the lowest point, image y pointing down
    assert points[36, 0] < points[39, 0] < points[42, 0] < points[45, 0]  # 300-W eye corner order
