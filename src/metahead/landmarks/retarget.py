"""Puppeteering: move the avatar's own landmark geometry the way the driver's face moves.

Driving an avatar with another person's raw landmarks draws the *driver's* face shape (jaw, eye spacing,
mouth width, nose length) into the landmark image, and the generator renders it: the driver's identity
leaks into the result. Retargeting keeps the avatar's shape and transfers only head pose and expression,
measured relative to a neutral frame of the driver:

1. Pose. Each driver frame D_t is related to the driver's neutral frame D_n by the similarity transform
   S_t (rotation, scale, shift) fitted on rigid points only (eye corners and nose), so that speech and
   blinks do not move the head estimate.
2. Expression. D_t is brought into the neutral frame, S_t⁻¹(D_t), and expressed in an upright
   canonical frame C of the neutral face (eye line horizontal, eye distance 1, origin between the eyes).
   Its displacement from the neutral shape, δ_t = C(S_t⁻¹(D_t)) − C(D_n), holds the expression and the
   non-rigid part of out-of-plane head rotation.
3. Proportions. δ_t is scaled per facial part (and per axis where that is stable) by the ratio of the
   avatar's part size to the driver's: a mouth opening of 30% of the driver's mouth width becomes 30% of
   the avatar's; a blink that closes the driver's eye closes the avatar's, whatever the eyes' heights.
   Ratios are clipped to [1/2, 2] so that one badly detected part cannot blow a displacement up.
4. The avatar's neutral shape A, aligned onto the driver's neutral face on the same rigid points and
   expressed in C, plus the scaled displacement, is taken back through C⁻¹ and S_t: the avatar's face
   in the driver's pose with the driver's expression.

`anchor="driver"` (default) places the result where the driver's face is in its frame (the avatar's
neutral takes the place of the driver's neutral, scaled to its rigid points): the result lines up with
the driver video. `anchor="avatar"` keeps the avatar's own placement in its crop and applies only the
driver's head motion relative to its neutral frame (conjugated into the avatar's frame).

The neutral driver frame is chosen automatically (`choose_neutral_frame`): after aligning every frame on
its rigid points, the frame closest to the median shape, with a closed mouth and open eyes; or given.

Similarities are handled as complex numbers, z ↦ a·z + b (a: rotation and scale, b: shift), which keeps
fitting, composing and inverting them to one line each. All arrays are numpy float (x, y) pixel coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metahead.landmarks.parts import FACE_PARTS, LEFT_EYE, NUM_LANDMARKS, RIGHT_EYE

# Points that move with the skull, not with expression: eye corners, nose bridge and nostrils.
RIGID_POINTS = np.array([36, 39, 42, 45, 27, 28, 29, 30, 31, 32, 33, 34, 35])
# Inner-lip pairs (upper, lower) whose distance measures how far the mouth is open.
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
# Upper/lower lid pairs of each eye.
EYE_LID_PAIRS = ((37, 41), (38, 40), (43, 47), (44, 46))
MOUTH_CORNERS = (48, 54)
NOSE_TIP = 30
# An eye whose opening is below this fraction of its width counts as closed: its height cannot be a
# reference size, so the eye's width ratio is used for both axes.
CLOSED_EYE_FRACTION = 0.12
RATIO_LIMITS = (0.5, 2.0)
# Shapes within this RMS distance (eye distances, after similarity alignment) count as the same face:
# `retarget=None` (auto) then uses the driver's landmarks as they are. Landmark noise of one detector on
# one face is about 0.01-0.02; different people are typically 0.05 and more apart.
SAME_FACE_TOLERANCE = 0.03


# --- similarities as complex numbers ------------------------------------------------------------------


def _complex(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points[..., 0] + 1j * points[..., 1]


def _real(z: np.ndarray) -> np.ndarray:
    return np.stack([z.real, z.imag], axis=-1)


@dataclass(frozen=True)
class Similarity:
    """z ↦ scale_rotation·z + shift on complex points; arrays broadcast over leading (frame) axes."""

    scale_rotation: np.ndarray  # complex (...)
    shift: np.ndarray  # complex (...)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return self.scale_rotation[..., None] * z + self.shift[..., None]

    def inverse(self) -> Similarity:
        return Similarity(1.0 / self.scale_rotation, -self.shift / self.scale_rotation)

    def then(self, other: Similarity) -> Similarity:
        """other ∘ self: apply self first."""
        return Similarity(
            other.scale_rotation * self.scale_rotation, other.scale_rotation * self.shift + other.shift
        )

    def apply_points(self, points: np.ndarray) -> np.ndarray:
        return _real(self(_complex(points)))


def fit_similarity(
    source: np.ndarray, target: np.ndarray, indices: np.ndarray | None = RIGID_POINTS
) -> Similarity:
    """Least-squares similarity mapping source points onto target points (both (..., 68, 2)), fitted on
    `indices` (None: all points). Batched over leading axes."""
    z, w = _complex(source), _complex(target)
    if indices is not None:
        z, w = z[..., indices], w[..., indices]
    z_mean, w_mean = z.mean(-1), w.mean(-1)
    zc, wc = z - z_mean[..., None], w - w_mean[..., None]
    energy = (np.abs(zc) ** 2).sum(-1)
    if np.any(energy <= 1e-12):
        raise ValueError("degenerate landmarks: the points used for alignment coincide")
    a = (np.conj(zc) * wc).sum(-1) / energy
    return Similarity(a, w_mean - a * z_mean)


def canonical_frame(landmarks: np.ndarray) -> Similarity:
    """The similarity taking a face (..., 68, 2) to its upright canonical frame: origin between the eye
    centres, eye line along +x, eye distance 1."""
    z = _complex(landmarks)
    right_eye, left_eye = z[..., RIGHT_EYE].mean(-1), z[..., LEFT_EYE].mean(-1)  # image-left, image-right
    axis = left_eye - right_eye
    if np.any(np.abs(axis) <= 1e-9):
        raise ValueError("degenerate landmarks: the eye centres coincide")
    a = 1.0 / axis
    return Similarity(a, -a * (right_eye + left_eye) / 2)


def check_landmarks(landmarks: np.ndarray, what: str = "landmarks") -> np.ndarray:
    """(68, 2) or (F, 68, 2) finite float64, else ValueError naming `what`."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape[-2:] != (NUM_LANDMARKS, 2) or points.ndim not in (2, 3):
        raise ValueError(f"{what} must have shape (68, 2) or (F, 68, 2), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"{what} contain NaN or inf")
    return points


# --- measurements in the canonical frame --------------------------------------------------------------


def _pair_distance(z: np.ndarray, pairs: tuple[tuple[int, int], ...]) -> np.ndarray:
    return np.mean([np.abs(z[..., a] - z[..., b]) for a, b in pairs], axis=0)


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Mean inner-lip gap in eye distances: (...,)."""
    z = canonical_frame(landmarks)(_complex(landmarks))
    return _pair_distance(z, INNER_LIP_PAIRS)


def eye_opening(landmarks: np.ndarray) -> np.ndarray:
    """Mean lid gap of both eyes in eye distances: (...,)."""
    z = canonical_frame(landmarks)(_complex(landmarks))
    return _pair_distance(z, EYE_LID_PAIRS)


def shape_distance(a: np.ndarray, b: np.ndarray) -> float:
    """RMS point distance between two faces (68, 2) after the best similarity over all points, in units
    of b's eye distance: 0 for the same shape in any position, size and in-plane rotation."""
    a, b = check_landmarks(a), check_landmarks(b)
    aligned = fit_similarity(a, b, None).apply_points(a)
    scale = abs(complex(*(b[LEFT_EYE].mean(0) - b[RIGHT_EYE].mean(0))))
    return float(np.sqrt(((aligned - b) ** 2).sum(-1).mean()) / max(scale, 1e-9))


def _part_sizes(z: np.ndarray) -> dict[str, tuple[float, float]]:
    """(x size, y size) of every part of one canonical face (68,) complex: the measure each part's
    displacements are scaled by. Isotropic where a part has no stable height (brows, nose, lips)."""

    def dist(i: int, j: int) -> float:
        return float(abs(z[i] - z[j]))

    jaw = z[0:17]
    mouth_width = dist(*MOUTH_CORNERS)
    sizes = {
        "jaw": (float(jaw.real.std()), float(jaw.imag.std())),
        "right_brow": (dist(17, 21),) * 2,
        "left_brow": (dist(22, 26),) * 2,
        "nose_bridge": (dist(27, 30),) * 2,
        "nostrils": (dist(31, 35),) * 2,
        "outer_lips": (mouth_width,) * 2,
        "inner_lips": (mouth_width,) * 2,  # one ratio for both lip outlines keeps them consistent
    }
    for name, corners, lids in (("right_eye", (36, 39), ((37, 41), (38, 40))),
                                ("left_eye", (42, 45), ((43, 47), (44, 46)))):  # fmt: skip
        width = dist(*corners)
        sizes[name] = (width, float(_pair_distance(z, lids)))
    return sizes


_PART_SLICES = {part.name: slice(part.start, part.stop) for part in FACE_PARTS}


def part_scale_ratios(avatar: np.ndarray, driver: np.ndarray) -> np.ndarray:
    """Per-point (x, y) factors (68, 2) that turn a displacement of the driver's neutral face into one of
    the avatar's: avatar part size / driver part size, both measured in the driver's canonical frame with
    the avatar aligned onto the driver on rigid points. Clipped to RATIO_LIMITS."""
    frame = canonical_frame(driver)
    avatar_z = frame(fit_similarity(avatar, driver)(_complex(avatar)))
    driver_z = frame(_complex(driver))
    avatar_sizes, driver_sizes = _part_sizes(avatar_z), _part_sizes(driver_z)
    ratios = np.ones((NUM_LANDMARKS, 2))
    for name, part in _PART_SLICES.items():
        (ax, ay), (dx, dy) = avatar_sizes[name], driver_sizes[name]
        rx = ax / dx if dx > 1e-9 else 1.0
        if name.endswith("_eye") and (dy < CLOSED_EYE_FRACTION * dx or ay < CLOSED_EYE_FRACTION * ax):
            ry = rx  # a closed eye has no height to compare
        else:
            ry = ay / dy if dy > 1e-9 else rx
        ratios[part] = (rx, ry)
    return np.clip(ratios, *RATIO_LIMITS)


# --- choosing the neutral frame -----------------------------------------------------------------------


@dataclass(frozen=True)
class NeutralChoice:
    index: int
    scores: np.ndarray  # (F,) lower is more neutral
    distance_to_median: np.ndarray  # (F,) RMS, eye distances
    mouth_opening: np.ndarray  # (F,) eye distances
    turn: np.ndarray  # (F,) nose tip's sideways offset from between the eyes, eye distances


def choose_neutral_frame(
    landmarks: np.ndarray, mouth_weight: float = 2.0, eye_weight: float = 2.0, turn_weight: float = 1.0
) -> NeutralChoice:
    """The most neutral frame of a sequence (F, 68, 2).

    Frames are aligned on their rigid points to the median shape (twice, so the median is of aligned
    shapes) and scored by RMS distance to that median + mouth_weight × mouth opening + eye_weight × how
    far the eyes are closed below their median opening + turn_weight × how far the nose tip is off the
    middle between the eyes (a head turned sideways; all in eye distances). The lowest score wins: a
    typical, frontal pose with a closed mouth and open eyes. Retargeting transfers pose relative to
    this frame, so a turned neutral frame would leave the avatar turned less than the driver.
    """
    points = check_landmarks(landmarks)
    if points.ndim == 2:
        points = points[None]
    canonical = canonical_frame(points)(_complex(points))  # (F, 68)
    reference = np.median(canonical.real, 0) + 1j * np.median(canonical.imag, 0)
    for _ in range(2):
        aligned = fit_similarity(_real(canonical), _real(reference)[None])(canonical)
        reference = np.median(aligned.real, 0) + 1j * np.median(aligned.imag, 0)
    # In the reference's canonical units (its eye distance is ~1 after alignment).
    unit = abs(reference[LEFT_EYE].mean() - reference[RIGHT_EYE].mean())
    distance = np.sqrt((np.abs(aligned - reference[None]) ** 2).mean(-1)) / unit
    mouth = _pair_distance(canonical, INNER_LIP_PAIRS)
    eyes = _pair_distance(canonical, EYE_LID_PAIRS)
    closed_eyes = np.clip(np.median(eyes) - eyes, 0.0, None)
    turn = np.abs(canonical[:, NOSE_TIP].real)  # canonical x: 0 between the eyes
    scores = distance + mouth_weight * mouth + eye_weight * closed_eyes + turn_weight * turn
    return NeutralChoice(int(np.argmin(scores)), scores, distance, mouth, turn)


# --- retargeting --------------------------------------------------------------------------------------


ANCHORS = ("driver", "avatar")


@dataclass
class Retargeter:
    """Retargets driver frames onto one avatar for one driver neutral; reusable over a stream of frames.

    avatar_neutral: the avatar's neutral landmarks (68, 2) in its own crop pixels.
    driver_neutral: the driver's neutral landmarks (68, 2) in the driver's pixels (see
        `choose_neutral_frame`).
    anchor: "driver" (result placed where the driver's face is) or "avatar" (the avatar's placement,
        with the driver's head motion relative to its neutral frame).
    """

    avatar_neutral: np.ndarray
    driver_neutral: np.ndarray
    anchor: str = "driver"

    def __post_init__(self) -> None:
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS}, got {self.anchor!r}")
        self.avatar_neutral = check_landmarks(self.avatar_neutral, "avatar neutral landmarks")
        self.driver_neutral = check_landmarks(self.driver_neutral, "driver neutral landmarks")
        if self.avatar_neutral.ndim != 2 or self.driver_neutral.ndim != 2:
            raise ValueError("the neutral landmarks must be one face each, (68, 2)")
        self._canonical = canonical_frame(self.driver_neutral)  # C
        self._driver_z = self._canonical(_complex(self.driver_neutral))  # C(D_n)
        avatar_to_driver = fit_similarity(self.avatar_neutral, self.driver_neutral)
        self._avatar_to_canonical = avatar_to_driver.then(self._canonical)  # C ∘ S_A
        self._avatar_z = self._avatar_to_canonical(_complex(self.avatar_neutral))  # C(S_A(A))
        self.ratios = part_scale_ratios(self.avatar_neutral, self.driver_neutral)
        self._ratios_z = self.ratios[:, 0] + 1j * self.ratios[:, 1]

    def __call__(self, driver_landmarks: np.ndarray) -> np.ndarray:
        """Driver landmarks (68, 2) or (F, 68, 2) -> retargeted avatar landmarks, same shape, float32."""
        points = check_landmarks(driver_landmarks, "driver landmarks")
        single = points.ndim == 2
        if single:
            points = points[None]
        to_neutral = fit_similarity(points, self.driver_neutral[None])  # S_t⁻¹, per frame
        expression = to_neutral.then(self._canonical)(_complex(points)) - self._driver_z  # δ_t
        scaled = expression.real * self._ratios_z.real + 1j * expression.imag * self._ratios_z.imag
        face = self._avatar_z[None] + scaled  # canonical coordinates
        back = self._canonical.inverse().then(to_neutral.inverse())  # S_t ∘ C⁻¹: into frame t of the driver
        if self.anchor == "avatar":
            # The driver's motion relative to its neutral, moved into the avatar's own frame:
            # S_A⁻¹ ∘ S_t ∘ S_A, i.e. (C∘S_A)⁻¹ ∘ C ∘ S_t ∘ C⁻¹ on canonical points.
            back = back.then(self._canonical).then(self._avatar_to_canonical.inverse())
        out = _real(back(face)).astype(np.float32)
        return out[0] if single else out


def retarget(
    driver_landmarks: np.ndarray,
    avatar_neutral: np.ndarray,
    neutral: int | np.ndarray | None = None,
    anchor: str = "driver",
) -> np.ndarray:
    """Retarget a driver sequence (F, 68, 2) onto the avatar's neutral shape (68, 2).

    neutral: the driver's neutral frame as an index into the sequence, as landmarks (68, 2), or None to
    choose it with `choose_neutral_frame`. Returns (F, 68, 2) float32.
    """
    points = check_landmarks(driver_landmarks, "driver landmarks")
    if points.ndim == 2:
        points = points[None]
    if neutral is None:
        neutral = choose_neutral_frame(points).index
    if isinstance(neutral, int | np.integer):
        if not -len(points) <= int(neutral) < len(points):
            raise ValueError(f"neutral frame {neutral} out of range: the driver has {len(points)} frames")
        neutral_points = points[int(neutral)]
    else:
        neutral_points = check_landmarks(neutral, "driver neutral landmarks")
    return Retargeter(avatar_neutral, neutral_points, anchor)(points)
