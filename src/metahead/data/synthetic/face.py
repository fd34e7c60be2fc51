"""The head surface and the 68 landmarks on it (iBUG order), posed by an expression.

Head space: x towards the image's right in a frontal view (the subject's left), y up, z out of the face;
half the crown-to-chin height is 1. The surface is a deformed ellipsoid: each horizontal section at
height y is an ellipse with half axes a(y) = W taper(y) rho(y) and b(y) rho(y), centred at z = zc(y), where
rho follows a superellipse profile (crown and jaw exponents) and zc moves the lower face forward.

Every landmark is a point of that surface (or a fixed height above it: the nose, the lips), and the
renderer draws the features from the same points, so a landmark always lies on what it names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metahead.data.synthetic.geometry import normalize, smoothstep
from metahead.data.synthetic.identity import FaceShape
from metahead.landmarks.parts import MIRROR_ORDER

MAX_JAW_ANGLE = 0.17  # radians of jaw rotation at jaw = 1 (a wide-open mouth)


@dataclass
class Expression:
    """Per-frame expression controls, each (T,)."""

    jaw: np.ndarray  # 0 closed .. 1 wide open
    lip_part: np.ndarray  # 0 .. 1 lips apart with the jaw closed
    smile: np.ndarray  # 0 .. 1
    pucker: np.ndarray  # -1 (wide) .. 1 (rounded "o")
    brow_raise: np.ndarray  # -1 (frown) .. 1 (raised)
    blink: np.ndarray  # 0 open .. 1 closed
    gaze: np.ndarray  # (T, 2) iris offset in units of the eye's half width / half height

    @staticmethod
    def neutral(num_frames: int = 1) -> Expression:
        z = np.zeros(num_frames)
        return Expression(z, z.copy(), z.copy(), z.copy(), z.copy(), z.copy(), np.zeros((num_frames, 2)))

    def __len__(self) -> int:
        return len(self.jaw)


# ---------------------------------------------------------------------------------------------------
# The surface


def section(shape: FaceShape, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The horizontal section at height y: (rho, width scale, depth scale, centre z)."""
    t = np.clip(y, -1.0, 1.0)
    q = np.where(t >= 0, shape.crown_exponent, shape.jaw_exponent)
    rho = (1.0 - np.abs(t) ** q) ** (1.0 / q)
    below = np.clip((shape.jaw_top_y + 0.05 - t) / (1.0 + shape.jaw_top_y + 0.05), 0.0, 1.0)
    lower = smoothstep(-t)
    width = shape.half_width * (1.0 - shape.jaw_taper * below**1.5)
    depth = shape.half_depth * (1.0 - shape.depth_taper * lower)
    return rho, width, depth, shape.chin_forward * lower


def profile(shape: FaceShape, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half width a, half depth b and centre zc of the horizontal section at height y."""
    rho, width, depth, zc = section(shape, y)
    return width * rho, depth * rho, zc


def surface_point(shape: FaceShape, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Point at azimuth u (0 = straight ahead, +pi/2 = the image's right) and polar angle v (0 = crown)."""
    y = np.cos(v)
    a, b, zc = profile(shape, y)
    return np.stack([a * np.sin(u), y, zc + b * np.cos(u)], axis=-1)


def front_z(shape: FaceShape, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """z of the front of the surface above (x, y) (the silhouette's z outside it)."""
    a, b, zc = profile(shape, y)
    return zc + b * np.sqrt(np.clip(1.0 - (x / np.maximum(a, 1e-6)) ** 2, 0.0, None))


def _implicit(shape: FaceShape, p: np.ndarray) -> np.ndarray:
    """Negative inside the surface, zero on it."""
    rho, width, depth, zc = section(shape, p[..., 1])
    return (p[..., 0] / width) ** 2 + ((p[..., 2] - zc) / depth) ** 2 - rho**2


def surface_normal(shape: FaceShape, p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Outward unit normals at points on (or near) the surface, from the implicit function's gradient."""
    grad = np.empty_like(p, dtype=np.float64)
    for axis in range(3):
        d = np.zeros(3)
        d[axis] = eps
        grad[..., axis] = _implicit(shape, p + d) - _implicit(shape, p - d)
    return normalize(grad)


def jaw_hinge(shape: FaceShape) -> tuple[float, float]:
    """(y, z) of the jaw's rotation axis (parallel to x), just in front of the ears."""
    _, _, zc = profile(shape, np.array(shape.ear_y))
    return shape.ear_y, float(zc)


def jaw_weight(shape: FaceShape, p: np.ndarray) -> np.ndarray:
    """How much a surface point follows the jaw: 0 above the lips, 1 from the lower lip down, 0 behind."""
    _, hinge_z = jaw_hinge(shape)
    below = smoothstep((shape.mouth_y - 0.005 - p[..., 1]) / (0.9 * shape.lower_lip))
    front = smoothstep((p[..., 2] - hinge_z + 0.2) / 0.25)
    return below * front


def rotate_jaw(shape: FaceShape, p: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate points about the jaw hinge by `angle` (broadcast against p[..., 0]); opening moves down-back."""
    hinge_y, hinge_z = jaw_hinge(shape)
    c, s = np.cos(angle), np.sin(angle)
    dy, dz = p[..., 1] - hinge_y, p[..., 2] - hinge_z
    out = p.copy()
    out[..., 1] = hinge_y + c * dy - s * dz
    out[..., 2] = hinge_z + s * dy + c * dz
    return out


def rotate_jaw_vectors(v: np.ndarray, angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    out = v.copy()
    out[..., 1] = c * v[..., 1] - s * v[..., 2]
    out[..., 2] = s * v[..., 1] + c * v[..., 2]
    return out


# ---------------------------------------------------------------------------------------------------
# Landmarks


def jaw_contour(shape: FaceShape, count: int = 9) -> np.ndarray:
    """(count, 2) x, y of the face's frontal outline on the image-left side, from landmark 0 to the chin."""
    y = np.linspace(shape.jaw_top_y, -1.0, 600)
    a, _, _ = profile(shape, y)
    x = -a
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    targets = np.linspace(0.0, arc[-1], count)
    return np.stack([np.interp(targets, arc, x), np.interp(targets, arc, y)], axis=1)


@dataclass
class LandmarkLayout:
    """Landmarks before the surface lookup: frontal x, y, a height above the surface, a jaw weight."""

    x: np.ndarray  # (T, 68)
    y: np.ndarray
    lift: np.ndarray
    jaw_follow: np.ndarray  # (T, 68) 0..1, rotation weight with the jaw


def _mirror_onto(points: slice, x: np.ndarray, y: np.ndarray, lift: np.ndarray) -> None:
    """Sets `points` (a part on the image-right side) to the mirror image, across x = 0, of their
    counterparts on the other side (`parts.MIRROR_ORDER`): the face is built symmetric, expressions aside."""
    counterparts = list(MIRROR_ORDER[points])
    x[:, points] = -x[:, counterparts]
    y[:, points] = y[:, counterparts]
    lift[:, points] = lift[:, counterparts]


def landmark_layout(shape: FaceShape, expr: Expression) -> LandmarkLayout:
    frames = len(expr)
    x = np.zeros((frames, 68))
    y = np.zeros((frames, 68))
    lift = np.zeros((frames, 68))
    follow = np.full((frames, 68), np.nan)  # nan: computed from the surface (jaw_weight)
    col = np.ones((frames, 1))
    smile = expr.smile[:, None]
    pucker = expr.pucker[:, None]
    raise_ = expr.brow_raise[:, None]
    blink = expr.blink[:, None]

    # Jaw outline 0..16 (0 at the image's left, 8 = chin).
    contour = jaw_contour(shape)
    x[:, 0:9] = contour[:, 0]
    y[:, 0:9] = contour[:, 1]
    x[:, 9:17] = -contour[7::-1, 0]
    y[:, 9:17] = contour[7::-1, 1]

    # Eyes. The image-left eye (36..41): 36 outer corner, 37-38 upper lid, 39 inner corner, 40-41 lower lid.
    half_w = shape.eye_width / 2
    upper = 0.6 * shape.eye_opening * (1 + 0.25 * np.clip(raise_, 0, 1) - 0.3 * smile)
    lower = 0.4 * shape.eye_opening * (1 - 0.35 * smile)
    upper = upper + (-0.85 * lower - upper) * blink  # a closed upper lid rests on the lower one
    cx = -shape.eye_spacing
    cy = shape.eye_y
    ex = np.array(
        [cx - half_w, cx - half_w / 3, cx + half_w / 3, cx + half_w, cx + half_w / 3, cx - half_w / 3]
    )
    x[:, 36:42] = ex
    y[:, 36] = cy + shape.eye_tilt
    y[:, 39] = cy - 0.2 * shape.eye_tilt
    y[:, 37:38] = cy + 0.5 * shape.eye_tilt + upper * 0.97
    y[:, 38:39] = cy + 0.15 * shape.eye_tilt + upper * 0.93
    y[:, 40:41] = cy - lower * 0.92
    y[:, 41:42] = cy + 0.3 * shape.eye_tilt - lower
    lift[:, 36:42] = 0.012
    _mirror_onto(slice(42, 48), x, y, lift)

    # Brows 17..21 (outer to inner), mirrored to 22..26 (inner to outer).
    t = np.linspace(0.0, 1.0, 5)  # 0 outer .. 1 inner
    outer_x = cx - half_w - shape.brow_extent
    inner_x = cx + half_w + 0.01
    arch = shape.brow_arch * np.sin(np.pi * np.clip(0.2 + 0.9 * t, 0, 1))
    base = cy + shape.brow_height - 0.02 * (1 - t) + arch
    frown = np.clip(-raise_, 0, 1)
    lift_up = 0.05 * np.clip(raise_, 0, 1) * (0.7 + 0.3 * t) - 0.03 * frown * t
    x[:, 17:22] = outer_x + (inner_x - outer_x) * t + 0.02 * frown * t
    y[:, 17:22] = base + lift_up + 0.01 * smile
    lift[:, 17:22] = 0.012
    _mirror_onto(slice(22, 27), x, y, lift)

    # Nose: bridge 27..30 (30 = tip), nostrils 31..35.
    bridge_top = cy + 0.01
    x[:, 27:31] = 0.0
    y[:, 27:31] = bridge_top + (shape.nose_tip_y - bridge_top) * np.array([0.0, 0.36, 0.7, 1.0])
    lift[:, 27:31] = shape.nose_protrusion * np.array([0.04, 0.09, 0.15, 0.21])
    nw = shape.nose_width
    x[:, 31:36] = np.array([-nw, -0.45 * nw, 0.0, 0.45 * nw, nw])
    y[:, 31:36] = shape.nose_tip_y + np.array([-0.035, -0.058, -0.066, -0.058, -0.035])
    lift[:, 31:36] = shape.nose_protrusion * np.array([0.035, 0.075, 0.115, 0.075, 0.035])

    # Lips. Outer 48..59 (48 left corner, 51 top, 54 right corner, 57 bottom), inner 60..67.
    jaw = expr.jaw[:, None]
    mw = shape.mouth_half_width * (
        1 + 0.14 * smile - 0.22 * np.clip(pucker, 0, 1) + 0.08 * np.clip(-pucker, 0, 1)
    )
    mw = mw * (1 - 0.08 * jaw)
    my = shape.mouth_y * col
    corner_up = 0.035 * smile - 0.01 * np.clip(-pucker, 0, 1)
    ul, ll = shape.upper_lip * col, shape.lower_lip * col
    part = 0.035 * expr.lip_part[:, None]
    rel = np.array([-1.0, -0.62, -0.25, 0.0, 0.25, 0.62, 1.0])  # 48..54 across the mouth
    curve = corner_up * rel**2  # smiling lifts the lip line towards the corners
    upper_h = np.array([0.0, 0.72, 1.0, 0.86, 1.0, 0.72, 0.0])
    x[:, 48:55] = mw * rel
    y[:, 48:55] = my + curve + ul * upper_h
    rel_lo = np.array([0.62, 0.28, 0.0, -0.28, -0.62])  # 55..59
    lower_h = np.array([0.78, 0.98, 1.0, 0.98, 0.78])
    x[:, 55:60] = mw * rel_lo
    y[:, 55:60] = my + corner_up * rel_lo**2 - ll * lower_h
    inner = np.array([-0.86, -0.38, 0.0, 0.38, 0.86])  # 60..64 across, 65..67 back
    x[:, 60:65] = mw * inner
    open_shape = np.array([0.0, 0.8, 1.0, 0.8, 0.0])
    y[:, 60:65] = my + corner_up * inner**2 + part / 2 * open_shape
    x[:, 65:68] = mw * np.array([0.38, 0.0, -0.38])
    y[:, 65:68] = my + corner_up * np.array([0.38, 0.0, 0.38]) ** 2 - part / 2 * np.array([0.8, 1.0, 0.8])
    pro = shape.lip_protrusion * (1 + 0.6 * np.clip(pucker, 0, 1))
    lift[:, 48:60] = pro * np.array([0.3, 0.75, 0.95, 1.0, 0.95, 0.75, 0.3, 0.8, 0.95, 1.0, 0.95, 0.8])
    lift[:, 60:68] = pro * np.array([0.35, 0.85, 0.9, 0.85, 0.35, 0.85, 0.9, 0.85])
    follow[:, 48:55] = 0.0
    follow[:, 55:60] = 1.0
    follow[:, 60:65] = 0.0
    follow[:, 65:68] = 1.0
    follow[:, [48, 54, 60, 64]] = 0.5
    follow[:, 17:48] = 0.0
    return LandmarkLayout(x, y, lift, follow)


def place_on_surface(shape: FaceShape, x: np.ndarray, y: np.ndarray, lift: np.ndarray) -> np.ndarray:
    """(..., 3) points above (x, y) on the front of the surface, `lift` along z."""
    return np.stack([x, y, front_z(shape, x, y) + lift], axis=-1)


def unposed_landmarks(shape: FaceShape, expr: Expression) -> tuple[np.ndarray, np.ndarray]:
    """(T, 68, 3) landmarks before the jaw turns, and (T, 68) how much each one follows the jaw."""
    layout = landmark_layout(shape, expr)
    points = place_on_surface(shape, layout.x, layout.y, layout.lift)
    follow = np.where(np.isnan(layout.jaw_follow), jaw_weight(shape, points), layout.jaw_follow)
    return points, follow


def jaw_angles(follow: np.ndarray, jaw: np.ndarray) -> np.ndarray:
    """Rotation of points with jaw weights `follow` (T, P) for jaw openings `jaw` (T,)."""
    return follow * (MAX_JAW_ANGLE * jaw[:, None])


def landmarks_3d(shape: FaceShape, expr: Expression) -> np.ndarray:
    """(T, 68, 3) head-space landmarks for each frame's expression."""
    points, follow = unposed_landmarks(shape, expr)
    return rotate_jaw(shape, points, jaw_angles(follow, expr.jaw))
