"""Triangle meshes of one person: the head surface, hair, ears and nose (fixed in head space), the neck and
torso (body space), and the facial features, rebuilt every frame from that frame's landmarks.

Feature outlines are Catmull-Rom curves through the landmarks with every landmark a vertex, so the
rendered eyes, brows and lips pass exactly through the returned points.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from metahead.data.synthetic import face
from metahead.data.synthetic.geometry import (
    Mesh,
    catmull_rom_basis,
    grid_normals,
    grid_triangles,
    normalize,
    orient_outward,
    smoothstep,
    strip_triangles,
)
from metahead.data.synthetic.identity import Identity


class Material(IntEnum):
    SKIN = 0  # the head surface
    NOSE = 1
    NOSTRILS = 2  # the nose's underside
    EAR = 3
    NECK = 4
    EYE = 5
    LASH = 6
    BROW = 7
    LIP = 8
    MOUTH = 9  # inside the lips: teeth, tongue, dark
    HAIR = 10
    CLOTH = 11


FACE_MATERIALS = (Material.SKIN, Material.NOSE, Material.NOSTRILS)
NUM_MATERIALS = len(Material)

HAIR_ROWS = 12
CURTAIN_ROWS = 6
EAR_POINTS = 18


def _mesh(vertices, normals, attributes, triangles, material, cullable: bool) -> Mesh:
    triangles = np.asarray(triangles, dtype=np.int64)
    return Mesh(
        vertices=np.asarray(vertices, dtype=np.float64),
        normals=np.asarray(normals, dtype=np.float64),
        attributes=np.asarray(attributes, dtype=np.float64),
        triangles=triangles,
        material=np.full(len(triangles), int(material), dtype=np.int64),
        cullable=np.full(len(triangles), cullable),
    )


def _oriented_grid(points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    rows, cols = points.shape[:2]
    tris = grid_triangles(rows, cols)
    flat = points.reshape(-1, 3)
    return orient_outward(flat, tris, normals.reshape(-1, 3)[tris].sum(1))


def _grid_mesh(
    points: np.ndarray,
    normals: np.ndarray,
    attributes: np.ndarray,
    material: Material,
    cullable: bool,
    outward: np.ndarray | None = None,
) -> Mesh:
    """A mesh of a (rows, cols) grid of vertices; triangles face `outward` (default: the vertex normals)."""
    triangles = _oriented_grid(points, normals if outward is None else outward)
    return _mesh(
        points.reshape(-1, 3),
        normals.reshape(-1, 3),
        attributes.reshape(-1, 3),
        triangles,
        material,
        cullable,
    )


# ---------------------------------------------------------------------------------------------------
# Head-space meshes (fixed per identity; the lower face follows the jaw)


def grid_resolution(size: int) -> tuple[int, int]:
    """(azimuth, polar) steps of the head grid: enough that the silhouette's facets stay under a
    supersampled pixel at this output size, and no more (triangles cost time)."""
    columns = 32 if size <= 96 else 36 if size <= 160 else 44
    return columns, int(round(columns * 0.78))


def head_surface(identity: Identity, columns: int = 44, rows: int = 34) -> tuple[Mesh, np.ndarray]:
    """The skin surface and each vertex's jaw weight.

    Attributes: head-space x, y, and the light the hair leaves (1, less just below the hairline)."""
    shape = identity.shape
    u = np.linspace(-np.pi, np.pi, columns + 1)
    v = np.linspace(0.0, np.pi, rows + 1)
    vv, uu = np.meshgrid(v, u, indexing="ij")
    points = face.surface_point(shape, uu, vv)
    normals = face.surface_normal(shape, points)
    tris = _oriented_grid(points, normals)
    if not identity.hair.bald:
        # Skin well inside the hairline is always under the hair: leave it out.
        covered = (vv < hairline(identity, u)[None, :] - 0.25).ravel()
        tris = tris[~covered[tris].all(axis=1)]
    hair_shadow = np.ones_like(vv)
    if not identity.hair.bald:
        below_hair = vv - hairline(identity, u)[None, :]
        hair_shadow = 1 - 0.45 * smoothstep(1 - below_hair / 0.15)
    flat = points.reshape(-1, 3)
    attrs = np.stack([flat[:, 0], flat[:, 1], hair_shadow.ravel()], -1)
    mesh = _mesh(flat, normals.reshape(-1, 3), attrs, tris, Material.SKIN, cullable=True)
    return mesh, face.jaw_weight(shape, flat)


def hairline(identity: Identity, u: np.ndarray) -> np.ndarray:
    """Polar angle where the hair ends at azimuth u."""
    hair = identity.hair
    au = np.abs(u)
    front = (
        hair.front + hair.sweep * np.clip(u / hair.opening, -1, 1) + 0.03 * np.sin(7 * u + hair.wave_phase)
    )
    to_side = smoothstep((au - (hair.opening - 0.2)) / 0.5)
    to_back = smoothstep((au - 1.9) / 1.0)
    return front + (hair.side - front) * to_side + (hair.back - hair.side) * to_back


def hair_meshes(identity: Identity, columns: int = 44) -> list[Mesh]:
    hair = identity.hair
    if hair.bald:
        return []
    shape = identity.shape
    u = np.linspace(-np.pi, np.pi, columns + 1)
    s = np.linspace(0.0, 1.0, HAIR_ROWS + 1)
    limit = hairline(identity, u)
    ss, uu = np.meshgrid(s, u, indexing="ij")
    vv = ss * limit[None, :]
    base = face.surface_point(shape, uu, vv)
    base_normal = face.surface_normal(shape, base)
    top = np.cos(vv).clip(0, 1)
    thickness = hair.thickness * (1 - ss**4) + hair.volume * top**2 + 0.006
    points = base + base_normal * thickness[..., None]
    normals = grid_normals(points)
    normals = np.where((normals * base_normal).sum(-1, keepdims=True) < 0, -normals, normals)
    normals = normalize(np.where(np.isfinite(normals), normals, base_normal))
    attrs = np.stack([uu, ss, np.zeros_like(ss)], -1)
    meshes = [_grid_mesh(points, normals, attrs, Material.HAIR, True, outward=base_normal)]
    if hair.length > 0:
        meshes.append(_curtain(identity, points[-1], normals[-1], u))
    return meshes


def _curtain(identity: Identity, edge: np.ndarray, edge_normal: np.ndarray, u: np.ndarray) -> Mesh:
    """Long hair hanging from the shell's edge around the sides and back."""
    hair = identity.hair
    keep = np.abs(u) >= hair.opening + 0.5
    edge, u = edge[keep], u[keep]
    # Split at the back seam (u = +-pi) so the strip runs continuously from one side round to the other.
    order = np.argsort(np.where(u < 0, u + 2 * np.pi, u))
    edge, u = edge[order], u[order]
    r = np.linspace(0.0, 1.0, CURTAIN_ROWS + 1)[:, None]
    outward = normalize(np.stack([edge[:, 0], np.zeros(len(edge)), edge[:, 2] + 0.1], -1))
    flare = 0.2 + 0.08 * np.sin(3 * u + hair.wave_phase)
    points = (
        edge[None]
        + (r * hair.length)[..., None] * np.array([0.0, -1.0, 0.0])
        + (r * flare)[..., None] * outward[None]
        + (r**2 * 0.2)[..., None] * np.array([0.0, 0.0, -1.0])
    )
    normals = np.broadcast_to(outward, points.shape)
    attrs = np.stack(
        [np.broadcast_to(u, r.shape[:1] + u.shape), np.broadcast_to(1 + r, points.shape[:2])], -1
    )
    attrs = np.concatenate([attrs, np.zeros(points.shape[:2] + (1,))], -1)
    return _grid_mesh(points, normals, attrs, Material.HAIR, False)


def ear_meshes(identity: Identity) -> list[Mesh]:
    shape = identity.shape
    meshes = []
    for side in (-1.0, 1.0):
        u = side * (np.pi / 2 + shape.ear_back)
        v = np.arccos(np.clip(shape.ear_y, -1, 1))
        base = face.surface_point(shape, np.array(u), np.array(v))
        normal = face.surface_normal(shape, base)
        up = normalize(np.array([0.0, 1.0, 0.0]) - normal * normal[1])
        back = normalize(np.cross(up, normal))
        if back[2] > 0:
            back = -back
        along = np.cos(shape.ear_angle) * back + np.sin(shape.ear_angle) * normal
        plane_normal = normalize(np.cross(along, up))
        if plane_normal @ normal < 0:
            plane_normal = -plane_normal
        phi = np.linspace(0, 2 * np.pi, EAR_POINTS, endpoint=False)
        # An egg: wider at the top, the front edge on the head.
        ex = 0.5 * shape.ear_width * (1 + np.cos(phi)) * (1 + 0.18 * np.sin(phi))
        ey = 0.5 * shape.ear_height * np.sin(phi) - 0.03
        centre = base + along * (0.5 * shape.ear_width) - 0.005 * normal
        rim = base - 0.005 * normal + ex[:, None] * along + ey[:, None] * up
        vertices = np.concatenate([centre[None], rim])
        count = len(rim)
        tris = np.stack([np.zeros(count, int), 1 + np.arange(count), 1 + (np.arange(count) + 1) % count], 1)
        radius = np.concatenate([[0.0], np.ones(count)])
        attrs = np.stack([radius, np.concatenate([[0.0], np.sin(phi)]), np.zeros(count + 1)], -1)
        meshes.append(
            _mesh(vertices, np.broadcast_to(plane_normal, vertices.shape), attrs, tris, Material.EAR, False)
        )
    return meshes


def nose_mesh(identity: Identity) -> Mesh:
    shape = identity.shape
    layout = face.landmark_layout(shape, face.Expression.neutral(1))
    lm = face.place_on_surface(shape, layout.x[0], layout.y[0], layout.lift[0])
    ridge = lm[27:31]
    nostrils = lm[31:36]
    nw = shape.nose_width
    side_x = -nw * np.array([0.5, 0.62, 0.8])
    side_y = ridge[:3, 1]
    pn = shape.nose_protrusion
    right_side = face.place_on_surface(shape, side_x, side_y, np.full(3, 0.003))
    wing = face.place_on_surface(
        shape, np.array(-1.08 * nw), np.array(shape.nose_tip_y + 0.005), np.array(0.045 * pn)
    )
    left_side = right_side * np.array([-1, 1, 1])
    left_wing = wing * np.array([-1, 1, 1])
    vertices = np.concatenate([ridge, nostrils, right_side, wing[None], left_side, left_wing[None]])
    # 0-3 ridge (3 = tip), 4-8 nostril line 31..35, 9-11 right side, 12 right wing, 13-16 the left ones
    flank = [(0, 9, 1), (9, 10, 1), (1, 10, 2), (10, 11, 2), (2, 11, 12), (2, 12, 3), (3, 12, 4), (12, 11, 4)]
    mirror = {9: 13, 10: 14, 11: 15, 12: 16, 4: 8, 5: 7}
    flank += [tuple(mirror.get(i, i) for i in t) for t in flank]
    under = [(3, 4, 5), (3, 5, 6), (3, 8, 7), (3, 7, 6)]
    tris = np.array(flank + under)
    axis = np.stack([np.zeros(len(tris)), vertices[tris].mean(1)[:, 1], np.full(len(tris), 0.0)], -1)
    tris = orient_outward(vertices, tris, vertices[tris].mean(1) - axis)
    p = vertices[tris]
    face_normals = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, tris[:, k], face_normals)
    normals = normalize(normals)
    on_face = [9, 10, 11, 13, 14, 15]
    normals[on_face] = normalize(normals[on_face] + 2 * face.surface_normal(shape, vertices[on_face]))
    material = np.array([Material.NOSE] * len(flank) + [Material.NOSTRILS] * len(under))
    return Mesh(vertices, normals, vertices.copy(), tris, material, np.ones(len(tris), bool))


@dataclass
class HeadModel:
    """Everything fixed in head space, plus which vertices follow the jaw."""

    mesh: Mesh
    jaw_index: np.ndarray  # vertices with a non-zero jaw weight
    jaw_weight: np.ndarray  # their weights


def build_head(identity: Identity, size: int = 256) -> HeadModel:
    """All head-space meshes, their density chosen for output images of `size`²."""
    columns, rows = grid_resolution(size)
    skin, weight = head_surface(identity, columns, rows)
    parts = [skin, nose_mesh(identity), *ear_meshes(identity), *hair_meshes(identity, columns)]
    mesh = Mesh.concat(parts)
    index = np.flatnonzero(weight > 1e-3)
    return HeadModel(mesh, index, weight[index])


# ---------------------------------------------------------------------------------------------------
# Body


@dataclass
class BodyModel:
    mesh: Mesh  # in body space (= head space of the neutral pose)
    head_weight: np.ndarray  # (V,) how much each vertex follows the head (the neck's top) vs the torso


def build_body(identity: Identity, torso_half_width: float) -> BodyModel:
    shape = identity.shape
    # Neck: an elliptic cylinder from inside the head down into the torso, wider at the base.
    phi = np.linspace(-np.pi, np.pi, 25)
    y = np.linspace(-0.45, -2.3, 9)
    yy, pp = np.meshgrid(y, phi, indexing="ij")
    flare = 1 + 0.6 * smoothstep((-1.35 - yy) / 0.55)
    rx = shape.neck_half_width * flare
    rz = 0.9 * shape.neck_half_width * (1 + 0.2 * (flare - 1))
    neck_z = shape.chin_forward - 0.42
    neck = np.stack([rx * np.cos(pp), yy, neck_z + rz * np.sin(pp)], -1)
    neck_normals = normalize(np.stack([np.cos(pp) / rx, np.zeros_like(pp), np.sin(pp) / rz], -1))
    neck_attrs = np.stack([yy, np.sin(pp), np.zeros_like(yy)], -1)
    neck_mesh = _grid_mesh(neck, neck_normals, neck_attrs, Material.NECK, True)
    # Torso: a superellipsoid, square-shouldered, flattened front to back.
    eta = np.linspace(-np.pi / 2, np.pi / 2, 15)
    omega = np.linspace(-np.pi, np.pi, 33)
    ee, ww = np.meshgrid(eta, omega, indexing="ij")

    def signed_pow(c: np.ndarray, e: float) -> np.ndarray:
        return np.sign(c) * np.abs(c) ** e

    centre = np.array([0.0, -2.3, neck_z - 0.1])
    radii = np.array([torso_half_width, 1.0, 0.62])
    ce, se = signed_pow(np.cos(ee), 0.55), signed_pow(np.sin(ee), 0.55)
    torso = centre + radii * np.stack([ce * np.cos(ww), se, ce * np.sin(ww)], -1)
    torso_normals = grid_normals(torso)
    radial = normalize((torso - centre) / radii**2)
    torso_normals = np.where(
        (torso_normals * radial).sum(-1, keepdims=True) < 0, -torso_normals, torso_normals
    )
    torso_normals = normalize(np.where(np.isfinite(torso_normals), torso_normals, radial))
    attrs = torso - centre - np.array([0.0, radii[1], 0.0])  # x, y below the top, z
    torso_mesh = _grid_mesh(torso, torso_normals, attrs, Material.CLOTH, True, outward=radial)
    mesh = Mesh.concat([neck_mesh, torso_mesh])
    head_weight = np.concatenate([smoothstep((yy.ravel() + 1.4) / 0.7), np.zeros(len(torso_mesh.vertices))])
    return BodyModel(mesh, head_weight)


# ---------------------------------------------------------------------------------------------------
# Features rebuilt per frame from the landmarks


_EYE_SAMPLES = 7  # per lid: corners and both lid landmarks are vertices
_BROW_SAMPLES = 9
_LIP_SAMPLES = 13
_CURVES = {
    "lid": catmull_rom_basis(4, _EYE_SAMPLES),
    "brow": catmull_rom_basis(5, _BROW_SAMPLES),
    "outer": catmull_rom_basis(7, _LIP_SAMPLES),
    "inner": catmull_rom_basis(5, _LIP_SAMPLES),
}
# (curve, landmark indices) of every outline, in vertex order.
_OUTLINES = [
    ("lid", [36, 37, 38, 39]),  # 0 right eye upper
    ("lid", [36, 41, 40, 39]),  # 1 right eye lower
    ("lid", [42, 43, 44, 45]),  # 2 left eye upper
    ("lid", [42, 47, 46, 45]),  # 3 left eye lower
    ("brow", [17, 18, 19, 20, 21]),  # 4
    ("brow", [22, 23, 24, 25, 26]),  # 5
    ("outer", [48, 49, 50, 51, 52, 53, 54]),  # 6 upper lip, outer edge
    ("inner", [60, 61, 62, 63, 64]),  # 7 upper lip, inner edge
    ("outer", [48, 59, 58, 57, 56, 55, 54]),  # 8 lower lip, outer edge
    ("inner", [60, 67, 66, 65, 64]),  # 9 lower lip, inner edge
]


def _outline_matrix() -> tuple[np.ndarray, list[slice]]:
    """One (samples, 68) matrix mapping landmarks to every outline vertex, and each outline's rows."""
    blocks, spans, start = [], [], 0
    for curve, idx in _OUTLINES:
        basis = _CURVES[curve]
        block = np.zeros((len(basis), 68))
        block[:, idx] = basis
        blocks.append(block)
        spans.append(slice(start, start + len(basis)))
        start += len(basis)
    return np.concatenate(blocks), spans


_OUTLINE_MATRIX, _SPANS = _outline_matrix()


def feature_topology() -> tuple[np.ndarray, np.ndarray]:
    """Triangles and materials of the per-frame features; vertex order as in `feature_vertices`."""
    n_eye, n_brow, n_lip = _EYE_SAMPLES, _BROW_SAMPLES, _LIP_SAMPLES
    tris, mats = [], []
    base = 0

    def add(t: np.ndarray, material: Material) -> None:
        tris.append(t)
        mats.append(np.full(len(t), int(material)))

    for _ in range(2):  # the eye openings (between the lids)
        add(strip_triangles(n_eye, base, base + n_eye), Material.EYE)
        base += 2 * n_eye
    for _ in range(2):  # the lash bands on the upper lids
        add(strip_triangles(n_eye, base, base + n_eye), Material.LASH)
        base += 2 * n_eye
    for _ in range(2):  # the brows
        add(strip_triangles(n_brow, base, base + n_brow), Material.BROW)
        base += 2 * n_brow
    for _ in range(2):  # upper lip, lower lip
        add(strip_triangles(n_lip, base, base + n_lip), Material.LIP)
        base += 2 * n_lip
    add(strip_triangles(n_lip, base, base + n_lip), Material.MOUTH)  # between the inner lips
    return np.concatenate(tris), np.concatenate(mats)


FEATURE_TRIANGLES, FEATURE_MATERIALS = feature_topology()


def feature_vertices(identity: Identity, expr: face.Expression) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame feature geometry for all T frames: (vertices, normals, attributes), each (T, V, 3), in
    head space with the jaw applied exactly as to the landmarks (face.landmarks_3d)."""
    shape = identity.shape
    flat, follow = face.unposed_landmarks(shape, expr)

    curve_pts = np.einsum("sl,tlc->tsc", _OUTLINE_MATRIX, flat)
    curve_follow = np.einsum("sl,tl->ts", _OUTLINE_MATRIX, follow)
    on_surface = face.place_on_surface(
        shape, curve_pts[..., 0], curve_pts[..., 1], np.zeros(curve_pts.shape[:2])
    )
    curve_normals = face.surface_normal(shape, on_surface)
    sp = [curve_pts[:, s] for s in _SPANS]
    sn = [curve_normals[:, s] for s in _SPANS]
    sf = [curve_follow[:, s] for s in _SPANS]
    up = np.array([0.0, 1.0, 0.0])
    verts, norms, attrs, follows = [], [], [], []

    def add(v, n, a, f):
        verts.append(v)
        norms.append(n)
        attrs.append(a)
        follows.append(f)

    # Eyes: the opening between the lids; attributes: offset from the iris centre in iris radii, lid
    # position (1 at the upper lid).
    half_w = shape.eye_width / 2
    for upper, lower in ((0, 1), (2, 3)):
        corners = 0.5 * (sp[upper][:, 0] + sp[upper][:, -1])  # (T, 3)
        iris = corners[:, :2] + np.stack(
            [
                expr.gaze[:, 0] * 0.4 * half_w,
                expr.gaze[:, 1] * 0.3 * shape.eye_opening + 0.15 * shape.eye_opening,
            ],
            -1,
        )
        for k, which in enumerate((upper, lower)):
            rel = (sp[which][..., :2] - iris[:, None]) / shape.iris_radius
            lid = np.full(rel.shape[:2] + (1,), 1.0 - k)
            add(sp[which], sn[which], np.concatenate([rel, lid], -1), sf[which])
    # Lash bands along the upper lids, thicker towards the outer corner.
    for upper, outer_first in ((0, True), (2, False)):
        ramp = np.linspace(1.0, 0.0, _EYE_SAMPLES) if outer_first else np.linspace(0.0, 1.0, _EYE_SAMPLES)
        thick = (0.008 + 0.012 * ramp)[None, :, None]
        base = sp[upper] + sn[upper] * 0.004
        top = base + up * thick + sn[upper] * 0.006
        along = np.broadcast_to(ramp[None, :, None], base.shape[:2] + (1,))
        zeros = np.zeros(base.shape[:2] + (2,))
        add(base, sn[upper], np.concatenate([along, zeros], -1), sf[upper])
        add(top, sn[upper], np.concatenate([along, zeros], -1), sf[upper])
    # Brows: a band around the landmark line, thickest a third of the way from the inner end.
    for brow, outer_first in ((4, True), (5, False)):
        t = np.linspace(0.0, 1.0, _BROW_SAMPLES)
        from_inner = 1 - t if outer_first else t
        profile = (
            0.55
            + 0.45 * np.sin(np.pi * np.clip(0.25 + 0.9 * (1 - from_inner), 0, 1))
            - 0.25 * (1 - from_inner) ** 3
        )
        half = (0.5 * shape.brow_thickness * profile)[None, :, None]
        centre = sp[brow] + sn[brow] * 0.002
        for side in (1.0, -1.0):
            a = np.stack(
                [
                    np.broadcast_to(from_inner, centre.shape[:2]),
                    np.full(centre.shape[:2], side),
                    np.zeros(centre.shape[:2]),
                ],
                -1,
            )
            add(centre + side * up * half, sn[brow], a, sf[brow])
    # Lips: outer edge to inner edge; attribute: across (0 outer .. 1 inner), x, which lip.
    for outer, inner, which in ((6, 7, 0.0), (8, 9, 1.0)):
        sign = 1.0 if which == 0.0 else -1.0
        for across, curve in ((0.0, outer), (1.0, inner)):
            n = normalize(sn[curve] + up * (sign * 0.8 * (1 - 2 * across)))
            a = np.stack(
                [
                    np.full(sp[curve].shape[:2], across),
                    sp[curve][..., 0],
                    np.full(sp[curve].shape[:2], which),
                ],
                -1,
            )
            add(sp[curve], n, a, sf[curve])
    # Mouth: between the inner edges; attribute: distance below the upper lip, the opening there, x.
    upper_pts, lower_pts = sp[7], sp[9]
    upper_r = face.rotate_jaw(shape, upper_pts, face.jaw_angles(sf[7], expr.jaw))
    lower_r = face.rotate_jaw(shape, lower_pts, face.jaw_angles(sf[9], expr.jaw))
    gap = np.linalg.norm(upper_r - lower_r, axis=-1)
    add(upper_pts, sn[7], np.stack([np.zeros_like(gap), gap, upper_pts[..., 0]], -1), sf[7])
    add(lower_pts, sn[9], np.stack([gap, gap, lower_pts[..., 0]], -1), sf[9])

    vertices = np.concatenate(verts, axis=1)
    normals = np.concatenate(norms, axis=1)
    attributes = np.concatenate(attrs, axis=1)
    angle = face.jaw_angles(np.concatenate(follows, axis=1), expr.jaw)
    return face.rotate_jaw(shape, vertices, angle), face.rotate_jaw_vectors(normals, angle), attributes
