"""What changes between one person's videos (as in VoxCeleb): background, clothing, lighting, framing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metahead.data.synthetic.geometry import normalize


@dataclass(frozen=True)
class Lighting:
    key_direction: tuple[float, float, float]  # towards the light, camera space (z towards the camera)
    key_colour: tuple[float, float, float]
    fill_direction: tuple[float, float, float]
    fill_colour: tuple[float, float, float]
    ambient: tuple[float, float, float]
    exposure: float


@dataclass(frozen=True)
class Clothing:
    kind: str  # "crew", "vneck", "shirt", "jacket"
    colour: tuple[float, float, float]
    second: tuple[float, float, float]  # shirt under a jacket, or the stripes
    stripes: float  # stripe frequency per head unit, 0 = plain
    torso_half_width: float


@dataclass(frozen=True)
class Background:
    top: tuple[float, float, float]
    bottom: tuple[float, float, float]
    blobs: tuple[tuple[float, ...], ...]  # (cx, cy, rx, ry, r, g, b, strength), in image fractions
    horizon: float  # height of a wall/furniture edge (image fraction), < 0 = none
    horizon_colour: tuple[float, float, float]


@dataclass(frozen=True)
class Framing:
    frame_units: float  # head units spanned by the image height at the head's depth
    centre_x: float  # head centre in the image, fractions of the width / height
    centre_y: float


@dataclass(frozen=True)
class VideoStyle:
    lighting: Lighting
    clothing: Clothing
    background: Background
    framing: Framing


def _colour(rng: np.random.Generator, lo: float = 0.05, hi: float = 0.95) -> tuple[float, float, float]:
    return tuple(float(c) for c in rng.uniform(lo, hi, 3))


def _muted(rng: np.random.Generator) -> tuple[float, float, float]:
    """A clothing colour: mostly muted, sometimes saturated, sometimes near black or white."""
    kind = rng.random()
    if kind < 0.15:
        v = rng.uniform(0.05, 0.2)
        return (v, v, v * rng.uniform(0.9, 1.2))
    if kind < 0.25:
        v = rng.uniform(0.8, 0.95)
        return (v, v, v * rng.uniform(0.95, 1.0))
    hue = rng.uniform(0, 1)
    sat = rng.uniform(0.2, 0.5) if kind < 0.8 else rng.uniform(0.5, 0.9)
    val = rng.uniform(0.25, 0.85)
    rgb = np.clip(np.abs((hue * 6 + np.array([0.0, 4.0, 2.0])) % 6 - 3) - 1, 0, 1)
    return tuple(float(c) for c in val * (1 - sat + sat * rgb))


def sample_lighting(rng: np.random.Generator) -> Lighting:
    az, el = rng.uniform(-1.0, 1.0), rng.uniform(0.1, 0.8)
    key = normalize(np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)]))
    faz, fel = -az * rng.uniform(0.5, 1.5), rng.uniform(-0.1, 0.4)
    fill = normalize(np.array([np.sin(faz) * np.cos(fel), np.sin(fel), np.cos(faz) * np.cos(fel)]))
    warm = rng.uniform(-1, 1)
    key_colour = rng.uniform(0.75, 1.05) * np.array([1 + 0.08 * warm, 1.0, 1 - 0.1 * warm])
    fill_colour = rng.uniform(0.0, 0.3) * np.array([1 - 0.05 * warm, 1.0, 1 + 0.05 * warm])
    ambient = rng.uniform(0.25, 0.45) * np.array([1.0, 1.0, 1.0]) * (1 + rng.normal(0, 0.04, 3))
    return Lighting(
        key_direction=tuple(key),
        key_colour=tuple(key_colour),
        fill_direction=tuple(fill),
        fill_colour=tuple(fill_colour),
        ambient=tuple(ambient),
        exposure=float(rng.uniform(0.9, 1.12)),
    )


def sample_background(rng: np.random.Generator) -> Background:
    base = np.array(_muted(rng))
    top = np.clip(base * rng.uniform(0.8, 1.25) + rng.normal(0, 0.05, 3), 0.02, 0.98)
    bottom = np.clip(base * rng.uniform(0.5, 1.0) + rng.normal(0, 0.05, 3), 0.02, 0.98)
    blobs = []
    for _ in range(rng.integers(0, 7)):
        blobs.append(
            (
                rng.uniform(-0.1, 1.1),
                rng.uniform(-0.1, 0.9),
                rng.uniform(0.04, 0.3),
                rng.uniform(0.04, 0.3),
                *_colour(rng, 0.1, 1.0),
                rng.uniform(0.2, 0.8),
            )
        )
    horizon = rng.uniform(0.45, 0.85) if rng.random() < 0.4 else -1.0
    return Background(
        top=tuple(top), bottom=tuple(bottom), blobs=tuple(blobs), horizon=horizon, horizon_colour=_muted(rng)
    )


def sample_clothing(rng: np.random.Generator, masculinity_hint: float) -> Clothing:
    kind = rng.choice(["crew", "vneck", "shirt", "jacket"], p=[0.35, 0.2, 0.2, 0.25])
    stripes = rng.uniform(4, 14) if (kind in ("crew", "shirt") and rng.random() < 0.25) else 0.0
    return Clothing(
        kind=str(kind),
        colour=_muted(rng),
        second=_muted(rng),
        stripes=float(stripes),
        torso_half_width=float(rng.uniform(1.5, 1.85) + 0.1 * masculinity_hint),
    )


def sample_framing(rng: np.random.Generator) -> Framing:
    return Framing(
        frame_units=float(rng.uniform(2.9, 3.5)),
        centre_x=float(rng.uniform(0.46, 0.54)),
        centre_y=float(rng.uniform(0.42, 0.5)),
    )


def sample_video_style(rng: np.random.Generator, masculinity_hint: float = 0.5) -> VideoStyle:
    return VideoStyle(
        lighting=sample_lighting(rng),
        clothing=sample_clothing(rng, masculinity_hint),
        background=sample_background(rng),
        framing=sample_framing(rng),
    )


def render_background(background: Background, size: int) -> np.ndarray:
    """(size, size, 3) float32 sRGB in [0, 1]: a gradient, soft out-of-focus shapes, maybe an edge."""
    y = (np.arange(size, dtype=np.float32) + 0.5) / size
    x = y[None, :]
    y = y[:, None]
    top, bottom = np.array(background.top, np.float32), np.array(background.bottom, np.float32)
    image = top + (bottom - top) * y[..., None] + np.zeros((size, size, 1), np.float32)
    if background.horizon > 0:
        edge = 1 / (1 + np.exp(np.clip(-(y - background.horizon) * size / 3, -50, 50)))
        image = image + (np.array(background.horizon_colour, np.float32) - image) * (0.6 * edge[..., None])
    for cx, cy, rx, ry, r, g, b, strength in background.blobs:
        d2 = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
        w = strength / (1 + np.exp(np.minimum((np.sqrt(d2) - 1) * 6, 50)))
        image = image + (np.array([r, g, b], np.float32) - image) * w[..., None]
    return np.clip(image, 0, 1).astype(np.float32)
