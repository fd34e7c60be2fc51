"""Stable square face crops over a clip, and landmark checks measured in eye distances.

The face's position and size per frame come from rigid points only (the eye centres and the mouth
corners, as in FFHQ's alignment), so speech does not pump the crop. The crop of a clip is either one
box for the whole clip (the median position and size: VoxCeleb-style, perfectly still) or, when the
head moves too far for one box, a trajectory smoothed over about a second (`smooth_seconds`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import median_filter

from metahead.landmarks.detect import eye_distance
from metahead.landmarks.parts import LEFT_EYE, RIGHT_EYE
from metahead.landmarks.track import similarity_residual

CROP_MODES = ("auto", "clip", "smooth", "frame")
OVERFLOW_MODES = ("shift", "pad")


@dataclass
class CropConfig:
    size: int = 256  # output side in pixels
    # Crop side over the face size (max(2 x eye distance, 1.8 x eye-to-mouth): about the face's width).
    # 2.0 is FFHQ's framing; 2.2 leaves VoxCeleb's room around the head.
    margin: float = 2.2
    mode: str = "auto"  # auto | clip | smooth | frame (each frame its own box: photo sets)
    smooth_seconds: float = 1.0  # sigma of the trajectory smoothing in "smooth" mode
    # A one-box crop must keep every frame's landmarks this far inside (fraction of the side), else
    # "auto" smooths instead.
    auto_inner_fraction: float = 0.08
    overflow: str = "shift"  # a box past the frame edge: "shift" it inside (shrink if needed) or "pad" black

    def __post_init__(self) -> None:
        if self.mode not in CROP_MODES:
            raise ValueError(f"crop mode must be one of {CROP_MODES}, got {self.mode!r}")
        if self.overflow not in OVERFLOW_MODES:
            raise ValueError(f"crop overflow must be one of {OVERFLOW_MODES}, got {self.overflow!r}")
        if self.size < 8 or self.margin <= 0:
            raise ValueError(f"bad crop size {self.size} or margin {self.margin}")


def face_geometry(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """Face centre (2,) and size from rigid points (FFHQ's quad size, without the rotation).

    The centre is halfway from the eyes to the mouth (FFHQ: a tenth of the way, which at our margin puts
    the eyes near the middle of the crop and an open mouth's chin at its bottom edge); here the eyes sit
    about 37% from the top, as in VoxCeleb's crops, with room for the chin and the neck."""
    pts = np.asarray(landmarks, dtype=np.float64)
    eye_left = pts[RIGHT_EYE].mean(0)  # image-left eye
    eye_right = pts[LEFT_EYE].mean(0)
    eye_mid = (eye_left + eye_right) / 2
    mouth_mid = (pts[48] + pts[54]) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = mouth_mid - eye_mid
    centre = eye_mid + 0.5 * eye_to_mouth
    size = max(2.0 * float(np.linalg.norm(eye_to_eye)), 1.8 * float(np.linalg.norm(eye_to_mouth)))
    return centre, size


def crop_boxes(
    landmarks: np.ndarray, times: np.ndarray, image_shape: tuple[int, int], cfg: CropConfig
) -> tuple[np.ndarray, str]:
    """Square crop boxes (N, 3) as (centre x, centre y, side) for N frames' landmarks (N, 68, 2), and the
    mode used ("clip", "smooth" or "frame"). Centres are in pixel-centre coordinates."""
    geometry = [face_geometry(lm) for lm in landmarks]
    centres = np.array([g[0] for g in geometry])
    sides = np.array([g[1] for g in geometry]) * cfg.margin
    mode = cfg.mode
    if mode == "frame" or len(landmarks) == 1:
        boxes = np.column_stack([centres, sides])
        return _fit_inside(boxes, image_shape, cfg.overflow), "frame"
    if mode in ("auto", "clip"):
        box = np.array([*np.median(centres, axis=0), np.median(sides)])
        # Judged before the frame's edges limit the box: those limit a moving box just the same.
        if mode == "clip" or _keeps_face_inside(box, landmarks, cfg.auto_inner_fraction):
            boxes = np.repeat(box[None], len(landmarks), axis=0)
            return _fit_inside(boxes, image_shape, cfg.overflow), "clip"
    # Median first (a stray frame must not pull the box), then a local linear fit over ~smooth_seconds.
    raw = np.column_stack([centres, sides])
    width = min(5, len(raw) - (1 - len(raw) % 2))
    filtered = median_filter(raw, size=(max(width, 1), 1), mode="nearest")
    boxes = smooth_trajectory(np.asarray(times, dtype=np.float64), filtered, cfg.smooth_seconds)
    return _fit_inside(boxes, image_shape, cfg.overflow), "smooth"


def smooth_trajectory(times: np.ndarray, values: np.ndarray, sigma_seconds: float) -> np.ndarray:
    """Gaussian-weighted local linear regression of values (N, D) over time: removes jitter but follows
    steady motion exactly, even at the clip's ends, where a plain Gaussian blur lags behind the head."""
    out = np.empty_like(values, dtype=np.float64)
    if sigma_seconds <= 0 or len(times) < 3:
        out[:] = values
        return out
    lo = np.searchsorted(times, times - 3 * sigma_seconds, side="left")
    hi = np.searchsorted(times, times + 3 * sigma_seconds, side="right")
    for i, t in enumerate(times):
        dt = times[lo[i] : hi[i]] - t
        w = np.exp(-0.5 * (dt / sigma_seconds) ** 2)
        design = np.column_stack([np.ones_like(dt), dt]) * np.sqrt(w)[:, None]
        target = values[lo[i] : hi[i]] * np.sqrt(w)[:, None]
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
        out[i] = coef[0]  # the fitted line's value at t
    return out


def _keeps_face_inside(box: np.ndarray, landmarks: np.ndarray, inner_fraction: float) -> bool:
    half = box[2] / 2 * (1 - 2 * inner_fraction)
    lo = landmarks.min(axis=1)
    hi = landmarks.max(axis=1)
    return bool((lo >= box[:2] - half).all() and (hi <= box[:2] + half).all())


def _fit_inside(boxes: np.ndarray, image_shape: tuple[int, int], overflow: str) -> np.ndarray:
    if overflow == "pad":
        return boxes.copy()
    h, w = image_shape[:2]
    out = boxes.copy()
    out[:, 2] = np.minimum(out[:, 2], min(h, w))
    half = out[:, 2] / 2
    # Box edges run from centre - half to centre + half in edge coordinates (pixel centre + 0.5).
    out[:, 0] = np.clip(out[:, 0] + 0.5, half, w - half) - 0.5
    out[:, 1] = np.clip(out[:, 1] + 0.5, half, h - half) - 0.5
    return out


def crop_frame(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Cut the square `box` (centre x, centre y, side) out of `image` and resize it to size x size; the
    part of the box outside the image is black."""
    h, w = image.shape[:2]
    x0 = box[0] + 0.5 - box[2] / 2  # edge coordinates
    y0 = box[1] + 0.5 - box[2] / 2
    x1, y1 = x0 + box[2], y0 + box[2]
    ix0, iy0 = int(np.floor(x0)), int(np.floor(y0))
    ix1, iy1 = int(np.ceil(x1)), int(np.ceil(y1))
    if ix0 >= 0 and iy0 >= 0 and ix1 <= w and iy1 <= h:
        region = image[iy0:iy1, ix0:ix1]
    else:
        region = np.zeros((iy1 - iy0, ix1 - ix0, 3), dtype=np.uint8)
        sx0, sy0, sx1, sy1 = max(ix0, 0), max(iy0, 0), min(ix1, w), min(iy1, h)
        if sx1 > sx0 and sy1 > sy0:
            region[sy0 - iy0 : sy1 - iy0, sx0 - ix0 : sx1 - ix0] = image[sy0:sy1, sx0:sx1]
    pil = Image.fromarray(np.ascontiguousarray(region))
    out = pil.resize((size, size), Image.Resampling.BICUBIC, box=(x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0))
    return np.asarray(out)


def to_crop_coordinates(landmarks: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Map image landmarks (68, 2) into the crop made by crop_frame(image, box, size)."""
    corner = box[:2] + 0.5 - box[2] / 2  # edge coordinates of the box's top-left corner
    return ((landmarks + 0.5 - corner) * (size / box[2]) - 0.5).astype(np.float32)


def landmark_jumps(
    landmarks: np.ndarray,
    times: np.ndarray,
    max_change: float,
    max_gap_seconds: float = 0.2,
    reset_after: int = 3,
) -> np.ndarray:
    """Flag frames whose landmarks change shape implausibly since the last accepted frame.

    The change is the mean distance left after the best similarity transform (head motion is free),
    in eye distances. Frames further apart than max_gap_seconds (sparse sampling) are not compared.
    After `reset_after` flagged frames in a row the reference moves on (the flagged one was the odd one).
    Returns a bool array, True for a jump.
    """
    flags = np.zeros(len(landmarks), dtype=bool)
    reference = 0
    accepted_in_row = 1  # accepted frames in the reference's run; 1 means the reference stands alone
    pending: list[int] = []  # flagged frames since the reference
    for i in range(1, len(landmarks)):
        if times[i] - times[reference] > max_gap_seconds + 1e-9:
            reference, accepted_in_row, pending = i, 1, []
            continue
        residual, _ = similarity_residual(landmarks[i], landmarks[reference])
        if residual / max(eye_distance(landmarks[reference]), 1.0) <= max_change:
            reference, pending = i, []
            accepted_in_row += 1
            continue
        flags[i] = True
        pending.append(i)
        if len(pending) >= reset_after:
            if _consistent(landmarks, pending, max_change):
                # Several frames in a row agree with each other but not with the reference: if the
                # reference stood alone it was the odd one, otherwise the scene changed. Go on from here.
                if accepted_in_row == 1:
                    flags[reference] = True
                flags[pending] = False
                reference, accepted_in_row, pending = i, len(pending), []
            else:
                pending = pending[1:]
    return flags


def _consistent(landmarks: np.ndarray, indices: list[int], max_change: float) -> bool:
    for a, b in zip(indices[:-1], indices[1:]):
        residual, _ = similarity_residual(landmarks[b], landmarks[a])
        if residual / max(eye_distance(landmarks[a]), 1.0) > max_change:
            return False
    return True


def jitter_stats(landmarks: np.ndarray, consecutive: np.ndarray | None = None) -> dict[str, float]:
    """Landmark motion between consecutive frames, in eye distances.

    step: mean point displacement from the previous frame (motion plus noise).
    jitter: mean distance of each point from the midpoint of its neighbours in the previous and next
        frame (the second difference: smooth motion cancels, frame-to-frame noise stays).
    consecutive: bool (N-1,), True where frame i+1 directly follows frame i in the source.
    """
    n = len(landmarks)
    out = {"step_median": float("nan"), "jitter_median": float("nan"), "jitter_p95": float("nan"), "pairs": 0}
    if n < 2:
        return out
    lm = np.asarray(landmarks, dtype=np.float64)
    eyes = np.array([max(eye_distance(x), 1e-6) for x in lm])
    ok = np.ones(n - 1, dtype=bool) if consecutive is None else np.asarray(consecutive, dtype=bool)
    steps = np.linalg.norm(lm[1:] - lm[:-1], axis=2).mean(1) / eyes[1:]
    out["pairs"] = int(ok.sum())
    if ok.any():
        out["step_median"] = float(np.median(steps[ok]))
    if n >= 3:
        triple = ok[1:] & ok[:-1]
        second = np.linalg.norm(lm[1:-1] - (lm[:-2] + lm[2:]) / 2, axis=2).mean(1) / eyes[1:-1]
        if triple.any():
            out["jitter_median"] = float(np.median(second[triple]))
            out["jitter_p95"] = float(np.percentile(second[triple], 95))
    return out
