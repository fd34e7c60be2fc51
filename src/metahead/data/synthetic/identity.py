"""What makes one synthetic person different from another: face geometry and looks, sampled from a seed.

Units are head units: half the crown-to-chin height is 1. A latent `masculinity` in [0, 1] couples some
traits (jaw squareness, brow weight, beards, hair length) the way they co-vary in real faces, and every
trait also gets its own independent noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FaceShape:
    """Geometry of one head: the parametric surface and where the 68 landmarks sit on it."""

    half_width: float = 0.64  # cheek-to-cheek half width
    half_depth: float = 0.85  # front-to-back half depth
    crown_exponent: float = 2.1  # profile of the upper head (2 = ellipse)
    jaw_exponent: float = 2.3  # profile of the lower head: 2 round, 3 square
    jaw_taper: float = 0.22  # how much narrower the jaw is than the cheeks
    chin_forward: float = 0.38  # the lower face sits forward of the skull
    depth_taper: float = 0.15
    eye_y: float = 0.0
    eye_spacing: float = 0.25  # midline to eye centre
    eye_width: float = 0.24
    eye_opening: float = 0.095
    eye_tilt: float = 0.01  # outer corner higher than the inner one
    iris_radius: float = 0.05
    brow_height: float = 0.15  # above the eye centre
    brow_arch: float = 0.03
    brow_thickness: float = 0.035
    brow_extent: float = 0.04  # how far the brow reaches past the eye's outer corner
    nose_tip_y: float = -0.36
    nose_width: float = 0.11  # half width at the wings
    nose_protrusion: float = 1.0
    mouth_y: float = -0.6
    mouth_half_width: float = 0.19
    upper_lip: float = 0.045
    lower_lip: float = 0.06
    lip_protrusion: float = 0.04
    jaw_top_y: float = -0.05  # height of landmarks 0 and 16
    ear_y: float = -0.12
    ear_height: float = 0.32
    ear_width: float = 0.17
    ear_angle: float = 0.35  # radians the ear stands out from the head
    ear_back: float = 0.2  # radians of azimuth behind the head's side
    neck_half_width: float = 0.36


@dataclass(frozen=True)
class HairStyle:
    bald: bool = False
    # Polar angle (radians from the crown) where the hair ends: at the forehead, the sides and the back.
    front: float = 1.0
    side: float = 1.5
    back: float = 2.3
    opening: float = 1.05  # half-angle of azimuth around the face where the front hairline holds
    sweep: float = 0.0  # asymmetric fringe (a side parting)
    thickness: float = 0.07
    volume: float = 0.04  # extra height on top
    length: float = 0.0  # long hair: how far it hangs below the shell (0 = none)
    strand_frequency: float = 60.0
    wave_phase: float = 0.0


@dataclass(frozen=True)
class Looks:
    skin: tuple[float, float, float]
    lips: tuple[float, float, float]
    iris: tuple[float, float, float]
    brows: tuple[float, float, float]
    hair: tuple[float, float, float]
    sclera: tuple[float, float, float] = (0.92, 0.9, 0.86)
    teeth: tuple[float, float, float] = (0.9, 0.88, 0.8)
    beard: float = 0.0  # density, 0 = none
    beard_reach: float = 0.5  # 0: moustache and goatee .. 1: full beard up to the sideburns
    blush: float = 0.3


@dataclass(frozen=True)
class Identity:
    shape: FaceShape
    looks: Looks
    hair: HairStyle
    smiliness: float = 0.3  # how much this person smiles while talking
    talkativeness: float = 0.5
    masculinity: float = 0.5  # the latent that couples some traits (also the build: shoulder width)


# Skin tones from very light to very dark (sRGB, 0..1), interpolated.
_SKIN_TONES = np.array(
    [
        [0.96, 0.82, 0.73],
        [0.9, 0.72, 0.6],
        [0.8, 0.6, 0.46],
        [0.68, 0.48, 0.34],
        [0.52, 0.35, 0.24],
        [0.36, 0.24, 0.17],
        [0.25, 0.17, 0.13],
    ]
)
_HAIR_COLOURS = {
    "black": ((0.06, 0.05, 0.05), 0.3),
    "dark_brown": ((0.16, 0.1, 0.07), 0.25),
    "brown": ((0.32, 0.2, 0.12), 0.15),
    "light_brown": ((0.5, 0.36, 0.22), 0.08),
    "blond": ((0.78, 0.64, 0.4), 0.08),
    "red": ((0.55, 0.23, 0.1), 0.05),
    "grey": ((0.55, 0.54, 0.52), 0.05),
    "white": ((0.85, 0.84, 0.8), 0.02),
    "dyed": ((0.6, 0.25, 0.5), 0.02),
}
_IRIS_COLOURS = {
    "dark_brown": ((0.22, 0.13, 0.07), 0.35),
    "brown": ((0.38, 0.23, 0.11), 0.25),
    "hazel": ((0.45, 0.37, 0.17), 0.1),
    "green": ((0.3, 0.45, 0.27), 0.08),
    "blue": ((0.3, 0.47, 0.7), 0.14),
    "grey": ((0.5, 0.56, 0.6), 0.08),
}
_LIPSTICKS = np.array([[0.7, 0.1, 0.15], [0.75, 0.35, 0.4], [0.5, 0.2, 0.2], [0.6, 0.15, 0.3]])


def _choice(rng: np.random.Generator, table: dict, weights_scale: dict | None = None) -> np.ndarray:
    names = list(table)
    weights = np.array([table[n][1] * (weights_scale or {}).get(n, 1.0) for n in names])
    name = names[rng.choice(len(names), p=weights / weights.sum())]
    return np.array(table[name][0])


def _jitter(rng: np.random.Generator, colour: np.ndarray, amount: float) -> tuple[float, float, float]:
    out = np.clip(colour * (1 + rng.normal(0, amount)) + rng.normal(0, amount / 2, 3), 0.02, 0.98)
    return tuple(float(c) for c in out)


def sample_face_shape(rng: np.random.Generator, masculinity: float) -> FaceShape:
    m = masculinity
    u = rng.uniform
    half_width = float(np.clip(0.63 + 0.025 * m + rng.normal(0, 0.035), 0.54, 0.74))
    eye_y = u(-0.04, 0.06)
    eye_width = u(0.22, 0.27) * half_width / 0.64
    eye_spacing = half_width * u(0.36, 0.42)
    nose_tip_y = eye_y - u(0.32, 0.44)
    mouth_y = max(nose_tip_y - u(0.2, 0.28), -0.72)
    return FaceShape(
        half_width=half_width,
        half_depth=u(0.81, 0.89),
        crown_exponent=u(2.2, 2.8),
        jaw_exponent=float(np.clip(2.0 + 0.8 * m + rng.normal(0, 0.25), 1.8, 3.2)),
        jaw_taper=float(np.clip(0.28 - 0.12 * m + rng.normal(0, 0.05), 0.08, 0.4)),
        chin_forward=u(0.3, 0.45),
        depth_taper=u(0.08, 0.2),
        eye_y=eye_y,
        eye_spacing=eye_spacing,
        eye_width=eye_width,
        eye_opening=u(0.085, 0.12),
        eye_tilt=float(rng.normal(0.012, 0.012)),
        iris_radius=u(0.046, 0.054),
        brow_height=u(0.12, 0.18),
        brow_arch=u(0.005, 0.045),
        brow_thickness=0.022 + 0.022 * m + u(0.0, 0.015),
        brow_extent=u(0.0, 0.06),
        nose_tip_y=nose_tip_y,
        nose_width=u(0.085, 0.13) + 0.01 * m,
        nose_protrusion=u(0.8, 1.25),
        mouth_y=mouth_y,
        mouth_half_width=u(0.15, 0.22),
        upper_lip=u(0.035, 0.062),
        lower_lip=u(0.05, 0.08) - 0.01 * m,
        lip_protrusion=u(0.03, 0.05),
        jaw_top_y=eye_y - u(0.0, 0.1),
        ear_y=(eye_y + nose_tip_y) / 2 + u(-0.03, 0.03),
        ear_height=u(0.28, 0.36),
        ear_width=u(0.14, 0.19),
        ear_angle=u(0.35, 0.8),
        ear_back=u(0.05, 0.2),
        neck_half_width=0.32 + 0.08 * m + u(-0.02, 0.03),
    )


def sample_hair(rng: np.random.Generator, masculinity: float) -> HairStyle:
    m = masculinity
    u = rng.uniform
    if rng.random() < 0.12 * m:
        return HairStyle(bald=True)
    weights = np.array([0.1 + 0.7 * m, 0.3, 0.7 - 0.6 * m])
    kind = rng.choice(["short", "medium", "long"], p=weights / weights.sum())
    fringe = rng.random() < 0.25
    front = u(1.2, 1.35) if fringe else u(0.8, 1.1) - 0.25 * m * rng.random()
    common = dict(
        front=front,
        opening=u(0.85, 1.15),
        sweep=rng.normal(0, 0.15),
        strand_frequency=u(40, 90),
        wave_phase=u(0, 2 * np.pi),
    )
    if kind == "short":
        return HairStyle(
            side=u(1.4, 1.55), back=u(2.15, 2.4), thickness=u(0.03, 0.08), volume=u(0, 0.08), **common
        )
    if kind == "medium":
        return HairStyle(
            side=u(1.85, 2.15), back=u(2.4, 2.65), thickness=u(0.07, 0.13), volume=u(0.02, 0.1), **common
        )
    return HairStyle(
        side=u(1.95, 2.25),
        back=u(2.45, 2.7),
        thickness=u(0.08, 0.14),
        volume=u(0.02, 0.1),
        length=u(0.6, 1.4),
        **common,
    )


def sample_looks(rng: np.random.Generator, masculinity: float) -> Looks:
    tone = rng.random() ** 0.9
    pos = tone * (len(_SKIN_TONES) - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, len(_SKIN_TONES) - 1)
    skin = _SKIN_TONES[lo] + (pos - lo) * (_SKIN_TONES[hi] - _SKIN_TONES[lo])
    skin = np.clip(skin + rng.normal(0, 0.02, 3) + np.array([0.02, 0, -0.02]) * rng.normal(), 0.05, 1)
    # Darker skin: darker hair and eyes are far more likely.
    dark = {"blond": 1 - tone, "red": 1 - tone, "light_brown": 1 - 0.7 * tone, "black": 0.6 + tone}
    hair = _choice(rng, _HAIR_COLOURS, dark)
    iris = _choice(rng, _IRIS_COLOURS, {"blue": (1 - tone) ** 2, "green": (1 - tone) ** 2, "grey": 1 - tone})
    lips = skin * np.array([0.86, 0.58, 0.58]) + np.array([0.08, 0.0, 0.02])
    if rng.random() < 0.3 * (1 - masculinity):
        lips = 0.5 * lips + 0.5 * _LIPSTICKS[rng.integers(len(_LIPSTICKS))]
    brows = 0.65 * hair + 0.35 * np.array([0.12, 0.08, 0.06])
    beard, beard_reach = 0.0, 0.5
    if rng.random() < 0.4 * masculinity:
        beard = rng.uniform(0.35, 0.9)
        beard_reach = rng.random()
    return Looks(
        skin=_jitter(rng, skin, 0.02),
        lips=_jitter(rng, lips, 0.04),
        iris=_jitter(rng, iris, 0.08),
        brows=_jitter(rng, brows, 0.05),
        hair=_jitter(rng, hair, 0.06),
        sclera=_jitter(rng, np.array([0.92, 0.9, 0.86]), 0.02),
        teeth=_jitter(rng, np.array([0.9, 0.87, 0.78]), 0.03),
        beard=float(beard),
        beard_reach=float(beard_reach),
        blush=float(rng.uniform(0.1, 0.5)),
    )


def sample_identity(rng: np.random.Generator) -> Identity:
    masculinity = float(rng.beta(0.6, 0.6))
    return Identity(
        shape=sample_face_shape(rng, masculinity),
        looks=sample_looks(rng, masculinity),
        hair=sample_hair(rng, masculinity),
        smiliness=float(rng.uniform(0.0, 0.6)),
        talkativeness=float(rng.uniform(0.3, 1.0)),
        masculinity=masculinity,
    )
