"""Smooth random trajectories of head pose and expression for one video.

Each channel is a sum of a few sinusoids with random periods and phases (smooth, deterministic, cheap),
squashed into its range with tanh so it never leaves it. Speech is a fast syllable rhythm under a slow
envelope; blinks are short bumps at random times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metahead.data.synthetic.face import Expression
from metahead.data.synthetic.identity import Identity

MAX_YAW = np.radians(35.0)
MAX_PITCH = np.radians(20.0)
MAX_ROLL = np.radians(15.0)


@dataclass
class Motion:
    yaw: np.ndarray  # (T,) radians
    pitch: np.ndarray
    roll: np.ndarray
    shift: np.ndarray  # (T, 2) head translation in head units (x right, y up)
    expression: Expression

    def __len__(self) -> int:
        return len(self.yaw)

    def frame(self, index: int) -> Motion:
        """One frame as a length-1 motion."""
        sl = slice(index, index + 1)
        e = self.expression
        expr = Expression(
            e.jaw[sl], e.lip_part[sl], e.smile[sl], e.pucker[sl], e.brow_raise[sl], e.blink[sl], e.gaze[sl]
        )
        return Motion(self.yaw[sl], self.pitch[sl], self.roll[sl], self.shift[sl], expr)


def smooth_noise(
    rng: np.random.Generator, frames: int, min_period: float, max_period: float, terms: int = 4
) -> np.ndarray:
    """(frames,) zero-mean smooth noise with standard deviation about 0.5."""
    t = np.arange(frames)[:, None]
    periods = rng.uniform(min_period, max_period, terms)
    phases = rng.uniform(0, 2 * np.pi, terms)
    amps = rng.uniform(0.4, 1.0, terms)
    signal = (amps * np.sin(2 * np.pi * t / periods + phases)).sum(1)
    return 0.5 * signal / np.sqrt((amps**2).sum() / 2)


def _squash(value: np.ndarray, limit: float) -> np.ndarray:
    return limit * np.tanh(value / limit)


def sample_motion(rng: np.random.Generator, frames: int, identity: Identity) -> Motion:
    """A talking-head video's trajectories. Frames are about 1/10 s apart."""
    deg = np.radians
    yaw = _squash(
        deg(rng.uniform(-30, 30)) + deg(rng.uniform(10, 30)) * smooth_noise(rng, frames, 25, 90), MAX_YAW
    )
    pitch = _squash(
        deg(rng.uniform(-14, 14)) + deg(rng.uniform(5, 15)) * smooth_noise(rng, frames, 20, 70), MAX_PITCH
    )
    roll = _squash(
        deg(rng.uniform(-10, 10)) + deg(rng.uniform(4, 12)) * smooth_noise(rng, frames, 25, 90), MAX_ROLL
    )
    shift = np.stack(
        [smooth_noise(rng, frames, 30, 100), smooth_noise(rng, frames, 30, 100)], 1
    ) * rng.uniform(0.03, 0.12)

    # Speech: an envelope (talking vs pausing) times a syllable rhythm.
    talk = identity.talkativeness
    envelope = 1 / (1 + np.exp(-(4 * smooth_noise(rng, frames, 15, 50) + 3 * talk - 1)))
    syllable_period = rng.uniform(2.5, 5.0)
    phase = 2 * np.pi * np.arange(frames) / syllable_period + 2.5 * smooth_noise(rng, frames, 6, 20)
    syllables = (0.5 + 0.5 * np.sin(phase + rng.uniform(0, 2 * np.pi))) ** 1.5
    jaw = np.clip(
        envelope * syllables * rng.uniform(0.5, 1.0) + 0.1 * np.clip(smooth_noise(rng, frames, 5, 15), 0, 1),
        0,
        1,
    )

    smile = np.clip(identity.smiliness + 0.7 * smooth_noise(rng, frames, 20, 60), 0, 1)
    lip_part = np.clip(
        0.25 * envelope * syllables
        + 0.6 * smile * rng.uniform(0.3, 1.0)
        + 0.1 * smooth_noise(rng, frames, 8, 20),
        0,
        1,
    )
    pucker = np.clip(envelope * (0.8 * smooth_noise(rng, frames, 4, 12)), -1, 1)
    brow = np.clip(
        0.9 * smooth_noise(rng, frames, 12, 40) + 0.3 * envelope * syllables * rng.uniform(0, 1), -1, 1
    )

    blink = np.zeros(frames)
    num_blinks = rng.poisson(frames / 30.0 + 0.3)
    t = np.arange(frames)
    for centre in rng.uniform(-1, frames + 1, num_blinks):
        blink = np.maximum(blink, np.exp(-(((t - centre) / 0.9) ** 2)))
    blink = np.clip(1.15 * blink, 0, 1)

    # Eyes mostly keep looking at the camera, so the irises counter the head's turn.
    gaze_x = np.clip(-0.55 * yaw / MAX_YAW + 0.4 * smooth_noise(rng, frames, 8, 30), -1, 1)
    gaze_y = np.clip(-0.4 * pitch / MAX_PITCH + 0.3 * smooth_noise(rng, frames, 8, 30), -1, 1)
    expr = Expression(
        jaw=jaw,
        lip_part=lip_part,
        smile=smile,
        pucker=pucker,
        brow_raise=brow,
        blink=blink,
        gaze=np.stack([gaze_x, gaze_y], 1),
    )
    return Motion(yaw, pitch, roll, shift, expr)
