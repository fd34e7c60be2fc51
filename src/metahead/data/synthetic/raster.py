"""A vectorised z-buffer triangle rasteriser in numpy.

Every triangle is expanded into the pixel centres of its bounding box (one flat array for the whole
mesh, no per-triangle Python loop), barycentric coordinates decide coverage, and a single
`np.minimum.at` over (depth, fragment) keys keeps the nearest fragment per pixel. Pixel centres sit at
integer coordinates, the convention of the landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_NO_FRAGMENT = np.iinfo(np.int64).max
_DEPTH_LEVELS = 1 << 30  # depth is quantised into the high bits of a 64-bit key
_INDEX_BITS = 32


@dataclass
class Fragments:
    """The visible surface: for each covered pixel, its triangle and barycentric weights.

    Fragments come grouped by triangle in ascending triangle order (so sorting the triangles by material
    groups the fragments by material for free)."""

    pixel: np.ndarray  # (N,) flat pixel index (row * width + column), unique
    triangle: np.ndarray  # (N,) index of the winning triangle
    corners: np.ndarray  # (N, 3) its vertex indices (in the order the weights use)
    bary: np.ndarray  # (N, 3) float32 barycentric weights of the pixel centre for those vertices
    height: int
    width: int


def rasterize(
    xy: np.ndarray,
    depth: np.ndarray,
    triangles: np.ndarray,
    height: int,
    width: int,
    cullable: np.ndarray | None = None,
    zbuffer: np.ndarray | None = None,
) -> Fragments:
    """Rasterise triangles given in pixel coordinates; nearer = smaller depth.

    xy: (V, 2) float pixel coordinates (x right, y down); depth: (V,); triangles: (T, 3) vertex indices.
    cullable: (T,) bool, True where a triangle may be dropped when it faces away from the camera.
    Front faces wind counter-clockwise as seen (a negative signed area in y-down coordinates).
    zbuffer: optional reusable (height * width,) int64 array filled with the "no fragment" key; it is
    left in that state on return (reusing it saves touching fresh memory every frame).
    """
    xy = np.asarray(xy, dtype=np.float32)
    corners = xy[triangles]  # (T, 3, 2)
    ax, bx, cx = corners[:, 0, 0], corners[:, 1, 0], corners[:, 2, 0]
    ay, by, cy = corners[:, 0, 1], corners[:, 1, 1], corners[:, 2, 1]
    area2 = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    keep = np.abs(area2) > 1e-6
    if cullable is not None:
        keep &= ~(cullable & (area2 >= 0))
    # (min/max over an axis of length 3 is slow in numpy; pairwise minimum/maximum is not)
    row_lo = np.ceil(np.minimum(np.minimum(ay, by), cy))
    row_hi = np.floor(np.maximum(np.maximum(ay, by), cy))
    keep &= (row_hi >= row_lo) & (row_hi >= 0) & (row_lo <= height - 1)
    keep &= (np.maximum(np.maximum(ax, bx), cx) >= 0) & (np.minimum(np.minimum(ax, bx), cx) <= width - 1)
    tri_ids = np.flatnonzero(keep)
    if tri_ids.size == 0:
        return _empty(height, width)
    tris = triangles[tri_ids]
    # Sort each triangle's corners top to bottom: the long edge 0-2 spans every row, edge 0-1 the rows
    # above corner 1 and edge 1-2 those below. An edge is always evaluated from its upper end, so a shared
    # edge gives both of its triangles exactly the same x: no cracks.
    order = np.argsort(corners[tri_ids, :, 1], axis=1, kind="stable")
    tris = np.take_along_axis(tris, order, axis=1)
    px, py = xy[tris, 0], xy[tris, 1]  # (K, 3) sorted by y
    x0, x1, x2 = px[:, 0], px[:, 1], px[:, 2]
    y0, y1, y2 = py[:, 0], py[:, 1], py[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        s02 = np.where(y2 > y0, (x2 - x0) / (y2 - y0), 0).astype(np.float32)
        s01 = np.where(y1 > y0, (x1 - x0) / (y1 - y0), 0).astype(np.float32)
        s12 = np.where(y2 > y1, (x2 - x1) / (y2 - y1), 0).astype(np.float32)
    first_row = np.maximum(np.ceil(y0), 0).astype(np.int64)
    num_rows = np.maximum(np.minimum(np.floor(y2), height - 1).astype(np.int64) - first_row + 1, 0)

    # Scanline spans: each (triangle, row) gets the exact run of pixel centres inside the triangle.
    row_tri = np.repeat(np.arange(tri_ids.size), num_rows)
    row_y = np.arange(row_tri.size) - np.repeat(np.cumsum(num_rows) - num_rows - first_row, num_rows)
    y = row_y.astype(np.float32)
    dy0 = y - y0[row_tri]
    x_long = x0[row_tri] + dy0 * s02[row_tri]
    upper = y < y1[row_tri]
    x_short = np.where(
        upper, x0[row_tri] + dy0 * s01[row_tri], x1[row_tri] + (y - y1[row_tri]) * s12[row_tri]
    )
    col_lo = np.maximum(np.ceil(np.minimum(x_long, x_short)), 0)
    col_hi = np.minimum(np.floor(np.maximum(x_long, x_short)), width - 1)
    count = np.maximum(col_hi - col_lo + 1, 0).astype(np.int64)

    # Barycentric weights (of sorted corners 1 and 2) and depth are planes: evaluate at each run's
    # start, then step along x.
    inv = (1.0 / ((x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)))[row_tri]
    ex1, ey1 = (x1 - x0)[row_tri], (y1 - y0)[row_tri]
    ex2, ey2 = (x2 - x0)[row_tri], (y2 - y0)[row_tri]
    dx0 = col_lo - x0[row_tri]
    step1, step2 = ey2 * inv, -ey1 * inv
    start1 = (dx0 * ey2 - dy0 * ex2) * inv
    start2 = (dy0 * ex1 - dx0 * ey1) * inv
    depth = np.asarray(depth, dtype=np.float32)
    tz = depth[tris]
    z0 = tz[row_tri, 0]
    dz1 = (tz[:, 1] - tz[:, 0])[row_tri]
    dz2 = (tz[:, 2] - tz[:, 0])[row_tri]
    start_z = z0 + start1 * dz1 + start2 * dz2
    step_z = step1 * dz1 + step2 * dz2

    total = int(count.sum())
    if total == 0:
        return _empty(height, width)
    run = np.repeat(np.arange(row_tri.size), count)
    first = np.cumsum(count) - count
    offset = np.arange(total) - first[run]
    offset_f = offset.astype(np.float32)
    z = start_z[run] + step_z[run] * offset_f
    pixel = (row_y * width + col_lo.astype(np.int64))[run] + offset

    z_min, z_max = float(z.min()), float(z.max())
    scale = (_DEPTH_LEVELS - 1) / max(z_max - z_min, 1e-12)
    key = ((z - z_min) * scale).astype(np.int64) << _INDEX_BITS
    key |= np.arange(total, dtype=np.int64)
    if zbuffer is None:
        zbuffer = np.full(height * width, _NO_FRAGMENT, dtype=np.int64)
    np.minimum.at(zbuffer, pixel, key)
    covered = np.flatnonzero(zbuffer != _NO_FRAGMENT)
    is_winner = np.zeros(total, bool)
    is_winner[zbuffer[covered] & ((1 << _INDEX_BITS) - 1)] = True
    zbuffer[covered] = _NO_FRAGMENT
    winner = np.flatnonzero(is_winner)  # in fragment order, i.e. grouped by ascending triangle index
    covered = pixel[winner]
    win_run, win_offset = run[winner], offset_f[winner]
    w1 = start1[win_run] + step1[win_run] * win_offset
    w2 = start2[win_run] + step2[win_run] * win_offset
    np.clip(w1, 0, 1, out=w1)
    np.clip(w2, 0, 1 - w1, out=w2)
    win_tri = row_tri[win_run]
    bary = np.stack([1 - w1 - w2, w1, w2], axis=1)
    return Fragments(covered, tri_ids[win_tri], tris[win_tri], bary, height, width)


def _empty(height: int, width: int) -> Fragments:
    none = np.zeros(0, np.int64)
    return Fragments(none, none, np.zeros((0, 3), np.int64), np.zeros((0, 3), np.float32), height, width)


def interpolate(fragments: Fragments, values: np.ndarray) -> np.ndarray:
    """Per-vertex values (V, C) interpolated at each fragment -> (N, C)."""
    corner = fragments.corners
    b = fragments.bary
    return (
        values[corner[:, 0]] * b[:, 0:1] + values[corner[:, 1]] * b[:, 1:2] + values[corner[:, 2]] * b[:, 2:3]
    )


class Rasterizer:
    """`rasterize` at one image size, keeping its z-buffer between calls."""

    def __init__(self, height: int, width: int):
        self.height, self.width = height, width
        self._zbuffer = np.full(height * width, _NO_FRAGMENT, dtype=np.int64)

    def __call__(
        self, xy: np.ndarray, depth: np.ndarray, triangles: np.ndarray, cullable: np.ndarray | None = None
    ) -> Fragments:
        return rasterize(xy, depth, triangles, self.height, self.width, cullable, self._zbuffer)
