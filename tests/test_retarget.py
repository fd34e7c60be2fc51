"""Retargeting (landmarks.retarget): the avatar keeps its face shape; the driver gives pose and expression."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metahead.landmarks import retarget as rt
from metahead.landmarks.mean_face import mean_face_landmarks

SIZE = 128


def _scale_part(points: np.ndarray, part: slice, sx: float, sy: float) -> None:
    centre = points[part].mean(0)
    points[part] = centre + (points[part] - centre) * [sx, sy]


def face_shape(jaw: float, eyes: float, mouth: float, nose: float, eye_gap: float) -> np.ndarray:
    """The mean face with one person's proportions: jaw width, eye size, mouth width, nose length and
    the distance between the eyes."""
    p = mean_face_landmarks(SIZE).astype(np.float64)
    _scale_part(p, slice(0, 17), jaw, 1.0)
    for eye in (slice(36, 42), slice(42, 48)):
        _scale_part(p, eye, eyes, eyes)
    _scale_part(p, slice(48, 68), mouth, 1.0)
    _scale_part(p, slice(27, 31), 1.0, nose)
    middle = p[27, 0]
    for eye, brow in ((slice(36, 42), slice(17, 22)), (slice(42, 48), slice(22, 27))):
        shift = (p[eye].mean(0)[0] - middle) * (eye_gap - 1.0)
        p[eye, 0] += shift
        p[brow, 0] += shift
    return p


def express(face: np.ndarray, mouth_open: float = 0.0, blink: float = 0.0) -> np.ndarray:
    """Open the mouth by `mouth_open` mouth widths (lower lip and chin move down) and close the eyes by
    `blink` (1 = fully closed lids)."""
    p = face.copy()
    drop = mouth_open * np.linalg.norm(p[54] - p[48])
    p[[65, 66, 67]] += [0, drop]
    p[55:60] += [0, drop]
    p[5:12] += [0, 0.7 * drop]
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        middle = (p[upper] + p[lower]) / 2
        p[upper] += (middle - p[upper]) * blink
        p[lower] += (middle - p[lower]) * blink
    return p


def move(face: np.ndarray, degrees: float = 0.0, scale: float = 1.0, shift=(0.0, 0.0)) -> np.ndarray:
    a = math.radians(degrees)
    rotation = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    centre = face.mean(0)
    return (face - centre) @ rotation.T * scale + centre + np.asarray(shift)


def eye_distance(p: np.ndarray) -> float:
    return float(np.linalg.norm(p[42:48].mean(0) - p[36:42].mean(0)))


def proportions(p: np.ndarray) -> np.ndarray:
    """Inter-part proportions that identify a face: jaw width, mouth width, eye width, nose length, all
    over the eye distance."""
    e = eye_distance(p)
    return np.array([
        np.linalg.norm(p[16] - p[0]) / e,
        np.linalg.norm(p[54] - p[48]) / e,
        np.linalg.norm(p[39] - p[36]) / e,
        np.linalg.norm(p[30] - p[27]) / e,
    ])  # fmt: skip


def relative_opening(p: np.ndarray) -> float:
    """Inner-lip gap over mouth width."""
    gap = np.mean([np.linalg.norm(p[a] - p[b]) for a, b in rt.INNER_LIP_PAIRS])
    return float(gap / np.linalg.norm(p[54] - p[48]))


def rotation_degrees(a: np.ndarray, b: np.ndarray) -> float:
    """The in-plane rotation of face b relative to face a, fitted on rigid points."""
    return math.degrees(float(np.angle(rt.fit_similarity(a, b).scale_rotation)))


AVATAR = face_shape(jaw=1.15, eyes=1.25, mouth=0.8, nose=1.15, eye_gap=0.92)
DRIVER = face_shape(jaw=0.85, eyes=0.85, mouth=1.3, nose=0.85, eye_gap=1.1)


def driver_sequence() -> tuple[np.ndarray, list[dict]]:
    """Frame 0 neutral; others move the head and open the mouth / blink."""
    specs = [
        dict(mouth_open=0.0, blink=0.0, degrees=0.0, scale=1.0, shift=(0, 0)),
        dict(mouth_open=0.25, blink=0.0, degrees=12.0, scale=1.1, shift=(6, -3)),
        dict(mouth_open=0.0, blink=1.0, degrees=-8.0, scale=0.9, shift=(-4, 2)),
        dict(mouth_open=0.4, blink=0.5, degrees=5.0, scale=1.0, shift=(0, 5)),
        dict(mouth_open=0.0, blink=0.0, degrees=20.0, scale=1.2, shift=(10, 0)),
    ]
    frames = [
        move(express(DRIVER, s["mouth_open"], s["blink"]), s["degrees"], s["scale"], s["shift"])
        for s in specs
    ]
    return np.stack(frames), specs


def test_similarity_fit_recovers_a_known_transform() -> None:
    moved = move(AVATAR, degrees=17.0, scale=1.3, shift=(5.0, -7.0))
    fit = rt.fit_similarity(AVATAR, moved, None)
    assert np.allclose(fit.apply_points(AVATAR), moved, atol=1e-9)
    assert np.allclose(fit.inverse().apply_points(moved), AVATAR, atol=1e-9)
    assert rotation_degrees(AVATAR, moved) == pytest.approx(17.0, abs=1e-9)
    twice = fit.then(fit)
    assert np.allclose(twice.apply_points(AVATAR), fit.apply_points(moved), atol=1e-9)


def test_shape_distance_ignores_pose_and_sees_proportions() -> None:
    assert rt.shape_distance(move(AVATAR, 30, 0.7, (9, 9)), AVATAR) < 1e-9
    assert rt.shape_distance(DRIVER, AVATAR) > 0.05


@pytest.mark.parametrize("anchor", rt.ANCHORS)
def test_retargeted_neutral_is_the_avatars_face(anchor: str) -> None:
    sequence, _ = driver_sequence()
    out = rt.retarget(sequence, AVATAR, neutral=0, anchor=anchor)
    assert out.shape == sequence.shape and out.dtype == np.float32
    assert rt.shape_distance(out[0], AVATAR) < 1e-5
    assert rt.shape_distance(sequence[0], AVATAR) > 0.05  # the raw driver would not be
    if anchor == "avatar":
        assert np.abs(out[0] - AVATAR).max() < 1e-3  # and stays where the avatar's face is
    else:
        # Placed on the driver's neutral face: same rigid-point centre and eye distance.
        assert np.abs(out[0][rt.RIGID_POINTS].mean(0) - sequence[0][rt.RIGID_POINTS].mean(0)).max() < 0.5


def test_proportions_follow_the_avatar_and_motion_follows_the_driver() -> None:
    sequence, specs = driver_sequence()
    out = rt.retarget(sequence, AVATAR, neutral=0)
    avatar_props, driver_props = proportions(AVATAR), proportions(DRIVER)
    assert np.abs(avatar_props - driver_props).min() > 0.1  # the two faces really differ
    for i, spec in enumerate(specs):
        # Proportions: the avatar's (the mouth width is measured on frames where the mouth is closed;
        # an open mouth only moves the lower lip down, so the width stays).
        props = proportions(out[i])
        assert np.abs(props - avatar_props).max() < 0.04, (i, props, avatar_props)
        assert np.abs(props - driver_props).min() > 0.08
        # Mouth opening: the driver's change from its neutral, relative to the mouth's width.
        opened = relative_opening(out[i]) - relative_opening(out[0])
        assert opened == pytest.approx(
            relative_opening(sequence[i]) - relative_opening(sequence[0]), abs=0.01
        )
        assert opened == pytest.approx(spec["mouth_open"], abs=0.02)
        # Head pose: the driver's rotation and scale relative to its neutral frame.
        assert rotation_degrees(out[0], out[i]) == pytest.approx(spec["degrees"], abs=0.5)
        scale = abs(complex(rt.fit_similarity(out[0], out[i]).scale_rotation))
        assert scale == pytest.approx(spec["scale"], rel=0.02)
        # Blinks close the avatar's (larger) eyes as far as the driver's.
        openings = rt.eye_opening(out[i]) / rt.eye_opening(out[0])
        assert openings == pytest.approx(rt.eye_opening(sequence[i]) / rt.eye_opening(sequence[0]), abs=0.03)


def test_avatar_anchor_moves_the_avatar_from_its_own_place() -> None:
    sequence, specs = driver_sequence()
    out = rt.retarget(sequence, AVATAR, neutral=0, anchor="avatar")
    for i, spec in enumerate(specs):
        assert rotation_degrees(AVATAR, out[i]) == pytest.approx(spec["degrees"], abs=0.5)
    # The same motion as the driver-anchored result, moved as a whole by one fixed similarity: the one
    # taking the driver's neutral placement to the avatar's own.
    on_driver = rt.retarget(sequence, AVATAR, neutral=0, anchor="driver")
    placement = rt.fit_similarity(on_driver[0], out[0], None)
    assert np.abs(placement.apply_points(on_driver) - out).max() < 1e-3


def test_same_face_retargets_to_itself() -> None:
    sequence, _ = driver_sequence()
    out = rt.retarget(sequence, DRIVER, neutral=0)
    assert np.abs(out - sequence).max() < 1e-3


def test_choose_neutral_frame_prefers_a_typical_closed_mouth_with_open_eyes() -> None:
    rng = np.random.default_rng(0)
    frames = []
    for i in range(12):
        mouth = 0.3 if i % 3 else 0.0  # two frames in three talk
        blink = 1.0 if i == 6 else 0.0  # a closed-mouth blink
        frames.append(move(express(DRIVER, mouth, blink), rng.uniform(-10, 10), rng.uniform(0.9, 1.1)))
    # A closed-mouth frame with an unusual expression: brows raised high.
    odd = express(DRIVER).copy()
    odd[17:27, 1] -= 0.4 * eye_distance(DRIVER)
    frames.append(odd)
    choice = rt.choose_neutral_frame(np.stack(frames))
    assert choice.index in (0, 3, 9)  # closed mouth, open eyes, usual brows
    assert choice.scores.shape == (13,)
    assert choice.mouth_opening[choice.index] == pytest.approx(choice.mouth_opening.min())


def test_choose_neutral_frame_prefers_a_frontal_frame() -> None:
    """Most frames turned sideways (nose and mouth shifted towards one cheek), two frontal: a frontal one
    is chosen, so that the turn is transferred relative to it."""
    frames = []
    for i in range(8):
        face = express(DRIVER).copy()
        if i not in (2, 5):
            face[27:36, 0] += 0.15 * eye_distance(DRIVER)
            face[48:68, 0] += 0.1 * eye_distance(DRIVER)
        frames.append(move(face, degrees=3.0 * i))
    choice = rt.choose_neutral_frame(np.stack(frames))
    assert choice.index in (2, 5)
    assert choice.turn[choice.index] < 0.01 < choice.turn.max()


def test_part_ratios_stay_bounded_for_degenerate_parts() -> None:
    squashed = DRIVER.copy()
    _scale_part(squashed, slice(48, 68), 0.05, 1.0)  # a mouth 20x narrower than the avatar's
    ratios = rt.part_scale_ratios(AVATAR, squashed)
    assert ratios.shape == (68, 2)
    assert ratios.min() >= rt.RATIO_LIMITS[0] and ratios.max() <= rt.RATIO_LIMITS[1]


def test_bad_input_is_refused() -> None:
    sequence, _ = driver_sequence()
    with pytest.raises(ValueError, match="shape"):
        rt.retarget(sequence[:, :60], AVATAR)
    with pytest.raises(ValueError, match="out of range"):
        rt.retarget(sequence, AVATAR, neutral=9)
    bad = sequence.copy()
    bad[2, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        rt.retarget(bad, AVATAR, neutral=0)
    with pytest.raises(ValueError, match="anchor"):
        rt.Retargeter(AVATAR, DRIVER, anchor="nowhere")
    with pytest.raises(ValueError, match="degenerate"):
        rt.retarget(np.zeros((2, 68, 2)), AVATAR, neutral=0)
