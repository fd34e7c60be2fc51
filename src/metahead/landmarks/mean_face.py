"""A frontal mean-face template of the 68 landmarks, built from simple curves (ours, not a dataset's mean).

Used by tests and benchmarks wherever a realistic, face-sized landmark set is needed without a detector.
"""

from __future__ import annotations

import math

import numpy as np

from metahead.landmarks.parts import NUM_LANDMARKS


def _ellipse(center: tuple[float, float], half_w: float, half_h: float, count: int) -> np.ndarray:
    """`count` points on an ellipse starting at its left end, running over the top (image y points down)."""
    theta = math.pi - np.arange(count) * (2 * math.pi / count)
    return np.stack([center[0] + half_w * np.cos(theta), center[1] - half_h * np.sin(theta)], -1)


def _unit_template() -> np.ndarray:
    """(68, 2) in a unit box: x from 0 (jaw's image-left end) to 1, y from brow tops (~0) to the chin (1)."""
    jaw_angle = np.linspace(0.0, math.pi, 17)
    jaw = np.stack([0.5 - 0.5 * np.cos(jaw_angle), 0.28 + 0.72 * np.sin(jaw_angle) ** 0.8], -1)
    brow_t = np.linspace(0.0, 1.0, 5)
    brow_arc = 0.10 - 0.08 * np.sin(math.pi * (0.2 + 0.7 * brow_t))
    right_brow = np.stack([0.08 + 0.34 * brow_t, brow_arc], -1)  # outer -> inner
    left_brow = np.stack([1.0 - right_brow[::-1, 0], brow_arc[::-1]], -1)  # inner -> outer
    nose_bridge = np.stack([np.full(4, 0.5), np.linspace(0.24, 0.54, 4)], -1)
    nostril_x = np.linspace(0.40, 0.60, 5)
    nostrils = np.stack([nostril_x, 0.62 - 0.03 * (np.abs(nostril_x - 0.5) / 0.1) ** 2 + 0.01], -1)
    # Eyes: outer corner, two upper-lid points, inner corner, two lower-lid points (300-W order).
    right_eye = _ellipse((0.30, 0.28), 0.09, 0.035, 6)  # starts at image-left = the outer corner
    left_eye = _ellipse((0.70, 0.28), 0.09, 0.035, 6)  # starts at image-left = the inner corner
    outer_lips = _ellipse((0.5, 0.80), 0.17, 0.07, 12)
    inner_lips = _ellipse((0.5, 0.80), 0.11, 0.02, 8)
    points = np.concatenate(
        [jaw, right_brow, left_brow, nose_bridge, nostrils, right_eye, left_eye, outer_lips, inner_lips]
    )
    assert points.shape == (NUM_LANDMARKS, 2)
    return points.astype(np.float32)


MEAN_FACE_UNIT = _unit_template()


def mean_face_landmarks(
    size: int,
    face_fraction: float = 0.6,
    center: tuple[float, float] | None = None,
    angle_degrees: float = 0.0,
) -> np.ndarray:
    """The template placed in a `size`² image: its width is `face_fraction * size`, centred on `center`
    (default: the image centre), rotated in the image plane by `angle_degrees`. Returns float32 (68, 2)."""
    cx, cy = ((size - 1) / 2.0, (size - 1) / 2.0) if center is None else center
    width = face_fraction * size
    centred = (MEAN_FACE_UNIT - MEAN_FACE_UNIT.mean(0)) * width
    a = math.radians(angle_degrees)
    rotation = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=np.float32)
    return (centred @ rotation.T + np.array([cx, cy], dtype=np.float32)).astype(np.float32)


def random_faces(
    batch: int,
    size: int,
    face_fraction: tuple[float, float] = (0.5, 0.7),
    max_angle_degrees: float = 15.0,
    max_shift: float = 0.08,
    seed: int = 0,
) -> np.ndarray:
    """`batch` template faces with random scale, in-plane rotation and shift (as a fraction of `size`)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batch):
        shift = rng.uniform(-max_shift, max_shift, 2) * size
        out.append(
            mean_face_landmarks(
                size,
                face_fraction=float(rng.uniform(*face_fraction)),
                center=((size - 1) / 2.0 + shift[0], (size - 1) / 2.0 + shift[1]),
                angle_degrees=float(rng.uniform(-max_angle_degrees, max_angle_degrees)),
            )
        )
    return np.stack(out)
