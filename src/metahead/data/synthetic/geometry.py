"""Small geometry helpers shared by the head model and the renderer: curves, grids, rotations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def smoothstep(x: np.ndarray | float) -> np.ndarray:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def normalize(v: np.ndarray) -> np.ndarray:
    """Unit vectors along the last axis (length 3)."""
    length = np.sqrt(v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1] + v[..., 2] * v[..., 2])
    return v / np.maximum(length, 1e-12)[..., None]


def rotation_matrices(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotations, radians; x right, y up, z towards the camera.

    Positive yaw turns the face towards the image's right, positive pitch tilts it up, positive roll
    tilts the top of the head towards the image's left (counter-clockwise as seen).
    """
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(-1, 3, 3)
    rx = np.stack([one, zero, zero, zero, cp, sp, zero, -sp, cp], -1).reshape(-1, 3, 3)
    rz = np.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return rz @ ry @ rx


def catmull_rom_basis(num_points: int, samples: int) -> np.ndarray:
    """(samples, num_points) weights: a uniform Catmull-Rom curve through the points, ends included.

    With samples = (num_points - 1) * k + 1 every control point is itself a sample, so a landmark used
    as a control point is exactly a vertex of the rendered outline.
    """
    segments = num_points - 1
    t_all = np.linspace(0.0, segments, samples)
    basis = np.zeros((samples, num_points))
    for row, t_global in enumerate(t_all):
        seg = min(int(np.floor(t_global)), segments - 1)
        t = t_global - seg
        weights = 0.5 * np.array(
            [
                -(t**3) + 2 * t**2 - t,
                3 * t**3 - 5 * t**2 + 2,
                -3 * t**3 + 4 * t**2 + t,
                t**3 - t**2,
            ]
        )
        for k, w in zip(range(seg - 1, seg + 3), weights):
            # Phantom end points mirror their neighbour (P[-1] = 2 P[0] - P[1]).
            if k < 0:
                basis[row, 0] += 2 * w
                basis[row, 1] -= w
            elif k >= num_points:
                basis[row, num_points - 1] += 2 * w
                basis[row, num_points - 2] -= w
            else:
                basis[row, k] += w
    return basis


def grid_triangles(rows: int, cols: int, offset: int = 0) -> np.ndarray:
    """Two triangles per cell of a (rows, cols) vertex grid stored row-major."""
    idx = np.arange(rows * cols).reshape(rows, cols) + offset
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])


def strip_triangles(count: int, first: int, second: int) -> np.ndarray:
    """Triangles joining two polylines of `count` vertices starting at indices first and second."""
    i = np.arange(count - 1)
    a, b = first + i, first + i + 1
    c, d = second + i, second + i + 1
    return np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])


def grid_normals(points: np.ndarray) -> np.ndarray:
    """Vertex normals of a (rows, cols, 3) parametric grid (sign: d/dcol x d/drow)."""
    d_row = np.gradient(points, axis=0)
    d_col = np.gradient(points, axis=1)
    return normalize(np.cross(d_col, d_row))


def orient_outward(vertices: np.ndarray, triangles: np.ndarray, outward: np.ndarray) -> np.ndarray:
    """Reorder triangles so their front face (counter-clockwise seen from outside) points along `outward`.

    outward: (T, 3) a direction per triangle (e.g. the mean vertex normal)."""
    p = vertices[triangles]
    face = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    flip = (face * outward).sum(-1) < 0
    out = triangles.copy()
    out[flip] = out[flip][:, [0, 2, 1]]
    return out


@dataclass
class Mesh:
    """Triangles with per-vertex normals and shading attributes, one material per triangle."""

    vertices: np.ndarray  # (V, 3) float
    normals: np.ndarray  # (V, 3) float, unit
    attributes: np.ndarray  # (V, 3) float: material-specific (see render.py)
    triangles: np.ndarray  # (T, 3) int
    material: np.ndarray  # (T,) int
    cullable: np.ndarray  # (T,) bool: closed surfaces whose back faces can be skipped

    @staticmethod
    def concat(meshes: list[Mesh]) -> Mesh:
        offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
        return Mesh(
            vertices=np.concatenate([m.vertices for m in meshes]),
            normals=np.concatenate([m.normals for m in meshes]),
            attributes=np.concatenate([m.attributes for m in meshes]),
            triangles=np.concatenate([m.triangles + o for m, o in zip(meshes, offsets)]),
            material=np.concatenate([m.material for m in meshes]),
            cullable=np.concatenate([m.cullable for m in meshes]),
        )
