"""Landmark images y(t): the 68 points drawn as anti-aliased polylines per facial part on black.

The rasteriser is batched and works on any device: for every part it evaluates the exact distance of
each pixel in the part's bounding box to the part's segments, so the cost scales with the face's size,
not the image's, and no per-point Python loop runs.
"""

from __future__ import annotations

import numpy as np
import torch

from metahead.landmarks.parts import FACE_PARTS, NUM_LANDMARKS


def default_line_width(size: int) -> float:
    """Line width in pixels: 2 at 256² (the lab code's thickness), scaled linearly with resolution."""
    return max(1.0, 2.0 * size / 256.0)


def _part_segments(part) -> tuple[list[int], list[int]]:
    idx = list(range(part.start, part.stop))
    if part.closed:
        idx.append(part.start)
    return idx[:-1], idx[1:]


_SEGMENTS = [_part_segments(p) for p in FACE_PARTS]
_COLORS = torch.tensor([p.color for p in FACE_PARTS], dtype=torch.float32) / 255.0


def draw_landmarks(
    points: torch.Tensor | np.ndarray,
    size: int,
    line_width: float | None = None,
) -> torch.Tensor:
    """Draw landmark images.

    points: (68, 2) or (B, 68, 2) pixel coordinates (x, y), pixel centres at integers.
    Returns float32 (3, size, size) or (B, 3, size, size) in [0, 1] on the points' device.
    """
    pts = torch.as_tensor(points, dtype=torch.float32)
    single = pts.ndim == 2
    if single:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[1:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must have shape (68, 2) or (B, 68, 2), got {tuple(pts.shape)}")
    if not torch.isfinite(pts).all():
        raise ValueError("landmarks contain NaN or inf")
    width = default_line_width(size) if line_width is None else float(line_width)
    half = width / 2.0
    batch = pts.shape[0]
    canvas = torch.zeros(batch, 3, size, size, device=pts.device)
    colors = _COLORS.to(pts.device)
    for part_index, (ia, ib) in enumerate(_SEGMENTS):
        a = pts[:, ia]  # (B, S, 2)
        b = pts[:, ib]
        part_pts = pts[:, FACE_PARTS[part_index].start : FACE_PARTS[part_index].stop]
        # The part's bounding box over the whole batch, widened by the line's half width and the AA ramp.
        lo = torch.floor(part_pts.reshape(-1, 2).amin(0) - half - 1).clamp(0, size - 1).long().tolist()
        hi = torch.ceil(part_pts.reshape(-1, 2).amax(0) + half + 2).clamp(1, size).long().tolist()
        x0, y0 = lo
        x1, y1 = hi
        if x1 <= x0 or y1 <= y0:
            continue
        ys = torch.arange(y0, y1, device=pts.device, dtype=torch.float32)
        xs = torch.arange(x0, x1, device=pts.device, dtype=torch.float32)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([gx, gy], -1).reshape(1, 1, -1, 2)  # (1, 1, P, 2)
        seg = (b - a)[:, :, None, :]  # (B, S, 1, 2)
        rel = grid - a[:, :, None, :]  # (B, S, P, 2)
        seg_len2 = (seg * seg).sum(-1).clamp_min(1e-12)
        t = ((rel * seg).sum(-1) / seg_len2).clamp(0.0, 1.0)
        dist = (rel - t[..., None] * seg).norm(dim=-1).amin(1)  # (B, P)
        # Coverage falls off linearly over one pixel at the line's edge: anti-aliasing.
        alpha = (half + 0.5 - dist).clamp(0.0, 1.0).reshape(batch, 1, y1 - y0, x1 - x0)
        region = canvas[:, :, y0:y1, x0:x1]
        canvas[:, :, y0:y1, x0:x1] = region * (1 - alpha) + colors[part_index].view(1, 3, 1, 1) * alpha
    return canvas[0] if single else canvas


def draw_landmarks_uint8(points: np.ndarray, size: int, line_width: float | None = None) -> np.ndarray:
    """The same image as HxWx3 uint8 (for files and videos)."""
    img = draw_landmarks(points, size, line_width)
    if img.ndim == 3:
        return (img.permute(1, 2, 0) * 255).round().byte().numpy()
    return (img.permute(0, 2, 3, 1) * 255).round().byte().numpy()
