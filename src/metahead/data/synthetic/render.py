"""Render one video of one person: pose the meshes, project them, rasterise with a z-buffer at `supersample`
times the output size, shade every visible pixel, average down (anti-aliasing) and put the result over
the background.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from metahead.data.synthetic import face
from metahead.data.synthetic.geometry import normalize, rotation_matrices, smoothstep
from metahead.data.synthetic.identity import Identity
from metahead.data.synthetic.meshes import (
    FEATURE_MATERIALS,
    FEATURE_TRIANGLES,
    NUM_MATERIALS,
    Material,
    build_body,
    build_head,
    feature_vertices,
)
from metahead.data.synthetic.motion import Motion
from metahead.data.synthetic.raster import Rasterizer, interpolate
from metahead.data.synthetic.scene import VideoStyle, render_background

CAMERA_DISTANCE = 10.0  # head units (about 1.2 m): mild perspective
HEAD_PIVOT = np.array([0.0, -0.75, -0.1])  # the head turns about the top of the neck
BODY_PIVOT = np.array([0.0, -2.3, -0.1])
BACKGROUND_LABEL = -1

# Per material: specular strength, shininess, diffuse wrap (soft terminator for skin-like materials).
_SPECULAR = np.zeros((NUM_MATERIALS, 3))
_SPECULAR[:] = (0.03, 16.0, 0.3)
_SPECULAR[Material.EYE] = (0.0, 1.0, 0.5)
_SPECULAR[Material.LASH] = (0.0, 1.0, 0.0)
_SPECULAR[Material.BROW] = (0.02, 8.0, 0.2)
_SPECULAR[Material.LIP] = (0.08, 30.0, 0.3)
_SPECULAR[Material.MOUTH] = (0.05, 20.0, 0.5)
_SPECULAR[Material.HAIR] = (0.05, 30.0, 0.15)
_SPECULAR[Material.CLOTH] = (0.02, 8.0, 0.1)


def _linear(colour) -> np.ndarray:
    return np.asarray(colour, dtype=np.float32) ** 2  # sRGB -> linear, gamma 2 (cheap and close enough)


def _hash(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A per-position pseudo-random value in [0, 1): texture noise that moves with the surface."""
    v = np.sin(x * 127.1 + y * 311.7) * 43758.5453
    return v - np.floor(v)


@dataclass
class Frame:
    image: np.ndarray  # (S, S, 3) uint8
    landmarks: np.ndarray  # (68, 2) float32 pixel coordinates, pixel centres at integers
    labels: np.ndarray | None = None  # (S, S) int: Material per pixel, -1 = background


class VideoRenderer:
    """Renders frames of one person in one video setting at one size."""

    def __init__(self, identity: Identity, style: VideoStyle, size: int, supersample: int = 2):
        if not 16 <= size <= 1024:
            raise ValueError(f"image size must be between 16 and 1024, got {size}")
        if supersample < 1:
            raise ValueError(f"supersample must be >= 1, got {supersample}")
        self.identity = identity
        self.style = style
        self.size = size
        self.supersample = supersample
        self.head = build_head(identity, size)
        self.body = build_body(identity, style.clothing.torso_half_width)
        head_count = len(self.head.mesh.vertices)
        feature_count = int(FEATURE_TRIANGLES.max()) + 1
        self._head_count, self._feature_count = head_count, feature_count
        self.triangles = np.concatenate(
            [
                self.head.mesh.triangles,
                FEATURE_TRIANGLES + head_count,
                self.body.mesh.triangles + head_count + feature_count,
            ]
        )
        self.material = np.concatenate([self.head.mesh.material, FEATURE_MATERIALS, self.body.mesh.material])
        self.cullable = np.concatenate(
            [self.head.mesh.cullable, np.zeros(len(FEATURE_TRIANGLES), bool), self.body.mesh.cullable]
        )
        # Triangles sorted by material: the rasteriser's fragments then come grouped by material.
        order = np.argsort(self.material, kind="stable")
        self.triangles, self.material, self.cullable = (
            self.triangles[order],
            self.material[order],
            self.cullable[order],
        )
        self.background = render_background(style.background, size)
        inner = size * supersample
        self.raster = Rasterizer(inner, inner)
        self._buffer = np.zeros((inner, inner, 4), np.float32)  # reused: colour + coverage
        self.focal = inner * CAMERA_DISTANCE / style.framing.frame_units
        self.centre = (inner - 1) / 2.0
        framing = style.framing
        self.head_offset = np.array(
            [
                (framing.centre_x - 0.5) * framing.frame_units,
                (0.5 - framing.centre_y) * framing.frame_units,
                0.0,
            ]
        )
        light = style.lighting
        self.key = normalize(np.array(light.key_direction, np.float32))
        self.fill = normalize(np.array(light.fill_direction, np.float32))
        self.half_vector = normalize(self.key + np.array([0.0, 0.0, 1.0], np.float32))
        # Rows: key, fill, ambient colours (the ambient comes from above: weighted by 0.8 + 0.2 n_y).
        self.light_colours = np.array([light.key_colour, light.fill_colour, light.ambient], np.float32)
        looks = identity.looks
        self.colours = {
            name: _linear(getattr(looks, name))
            for name in ("skin", "lips", "iris", "brows", "hair", "sclera", "teeth")
        }
        self.colours["cloth"] = _linear(style.clothing.colour)
        self.colours["cloth2"] = _linear(style.clothing.second)

    # -------------------------------------------------------------------------------------------
    def landmarks(self, motion: Motion) -> np.ndarray:
        """(T, 68, 2) float32 pixel coordinates of the 68 points in every frame (no rendering needed)."""
        points = face.landmarks_3d(self.identity.shape, motion.expression)
        head_rot = rotation_matrices(motion.yaw, motion.pitch, motion.roll)
        cam = (
            np.einsum("tij,tpj->tpi", head_rot, points - HEAD_PIVOT)
            + HEAD_PIVOT
            + self._head_offset(motion)[:, None]
        )
        xy, _ = self._project(cam.reshape(-1, 3))
        return self._to_output_pixels(xy).reshape(len(motion), 68, 2)

    def render(self, motion: Motion, with_labels: bool = False) -> Iterator[Frame]:
        """Yield a Frame per frame of `motion`."""
        shape = self.identity.shape
        expr = motion.expression
        landmarks = self.landmarks(motion)
        feat_v, feat_n, feat_a = feature_vertices(self.identity, expr)
        head_rot = rotation_matrices(motion.yaw, motion.pitch, motion.roll)
        body_rot = rotation_matrices(0.3 * motion.yaw, np.zeros_like(motion.pitch), 0.25 * motion.roll)
        head_offset = self._head_offset(motion)
        body_offset = self.head_offset + 0.7 * (head_offset - self.head_offset)
        head, body = self.head.mesh, self.body.mesh
        jaw_idx = self.head.jaw_index
        neck_w = self.body.head_weight[:, None]
        attributes = np.concatenate([head.attributes, feat_a[0], body.attributes]).astype(np.float32)
        feat_slice = slice(self._head_count, self._head_count + self._feature_count)
        for t in range(len(motion)):
            head_v = head.vertices.copy()
            head_n = head.normals.copy()
            angle = face.jaw_angles(self.head.jaw_weight[None], expr.jaw[t : t + 1])[0]
            head_v[jaw_idx] = face.rotate_jaw(shape, head_v[jaw_idx], angle)
            head_n[jaw_idx] = face.rotate_jaw_vectors(head_n[jaw_idx], angle)
            rot = head_rot[t].T
            cam_head_v = (
                (np.concatenate([head_v, feat_v[t]]) - HEAD_PIVOT) @ rot + HEAD_PIVOT + head_offset[t]
            )
            cam_head_n = np.concatenate([head_n, feat_n[t]]) @ rot
            # The neck's top turns with the head, its base with the torso.
            on_body = (body.vertices - BODY_PIVOT) @ body_rot[t].T + BODY_PIVOT + body_offset[t]
            on_head = (body.vertices - HEAD_PIVOT) @ rot + HEAD_PIVOT + head_offset[t]
            body_v = neck_w * on_head + (1 - neck_w) * on_body
            body_n = normalize(neck_w * (body.normals @ rot) + (1 - neck_w) * (body.normals @ body_rot[t].T))
            vertices = np.concatenate([cam_head_v, body_v])
            normals = np.concatenate([cam_head_n, body_n]).astype(np.float32)
            attributes[feat_slice] = feat_a[t]
            xy, depth = self._project(vertices)
            yield self._draw(xy, depth, normals, attributes, landmarks[t], with_labels)

    def _head_offset(self, motion: Motion) -> np.ndarray:
        """(T, 3) where the head-space origin goes in camera space."""
        shift = np.concatenate([motion.shift, np.zeros((len(motion), 1))], axis=1)
        return self.head_offset + shift

    def _project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Camera space (z towards the camera) to supersampled pixel coordinates and depth."""
        depth = CAMERA_DISTANCE - points[:, 2]
        scale = self.focal / depth
        xy = np.stack([self.centre + points[:, 0] * scale, self.centre - points[:, 1] * scale], 1)
        return xy, depth

    def _to_output_pixels(self, xy: np.ndarray) -> np.ndarray:
        """Supersampled to output pixel coordinates (pixel centres at integers in both)."""
        ss = self.supersample
        return ((xy - (ss - 1) / 2.0) / ss).astype(np.float32)

    def _draw(self, xy, depth, normals, attributes, landmarks, with_labels) -> Frame:
        ss, size = self.supersample, self.size
        frags = self.raster(xy, depth, self.triangles, self.cullable)
        mixed = interpolate(frags, np.concatenate([normals, attributes], axis=1))
        normal, attr = mixed[:, :3], mixed[:, 3:]
        material = self.material[frags.triangle]
        twosided = ~self.cullable[frags.triangle]
        normal = normalize(normal)
        flip = twosided & (normal[:, 2] < 0)
        normal[flip] *= -1
        colour = self._shade(material, normal, attr)

        inner = size * ss
        buffer = self._buffer
        buffer.fill(0.0)
        flat = buffer.reshape(-1, 4)
        flat[frags.pixel, :3] = colour
        flat[frags.pixel, 3] = 1.0
        # Box-filter down: the sum of the ss x ss strided views (much faster than a mean over axes).
        small = np.zeros((size, size, 4), np.float32)
        for i in range(ss):
            for j in range(ss):
                small += buffer[i::ss, j::ss]
        # small holds ss² x (premultiplied colour, coverage): composite over the background, to 8 bits.
        scale = 255.0 / (ss * ss)
        image = small[..., :3] * scale + (255.0 - small[..., 3:] * scale) * self.background
        image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
        labels = None
        if with_labels:
            full = np.full(inner * inner, BACKGROUND_LABEL, np.int64)
            full[frags.pixel] = material
            labels = full.reshape(inner, inner)[ss // 2 :: ss, ss // 2 :: ss]
        return Frame(image, landmarks, labels)

    # -------------------------------------------------------------------------------------------
    def _shade(self, material: np.ndarray, normal: np.ndarray, attr: np.ndarray) -> np.ndarray:
        """sRGB colour of each fragment; fragments come grouped by material (see rasterize)."""
        bounds = np.flatnonzero(material[1:] != material[:-1]) + 1
        starts = np.concatenate([[0], bounds])
        stops = np.concatenate([bounds, [len(material)]])
        linear = np.empty((len(material), 3), np.float32)
        light = self.style.lighting
        for start, stop in zip(starts, stops):
            m = Material(int(material[start]))
            n = normal[start:stop]
            spec_strength, shininess, wrap = _SPECULAR[m]
            albedo = self._albedo(m, attr[start:stop], n)
            terms = np.empty((stop - start, 3), np.float32)
            terms[:, 0] = np.clip((n @ self.key + wrap) / (1 + wrap), 0, 1)
            terms[:, 1] = np.clip((n @ self.fill + wrap) / (1 + wrap), 0, 1)
            terms[:, 2] = 0.8 + 0.2 * n[:, 1]
            out = albedo * (terms @ self.light_colours)
            if spec_strength > 0:
                highlight = np.clip(n @ self.half_vector, 0, 1) ** shininess * spec_strength
                out += highlight[:, None] * self.light_colours[0]
            linear[start:stop] = out
        np.clip(linear * light.exposure, 0, 1, out=linear)
        return np.sqrt(linear, out=linear)

    def _albedo(self, m: Material, a: np.ndarray, n: np.ndarray) -> np.ndarray:
        shape, looks, c = self.identity.shape, self.identity.looks, self.colours
        count = len(a)
        if m in (Material.SKIN, Material.NOSE, Material.NOSTRILS):
            x, y = a[:, 0], a[:, 1]
            albedo = np.broadcast_to(c["skin"], (count, 3)).copy()
            ax = np.abs(x)
            socket = np.exp(
                -(((ax - shape.eye_spacing) / 0.15) ** 2) - ((y - shape.eye_y + 0.005) / 0.085) ** 2
            )
            albedo *= 1 - socket[:, None] * np.array([0.22, 0.26, 0.22], np.float32)
            cheek = np.exp(-(((ax - 0.3) / 0.13) ** 2) - ((y - shape.nose_tip_y - 0.02) / 0.11) ** 2)
            albedo *= 1 + (looks.blush * cheek)[:, None] * np.array([0.1, -0.12, -0.1], np.float32)
            if m == Material.SKIN:
                albedo *= self._contact_shadows(a)[:, None]
                if looks.beard > 0:
                    albedo = self._beard(albedo, a)
            if m == Material.NOSTRILS:
                nw = shape.nose_width
                d = ((ax - 0.5 * nw) / (0.33 * nw)) ** 2 + ((y - shape.nose_tip_y + 0.05) / 0.022) ** 2
                albedo *= (0.12 + 0.88 * smoothstep(d - 0.6))[:, None]
            return albedo
        if m == Material.EAR:
            r = a[:, 0]
            concha = smoothstep((0.75 - r) / 0.35)
            return c["skin"] * (1 - 0.4 * concha)[:, None] * np.array([1.0, 0.95, 0.95], np.float32)
        if m == Material.NECK:
            y, front = a[:, 0], a[:, 1]
            under_jaw = 1 - smoothstep((-0.78 - y) / 0.5)
            shade = 1 - 0.5 * under_jaw * smoothstep(front + 0.3)
            return c["skin"] * (0.93 * shade)[:, None]
        if m == Material.EYE:
            dx, dy, lid = a[:, 0], a[:, 1], a[:, 2]
            r = np.sqrt(dx * dx + dy * dy)
            albedo = np.broadcast_to(c["sclera"] * 0.8, (count, 3)).copy()
            albedo *= (1 - 0.4 * smoothstep((np.abs(dx) - 1.0) / 2.5))[:, None]
            iris = r < 1.0
            streaks = 0.8 + 0.2 * np.sin(14 * np.arctan2(dy[iris], dx[iris]))
            ring = np.where(r[iris] > 0.82, 0.45, 1.0)
            albedo[iris] = c["iris"] * (streaks * ring)[:, None]
            albedo[r < 0.4] = 0.003
            glint = ((dx + 0.35) ** 2 + (dy - 0.35) ** 2) < 0.045
            albedo[glint] = 1.0
            albedo *= (1 - 0.55 * smoothstep((lid - 0.45) / 0.55))[:, None]
            return albedo
        if m == Material.LASH:
            return np.broadcast_to(c["brows"] * 0.15 + 0.002, (count, 3)).copy()
        if m == Material.BROW:
            along, side = a[:, 0], a[:, 1]
            strands = 0.8 + 0.2 * np.sin(90 * along + 6 * side)
            return c["brows"] * strands[:, None]
        if m == Material.LIP:
            across, x, lower = a[:, 0], a[:, 1], a[:, 2]
            shade = (1 - 0.4 * across**2) * (1 + 0.08 * lower) * (0.93 + 0.07 * _hash(x, lower))
            return c["lips"] * shade[:, None]
        if m == Material.MOUTH:
            d, gap, x = a[:, 0], a[:, 1], a[:, 2]
            albedo = np.broadcast_to(np.array([0.008, 0.001, 0.001], np.float32), (count, 3)).copy()
            tongue = (gap - d < 0.045) & (gap > 0.06)
            albedo[tongue] = np.array([0.09, 0.015, 0.015], np.float32)
            tooth_gap = np.abs((x / 0.042 + 0.5) % 1.0 - 0.5) < 0.07
            across = np.abs(x) / (0.55 * shape.mouth_half_width)  # teeth show between the canines only
            upper = (d < 0.028) & (gap > 0.012) & (across < 1)
            lower = (gap - d < 0.014) & (gap > 0.1) & (across < 0.8)
            teeth = upper | lower
            # Teeth sit in the lips' shadow, darker towards the sides.
            shade = 0.7 * (1 - 0.5 * across[teeth] ** 2) * np.where(tooth_gap[teeth], 0.5, 1.0)
            albedo[teeth] = c["teeth"] * shade[:, None]
            return albedo * (0.5 + 0.5 * smoothstep(1 - np.abs(x) / (shape.mouth_half_width + 1e-3)))[:, None]
        if m == Material.HAIR:
            u, s = a[:, 0], a[:, 1]
            hair = self.identity.hair
            wave = 4 * np.sin(3 * s + hair.wave_phase)
            strands = (
                0.88
                + 0.07 * np.sin(hair.strand_frequency * u + wave)
                + 0.05 * np.sin(2.7 * hair.strand_frequency * u)
            )
            grain = 0.92 + 0.16 * _hash(np.round(u * 300), np.round(s * 40))
            return c["hair"] * (strands * grain)[:, None]
        if m == Material.CLOTH:
            return self._cloth(a)
        raise ValueError(f"no shading for {m}")

    def _contact_shadows(self, a: np.ndarray) -> np.ndarray:
        """Darkening of the skin where light is partly blocked: under the hairline (precomputed per vertex,
        meshes.head_surface), the nose and the lips."""
        shape = self.identity.shape
        x, y, hair_shadow = a[:, 0], a[:, 1], a[:, 2]
        nose = np.exp(-((x / (0.9 * shape.nose_width)) ** 2) - ((y - shape.nose_tip_y + 0.1) / 0.04) ** 2)
        lip = np.exp(
            -((x / shape.mouth_half_width) ** 2) - ((y - shape.mouth_y + shape.lower_lip + 0.04) / 0.03) ** 2
        )
        return hair_shadow * (1 - 0.25 * nose - 0.18 * lip)

    def _beard(self, albedo: np.ndarray, a: np.ndarray) -> np.ndarray:
        shape, looks = self.identity.shape, self.identity.looks
        x, y = a[:, 0], a[:, 1]
        ax = np.abs(x)
        reach = looks.beard_reach
        top = (1 - reach) * (shape.mouth_y + 0.02) + reach * (shape.nose_tip_y - 0.07)
        side = (
            reach
            * (shape.ear_y + 0.05 - top)
            * smoothstep((ax - 0.55 * shape.half_width) / (0.35 * shape.half_width))
        )
        width = 0.22 + 0.6 * reach
        mask = smoothstep((top + side - y) / 0.05) * smoothstep((width - ax) / 0.08)
        stubble = 0.6 + 0.4 * _hash(x * 3, y * 3)
        amount = (looks.beard * mask * stubble)[:, None]
        return albedo + (self.colours["hair"] * 0.8 - albedo) * amount

    def _cloth(self, a: np.ndarray) -> np.ndarray:
        clothing = self.style.clothing
        x, y = a[:, 0], a[:, 1]  # y: 0 at the top of the torso, negative below
        c = self.colours
        count = len(a)
        albedo = np.broadcast_to(c["cloth"], (count, 3)).copy()
        if clothing.stripes > 0:
            stripe = np.sin(2 * np.pi * clothing.stripes * y) > 0.3
            albedo[stripe] = c["cloth2"]
        neck = self.identity.shape.neck_half_width * 1.5
        ax = np.abs(x)
        if clothing.kind == "vneck":
            skin = ax < neck * (1 + y / 0.55)
        elif clothing.kind == "shirt":
            collar = (ax < neck * 1.15) & (y > -0.2 - 0.3 * (ax / neck))
            albedo[collar] = c["cloth"] * 1.15
            skin = ax < neck * 0.9 * (1 + y / 0.35)
            placket = (ax < 0.03) & (y < -0.3)
            albedo[placket] *= 0.85
        elif clothing.kind == "jacket":
            shirt = ax < neck * 1.2 * (1 + y / 1.1)
            albedo[shirt] = c["cloth2"]
            lapel = (~shirt) & (ax < neck * 1.2 * (1 + y / 1.1) + 0.12)
            albedo[lapel] *= 0.8
            skin = ax < neck * 0.85 * (1 + y / 0.3)
        else:
            skin = (x / neck) ** 2 + ((y + 0.02) / 0.22) ** 2 < 1
        albedo[skin] = c["skin"] * 0.88
        return albedo
