"""What the app's requests return (AvatarResult, AnimationResult) and how a result is measured and
summed up for the page: CSIM to the avatar's photos, the animation's Markdown summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class AvatarResult:
    avatar_path: Path  # the avatar file (downloadable)
    mode: str  # "ft" or "ff"
    shots: int  # T
    image_size: int
    crops: np.ndarray | None  # (T, S, S, 3) uint8: the frames it was made from
    curve_png: Path | None  # fine-tuning loss curve
    summary: str  # Markdown
    notes: list[str] = field(default_factory=list)  # warnings worth showing


@dataclass
class AnimationResult:
    video: Path  # the animated avatar (downloadable)
    side_by_side: Path  # driver | landmarks | result
    frames: int
    fps: float
    retargeted: bool
    shape_distance: float
    missing_faces: int
    csim: float | None  # result frames vs the avatar's photos; None when the avatar file holds no photos
    seconds: float
    summary: str  # Markdown


def mean_csim(
    net: Any,
    frames: np.ndarray,
    landmarks: np.ndarray,
    photos: np.ndarray,
    photo_landmarks: np.ndarray,
) -> float:
    """Mean CSIM over all (result frame, photo) pairs: frames (F, S, S, 3) uint8 with landmarks (F, 68, 2),
    photos (T, S, S, 3) with theirs (evaluation.csim: dlib's face descriptors, cosine similarity)."""
    import torch

    from metahead.evaluation.csim import face_descriptors, mean_csim_to

    def descriptors(images: np.ndarray, points: np.ndarray) -> torch.Tensor:
        pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return face_descriptors(net, pixels, torch.from_numpy(np.asarray(points, np.float32)))

    return float(mean_csim_to(descriptors(frames, landmarks), descriptors(photos, photo_landmarks)).mean())


def animation_summary(animation: Any, driver: str, csim_value: float | None, seconds: float) -> str:
    """The page's Markdown about an animation (avatar.Animation): frames, retargeting, missing faces, CSIM."""
    retarget = (
        "retargeted onto the avatar's face" if animation.retargeted else "driver's landmarks used as they are"
    )
    lines = [
        f"**{len(animation)} frames** at {animation.fps:g} fps from `{driver}` in {seconds:.0f} s; "
        f"{retarget} "
        f"(face-shape distance driver → avatar {animation.shape_distance:.3f} eye distances).",
    ]
    if animation.missing_faces:
        lines.append(f"No face found in {animation.missing_faces} driver frames: the last pose was held.")
    if csim_value is None:
        lines.append("**CSIM:** not measured (the avatar file holds no photos to compare with).")
    else:
        lines.append(
            f"**CSIM to the photos: {csim_value:.3f}** (cosine similarity of dlib face descriptors, "
            "mean over result frames × photos; 1 = same direction)."
        )
    return "  \n".join(lines)
