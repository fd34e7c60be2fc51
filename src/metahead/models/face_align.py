"""Face-chip alignment from 68 landmarks, reproducing dlib's ``get_face_chip_details`` +
``extract_image_chip`` in PyTorch (batched, differentiable with respect to the images).

What dlib does, and what is reproduced here (dlib/image_transforms/interpolation.h):

1. A similarity transform (least squares, Umeyama) from a mean-face template to 33 of the 68
   landmarks (points 27..67 minus the lower lip; no jaw, no eyebrows). The template lives in a
   ``size`` x ``size`` chip with ``padding`` (fraction of the face width) on each side.
2. The chip becomes a rotated rectangle of side ``size * scale`` centred on the template's centre;
   chip pixel (u, v) maps linearly onto it, with the corner pixels on the rectangle's corners.
3. When the rectangle is more than about twice the chip size, dlib first crops the image to the
   rectangle's bounding box (plus a margin) and halves it with its 5x5 binomial pyramid, as many
   times as keeps the rectangle larger than the chip; the rectangle follows the pyramid's own
   point mapping (p / 2 - (1.25, 0.75) per level).
4. Bilinear sampling; a sample whose 2x2 neighbourhood leaves the (cropped/downsampled) image is
   black. dlib stores the chip as 8-bit, truncating; ``quantize=True`` does the same (floor, with a
   straight-through gradient) for images in 0..255, as does its pyramid at each level.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# dlib's mean face shape for landmarks 17..67 in a unit box (x then y), the points it fits to.
_MEAN_FACE_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689,
)  # fmt: skip
_MEAN_FACE_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182,
)  # fmt: skip
# Landmarks used for the fit: nose, eyes, outer and upper-inner lips (not jaw, brows, lower lip).
FIT_LANDMARKS = tuple(i for i in range(27, 68) if not (55 <= i <= 59 or 65 <= i <= 67))

# dlib's pyramid_down<2>: a separable [1 4 6 4 1] filter, keep every other pixel, no padding.
_PYRAMID_TAPS = (1.0, 4.0, 6.0, 4.0, 1.0)
_PYRAMID_SHIFT = (1.25, 0.75)  # x, y offset of its point mapping: p_down = p / 2 - shift


def _template_points(size: int, padding: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    index = torch.tensor([i - 17 for i in FIT_LANDMARKS])
    xy = torch.stack(
        [torch.tensor(_MEAN_FACE_X, dtype=torch.float64), torch.tensor(_MEAN_FACE_Y, dtype=torch.float64)], 1
    )
    return ((padding + xy[index]) / (2 * padding + 1) * size).to(device=device, dtype=dtype)


def face_chip_similarity(
    landmarks: torch.Tensor, size: int = 150, padding: float = 0.25
) -> tuple[torch.Tensor, torch.Tensor]:
    """The similarity transform chip -> image that dlib fits, as complex numbers:
    image_point = rotation_scale * chip_point + translation (points as x + iy), each (B,)."""
    if landmarks.dim() != 3 or landmarks.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (B, 68, 2), got shape {tuple(landmarks.shape)}")
    points = landmarks[:, FIT_LANDMARKS].to(torch.float64)
    image_points = torch.complex(points[..., 0], points[..., 1])
    template = _template_points(size, padding, torch.float64, landmarks.device)
    chip_points = torch.complex(template[:, 0], template[:, 1])
    chip_centred = chip_points - chip_points.mean()
    image_mean = image_points.mean(dim=1)
    # Least-squares z = a w + t over proper similarities; for 2-D points this is exactly Umeyama's
    # solution (dlib's find_similarity_transform), reflection case included.
    rotation_scale = (chip_centred.conj() * (image_points - image_mean[:, None])).sum(
        1
    ) / chip_centred.abs().square().sum()
    translation = image_mean - rotation_scale * chip_points.mean()
    return rotation_scale, translation


def _check_transforms(landmarks: torch.Tensor, rotation_scale: torch.Tensor, size: int) -> None:
    scale = rotation_scale.abs()
    bad_points = ~torch.isfinite(landmarks).all(dim=2).all(dim=1)
    bad_scale = ~torch.isfinite(scale) | (scale * size < 1.0)
    bad = (bad_points | bad_scale).nonzero().flatten().tolist()
    if bad:
        reasons = []
        for i in bad:
            reasons.append(
                f"{i} ({'NaN/inf landmarks' if bad_points[i] else 'landmarks collapse to a point'})"
            )
        raise ValueError(
            "degenerate face landmarks, no face-chip transform for batch items " + ", ".join(reasons)
        )


def _floor_straight_through(x: torch.Tensor) -> torch.Tensor:
    return x - (x - torch.floor(x)).detach()


def _pyramid_down(image: torch.Tensor, quantize: bool) -> torch.Tensor:
    """dlib's pyramid_down<2> on (C, H, W): output ((H-3)//2, (W-3)//2); empty for tiny images."""
    c, h, w = image.shape
    if h <= 8 or w <= 8:
        return image.new_zeros(c, 0, 0)
    taps = torch.tensor(_PYRAMID_TAPS, dtype=image.dtype, device=image.device)
    x = image[:, None]
    x = F.conv2d(x, taps.view(1, 1, 1, 5), stride=(1, 2))
    x = F.conv2d(x, taps.view(1, 1, 5, 1), stride=(2, 1)) / 256.0
    x = x[:, 0]
    return _floor_straight_through(x) if quantize else x


def _bilinear(images: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sample (B, C, H, W) at float64 pixel coordinates x, y (B, h, w), with dlib's formula and
    operation order: (1-ty)((1-tx) tl + tx tr) + ty((1-tx) bl + tx br). Out-of-range corners are
    clamped (the caller masks those samples)."""
    batch, channels, height, width = images.shape
    left = torch.floor(x).clamp(0, width - 2)
    top = torch.floor(y).clamp(0, height - 2)
    tx = (x - left).to(images.dtype)[:, None].flatten(2)
    ty = (y - top).to(images.dtype)[:, None].flatten(2)
    index = (top.long() * width + left.long()).flatten(1)[:, None].expand(batch, channels, -1)
    flat = images.flatten(2)
    tl = flat.gather(2, index)
    tr = flat.gather(2, index + 1)
    bl = flat.gather(2, index + width)
    br = flat.gather(2, index + width + 1)
    out = (1 - ty) * ((1 - tx) * tl + tx * tr) + ty * ((1 - tx) * bl + tx * br)
    return out.view(batch, channels, *x.shape[1:])


def _lround(x: float) -> int:
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def align_face_chips(
    images: torch.Tensor,
    landmarks: torch.Tensor,
    size: int = 150,
    padding: float = 0.25,
    quantize: bool = False,
) -> torch.Tensor:
    """Aligned face chips (B, 3, size, size) as dlib's get_face_chip cuts them.

    images: (B, C, H, W) float, any range (black = 0 outside the image); landmarks: (B, 68, 2)
    pixel (x, y). quantize=True emulates dlib's 8-bit truncation (for images in 0..255; gradient
    passes straight through). Differentiable with respect to the images. Raises ValueError naming
    the batch items whose landmarks are NaN/inf or give a degenerate (near-zero scale) transform.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if landmarks.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {landmarks.shape[0]} landmark sets")
    out_dtype = images.dtype if images.is_floating_point() else torch.float32
    # dlib samples in double precision; an 8-bit truncation only agrees with it when we do too.
    images = images.to(torch.float64 if quantize else out_dtype)
    batch, channels, height, width = images.shape
    # The geometry is a few dozen scalars per face: do it on the CPU in double precision, once.
    landmarks = landmarks.detach().to("cpu", torch.float64)
    rotation_scale, translation = face_chip_similarity(landmarks, size, padding)
    _check_transforms(landmarks, rotation_scale, size)
    rotation_scales, translations = rotation_scale.tolist(), translation.tolist()

    sources: list[torch.Tensor] = []
    corner_maps: list[tuple[float, float, float, float, float, float]] = []
    for i in range(batch):
        a = rotation_scales[i]
        scale = abs(a)
        cos, sin = a.real / scale, a.imag / scale
        centre = a * complex(size / 2, size / 2) + translations[i]
        half = (size * scale - 1) / 2  # dlib's centered_drect: side - 1 between corner pixels
        left, top, right, bottom = (
            centre.real - half,
            centre.imag - half,
            centre.real + half,
            centre.imag + half,
        )

        depth, side = 0, 2 * half + 1
        while ((side + 1) / 2) ** 2 > size * size:
            side = (side + 1) / 2
            depth += 1
        grow = 2.0
        for _ in range(depth):
            grow = grow * 2 + 2
        # Bounding box of the rotated rectangle, grown, clipped to the image, rounded.
        xs = [centre.real + cos * dx - sin * dy for dx in (-half, half) for dy in (-half, half)]
        ys = [centre.imag + sin * dx + cos * dy for dx in (-half, half) for dy in (-half, half)]
        box_left = _lround(max(min(xs) - grow, 0.0))
        box_top = _lround(max(min(ys) - grow, 0.0))
        box_right = _lround(min(max(xs) + grow, width - 1.0))
        box_bottom = _lround(min(max(ys) + grow, height - 1.0))
        if box_right < box_left or box_bottom < box_top:  # face entirely outside the image
            sources.append(images.new_zeros(channels, 0, 0))
            corner_maps.append((0.0,) * 6)
            continue
        source = images[i, :, box_top : box_bottom + 1, box_left : box_right + 1]
        left, right, top, bottom = left - box_left, right - box_left, top - box_top, bottom - box_top
        for _ in range(depth):
            source = _pyramid_down(source, quantize)
            left, right = left / 2 - _PYRAMID_SHIFT[0], right / 2 - _PYRAMID_SHIFT[0]
            top, bottom = top / 2 - _PYRAMID_SHIFT[1], bottom / 2 - _PYRAMID_SHIFT[1]
        sources.append(source)
        # chip (u, v) -> centre + R [(left - cx) + u (right - left)/(size-1), (top - cy) + v (...)]
        cx, cy = (left + right) / 2, (top + bottom) / 2
        step_x, step_y = (right - left) / (size - 1), (bottom - top) / (size - 1)
        origin_x, origin_y = left - cx, top - cy
        corner_maps.append(
            (
                cx + cos * origin_x - sin * origin_y,
                cy + sin * origin_x + cos * origin_y,
                cos * step_x,
                sin * step_x,
                -sin * step_y,
                cos * step_y,
            )
        )

    # One padded batch for a single grid_sample; the per-item mask uses each source's own size.
    source_h = max(2, max(s.shape[1] for s in sources))
    source_w = max(2, max(s.shape[2] for s in sources))
    padded = torch.stack([F.pad(s, (0, source_w - s.shape[2], 0, source_h - s.shape[1])) for s in sources])
    maps = torch.tensor(corner_maps, dtype=torch.float64).to(images.device)
    sizes = torch.tensor([[s.shape[2], s.shape[1]] for s in sources], dtype=torch.float64).to(images.device)
    grid_u = torch.arange(size, dtype=torch.float64, device=images.device)
    u, v = grid_u[None, None, :], grid_u[None, :, None]
    x = maps[:, 0, None, None] + maps[:, 2, None, None] * u + maps[:, 4, None, None] * v
    y = maps[:, 1, None, None] + maps[:, 3, None, None] * u + maps[:, 5, None, None] * v
    inside = (
        (torch.floor(x) >= 0)
        & (torch.floor(y) >= 0)
        & (torch.floor(x) + 1 < sizes[:, 0, None, None])
        & (torch.floor(y) + 1 < sizes[:, 1, None, None])
    )
    chips = _bilinear(padded, x, y) * inside[:, None].to(padded.dtype)
    return (_floor_straight_through(chips) if quantize else chips).to(out_dtype)
