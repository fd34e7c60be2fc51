"""Landmark images y(t): the 68 points drawn as anti-aliased polylines per facial part on black.

The rasteriser is batched and works on any device, with no per-point or per-segment Python loop. Segments
are clipped to the image and cut into pieces a few pixels long; each piece evaluates the exact
pixel-to-segment distance only in a small window around itself, and a part's coverage is the maximum over
its pieces (scatter-amax into a box per part). The work therefore scales with the length of the drawn
lines, not with the image's or a part's area. The covered pixels are then painted part by part in
FACE_PARTS order (later parts over earlier ones). Same result as evaluating every pixel's distance to
every segment (tests/test_draw.py checks it against that brute force).
"""

from __future__ import annotations

import numpy as np
import torch

from metahead.landmarks.parts import FACE_PARTS, NUM_LANDMARKS


def default_line_width(size: int) -> float:
    """Line width in pixels: 2 at 256² (the lab code's thickness), scaled linearly with resolution."""
    return max(1.0, 2.0 * size / 256.0)


def _segment_table() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Start landmark, end landmark and part index of every segment of every part."""
    starts, ends, part_ids = [], [], []
    for part_index, part in enumerate(FACE_PARTS):
        idx = list(range(part.start, part.stop))
        if part.closed:
            idx.append(part.start)
        starts += idx[:-1]
        ends += idx[1:]
        part_ids += [part_index] * (len(idx) - 1)
    return torch.tensor(starts), torch.tensor(ends), torch.tensor(part_ids)


_SEG_START, _SEG_END, _SEG_PART = _segment_table()
_COLORS = torch.tensor([p.color for p in FACE_PARTS], dtype=torch.float32) / 255.0
_NUM_PARTS = len(FACE_PARTS)
_LANDMARK_PART = torch.tensor([i for i, p in enumerate(FACE_PARTS) for _ in range(p.start, p.stop)])


def _clip_segments(
    a: torch.Tensor, b: torch.Tensor, lo: float, hi: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clip segments a-b (..., 2) to the square [lo, hi]² (Liang-Barsky). Pixels inside the image are
    farther than the line's reach from anything clipped off, so the drawing is unchanged, but a wild
    landmark cannot make a segment thousands of pixels long. Segments wholly outside become a point far
    outside; returns the clipped ends and whether anything of each segment was kept."""
    d = b - a
    moving = d != 0
    safe = torch.where(moving, d, 1.0)
    t_lo, t_hi = (lo - a) / safe, (hi - a) / safe
    within = (a >= lo) & (a <= hi)  # decides axes along which the segment does not move
    inf = torch.tensor(float("inf"), device=a.device, dtype=a.dtype)
    t_enter = torch.where(moving, torch.minimum(t_lo, t_hi), torch.where(within, -inf, inf))
    t_exit = torch.where(moving, torch.maximum(t_lo, t_hi), torch.where(within, inf, -inf))
    enter = t_enter.amax(-1).clamp_min(0.0)[..., None]
    exit_ = t_exit.amin(-1).clamp_max(1.0)[..., None]
    kept = enter[..., 0] <= exit_[..., 0]
    far = 4.0 * lo - 4.0  # lo = -reach: windows around it stay left of and above the image
    clipped_a = torch.where(kept[..., None], a + enter * d, far)
    clipped_b = torch.where(kept[..., None], a + exit_ * d, far)
    return clipped_a, clipped_b, kept


def draw_landmarks(
    points: torch.Tensor | np.ndarray,
    size: int,
    line_width: float | None = None,
) -> torch.Tensor:
    """Draw landmark images.

    points: (68, 2) or (B, 68, 2) pixel coordinates (x, y), pixel centres at integers.
    Returns float32 (3, size, size) or (B, 3, size, size) in [0, 1] on the points' device.
    """
    pts = torch.as_tensor(points).to(torch.float32)
    single = pts.ndim == 2
    if single:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[1:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must have shape (68, 2) or (B, 68, 2), got {tuple(pts.shape)}")
    if not torch.isfinite(pts).all():
        raise ValueError("landmarks contain NaN or inf")
    size = int(size)
    if size < 1:
        raise ValueError(f"image size must be positive, got {size}")
    width = default_line_width(size) if line_width is None else float(line_width)
    if not width > 0:
        raise ValueError(f"line width must be positive, got {width}")
    device = pts.device
    batch = pts.shape[0]
    if batch == 0:
        return torch.zeros(0, 3, size, size, device=device)
    # Coverage falls off linearly over one pixel at the line's edge (anti-aliasing): alpha > 0 iff
    # distance < reach.
    reach = width / 2.0 + 0.5

    # One box per part and image, clamped to the image. A part's boxes share the batch's largest size
    # (so the batch works in one tensor), each at its own origin, shifted inwards at the border.
    landmark_part = _LANDMARK_PART.to(device)[None, :, None].expand(batch, -1, 2)
    part_lo = torch.full((batch, _NUM_PARTS, 2), float(size), device=device)
    part_lo = part_lo.scatter_reduce(1, landmark_part, pts, reduce="amin")
    part_hi = torch.zeros(batch, _NUM_PARTS, 2, device=device).scatter_reduce(1, landmark_part, pts, "amax")
    part_lo = torch.floor(part_lo - reach).clamp(0, size)
    part_hi = (torch.floor(part_hi + reach) + 1).clamp(0, size)
    box_size = (part_hi - part_lo).amax(0).clamp_min(1)  # (parts, 2) as w, h
    origin = torch.minimum(part_lo, size - box_size).long()  # (B, parts, 2)
    box_size = box_size.long()
    box_area = box_size[:, 0] * box_size[:, 1]
    box_offset = torch.cumsum(box_area, 0) - box_area  # each part's place in the coverage buffer

    # Segments cut into pieces of at most piece_length (per segment, the batch's longest decides), so
    # each piece's window stays small whatever the face's size.
    # In float64: clipping a segment from a wild landmark far away must not cost float32's precision.
    seg_a, seg_b, seg_kept = _clip_segments(
        pts[:, _SEG_START.to(device)].double(), pts[:, _SEG_END.to(device)].double(), -reach, size - 1 + reach
    )  # (B, G, 2), (B, G, 2), (B, G)
    seg_a, seg_b = seg_a.float(), seg_b.float()
    piece_length = 2.0 * reach + 1.0  # balances the number of pieces against each window's area
    longest = torch.where(seg_kept, (seg_b - seg_a).norm(dim=-1), -1.0).amax(0)  # (G,), -1: clipped away
    counts = torch.where(longest >= 0, torch.ceil(longest / piece_length).clamp_min(1), 0).long()
    areas, num_pieces = box_area.tolist(), int(counts.sum())
    if num_pieces == 0:  # nothing is near the image
        canvas = torch.zeros(batch, 3, size, size, device=device)
        return canvas[0] if single else canvas
    piece_seg = torch.repeat_interleave(
        torch.arange(len(counts), device=device), counts, output_size=num_pieces
    )
    first_piece = torch.cumsum(counts, 0) - counts
    step = 1.0 / counts[piece_seg]
    t0 = (torch.arange(num_pieces, device=device) - first_piece[piece_seg]) * step  # (M,)
    start, delta = seg_a[:, piece_seg], (seg_b - seg_a)[:, piece_seg]  # (B, M, 2)
    piece_a = start + t0[:, None] * delta
    piece_d = step[:, None] * delta
    piece_part = _SEG_PART.to(device)[piece_seg]  # (M,)

    # A square window per piece covering every pixel within `reach` of it; x and y kept apart, as
    # (B, M, win²) tensors, because reductions over a trailing axis of 2 are slow.
    win_lo = torch.floor(torch.minimum(piece_a, piece_a + piece_d) - reach)
    win = int((torch.floor(torch.maximum(piece_a, piece_a + piece_d) + reach) - win_lo).amax()) + 1
    offsets = torch.arange(win, device=device, dtype=torch.float32)
    grid_y, grid_x = torch.meshgrid(offsets, offsets, indexing="ij")
    px = win_lo[..., 0, None] + grid_x.reshape(1, 1, -1)  # (B, M, win²)
    py = win_lo[..., 1, None] + grid_y.reshape(1, 1, -1)
    dx, dy = piece_d[..., 0, None], piece_d[..., 1, None]
    rx, ry = px - piece_a[..., 0, None], py - piece_a[..., 1, None]
    t = ((rx * dx + ry * dy) / (dx * dx + dy * dy).clamp_min(1e-12)).clamp(0.0, 1.0)
    alpha = (reach - torch.hypot(rx - t * dx, ry - t * dy)).clamp(0.0, 1.0)

    # Into the part's box: pixels outside it (so outside the image) get no coverage.
    piece_origin = origin[:, piece_part, :, None]  # (B, M, 2, 1)
    lx, ly = px.long() - piece_origin[:, :, 0], py.long() - piece_origin[:, :, 1]
    box_w, box_h = box_size[piece_part, 0, None], box_size[piece_part, 1, None]  # (M, 1)
    inside = (lx >= 0) & (lx < box_w) & (ly >= 0) & (ly < box_h)
    flat = torch.where(inside, ly * box_w + lx + box_offset[piece_part, None], 0)
    # A part's coverage is its nearest segment's (max over pieces); max is order-free, so deterministic.
    coverage = torch.zeros(batch, sum(areas), device=device)
    coverage.scatter_reduce_(
        1, flat.reshape(batch, -1), torch.where(inside, alpha, 0.0).reshape(batch, -1), "amax"
    )

    # Composite only the covered entries, taken part-major (the buffer's order) so that a stable split
    # by part keeps FACE_PARTS order; a pixel is touched at most once per part.
    entry, image = (coverage.t() > 0).nonzero(as_tuple=True)  # sorted by entry, i.e. by part
    entry_part = torch.bucketize(entry, box_offset, right=True) - 1
    local = entry - box_offset[entry_part]
    entry_w = box_size[entry_part, 0]
    corner = origin[image, entry_part]  # (E, 2)
    pixel = (corner[:, 1] + local // entry_w) * size + corner[:, 0] + local % entry_w
    plane = size * size
    canvas_index = (image * 3 * plane + pixel)[:, None] + torch.arange(3, device=device) * plane  # (E, 3)
    entry_alpha = coverage[image, entry][:, None]
    entry_color = _COLORS.to(device)[entry_part]
    per_part = torch.bincount(entry_part, minlength=_NUM_PARTS).tolist()

    # Parts painted over each other in FACE_PARTS order ("over" compositing on black).
    canvas = torch.zeros(batch * 3 * plane, device=device)
    for index, alpha_p, color_p in zip(
        torch.split(canvas_index, per_part),
        torch.split(entry_alpha, per_part),
        torch.split(entry_color, per_part),
    ):
        canvas[index] = torch.lerp(canvas[index], color_p, alpha_p)
    canvas = canvas.view(batch, 3, size, size)
    return canvas[0] if single else canvas


def draw_landmarks_uint8(points: np.ndarray, size: int, line_width: float | None = None) -> np.ndarray:
    """The same image as HxWx3 uint8 (for files and videos)."""
    img = draw_landmarks(points, size, line_width)
    if img.ndim == 3:
        return (img.permute(1, 2, 0) * 255).round().byte().numpy()
    return (img.permute(0, 2, 3, 1) * 255).round().byte().numpy()
