"""The synthetic talking-head corpus: determinism, exact landmarks on the rendered face, identity in the
landmark geometry, occlusion, and the corpus on disk (split by identity, workers, resume, CLI)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from metahead.cli import main as cli_main
from metahead.config import SynthConfig
from metahead.data.format import DataError, Dataset
from metahead.data.synthetic import (
    BACKGROUND_LABEL,
    FACE_MATERIALS,
    Expression,
    Material,
    Motion,
    VideoRenderer,
    generate_corpus,
    make_video,
    render_video,
    split_identities,
)
from metahead.data.synthetic.identity import HairStyle
from metahead.data.synthetic.raster import rasterize

FACE = {int(m) for m in FACE_MATERIALS}


def _posed(frames: int = 1, yaw: float = 0.0, **expression: float) -> Motion:
    """A motion with a fixed pose (degrees) and fixed expression controls."""
    expr = Expression.neutral(frames)
    for name, value in expression.items():
        getattr(expr, name)[:] = value
    zero = np.zeros(frames)
    return Motion(np.full(frames, np.radians(yaw)), zero.copy(), zero.copy(), np.zeros((frames, 2)), expr)


def _polygon_mask(points: np.ndarray, size: int) -> np.ndarray:
    image = Image.new("L", (size, size), 0)
    ImageDraw.Draw(image).polygon([tuple(p) for p in points.tolist()], fill=1)
    return np.asarray(image, dtype=bool)


def _luminance(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


# -------------------------------------------------------------------------------------------------
# Rendering


def test_same_seed_same_video_other_seed_differs():
    frames_a, lm_a = render_video(seed=3, identity_index=1, video_index=0, num_frames=3, size=64)
    frames_b, lm_b = render_video(seed=3, identity_index=1, video_index=0, num_frames=3, size=64)
    np.testing.assert_array_equal(frames_a, frames_b)
    np.testing.assert_array_equal(lm_a, lm_b)
    frames_c, lm_c = render_video(seed=4, identity_index=1, video_index=0, num_frames=3, size=64)
    assert np.abs(frames_a.astype(int) - frames_c).mean() > 5
    assert np.abs(lm_a - lm_c).mean() > 1.0


@pytest.mark.parametrize("size", [64, 128])
def test_shapes_dtypes_and_motion(size):
    frames, landmarks = render_video(seed=0, identity_index=2, video_index=1, num_frames=4, size=size)
    assert frames.shape == (4, size, size, 3) and frames.dtype == np.uint8
    assert landmarks.shape == (4, 68, 2) and landmarks.dtype == np.float32
    assert np.isfinite(landmarks).all()
    assert (landmarks > 0).all() and (landmarks < size - 1).all()  # the face is inside the frame
    # The frames of a video differ (the head moves and talks), and the image is not flat.
    assert np.abs(np.diff(landmarks, axis=0)).max() > 0.2
    assert frames.std() > 20


def test_rendered_landmarks_match_landmarks_without_rendering():
    renderer, motion = make_video(0, 5, 2, 3, 64)
    rendered = np.stack([f.landmarks for f in renderer.render(motion)])
    np.testing.assert_array_equal(rendered, renderer.landmarks(motion))


def test_eye_landmarks_fall_on_eye_pixels_when_open():
    hits = []
    for identity in range(4):
        renderer, motion = make_video(1, identity, 0, 8, 128)
        for t, frame in enumerate(renderer.render(motion, with_labels=True)):
            if motion.expression.blink[t] > 0.3:
                continue
            for eye in (slice(36, 42), slice(42, 48)):
                x, y = np.round(frame.landmarks[eye].mean(0)).astype(int)
                hits.append(frame.labels[y, x] == Material.EYE)
    assert len(hits) >= 40 and np.mean(hits) > 0.95


def test_features_are_drawn_through_their_landmarks():
    """Frontal neutral faces: brows, nose and lips carry their landmarks' material."""
    for identity in range(4):
        renderer, _ = make_video(2, identity, 0, 1, 128)
        frame = next(renderer.render(_posed(), with_labels=True))
        labels_at = frame.labels[
            np.round(frame.landmarks[:, 1]).astype(int), np.round(frame.landmarks[:, 0]).astype(int)
        ]
        assert (
            np.mean(labels_at[18:21] == Material.BROW) == 1
            and np.mean(labels_at[23:26] == Material.BROW) == 1
        )
        # Points at the end or edge of a feature: within a pixel of it.
        near = [
            (range(17, 27), [Material.BROW]),
            (range(27, 36), [Material.NOSE, Material.NOSTRILS]),
            (range(48, 60), [Material.LIP]),
        ]
        for indices, materials in near:
            for x, y in np.round(frame.landmarks[list(indices)]).astype(int):
                assert np.isin(frame.labels[y - 1 : y + 2, x - 1 : x + 2], materials).any()
        assert np.isin(labels_at[60:68], [Material.LIP, Material.MOUTH]).all()


def test_jaw_outline_separates_face_from_surroundings():
    for identity in range(5):
        renderer, _ = make_video(0, identity, 1, 1, 128)
        frame = next(renderer.render(_posed(), with_labels=True))
        lm = frame.landmarks
        centre = lm[[27, 30, 33, 51, 57]].mean(0)
        for i in range(2, 15):
            out = (lm[i] - centre) / np.linalg.norm(lm[i] - centre)
            xi, yi = np.round(lm[i] - 2 * out).astype(int)
            xo, yo = np.round(lm[i] + 2 * out).astype(int)
            assert frame.labels[yi, xi] in FACE, (identity, i, "inside the jaw is not face")
            assert frame.labels[yo, xo] not in FACE, (identity, i, "outside the jaw is still face")


def test_open_mouth_is_dark_inside_the_inner_lips():
    for identity in range(4):
        renderer, _ = make_video(0, identity, 0, 1, 128)
        opened = next(renderer.render(_posed(jaw=1.0), with_labels=True))
        closed = next(renderer.render(_posed(jaw=0.0)))
        mask = _polygon_mask(opened.landmarks[60:68], 128)
        assert mask.sum() > 20
        assert np.mean(opened.labels[mask] == Material.MOUTH) > 0.6
        inside_open = np.median(_luminance(opened.image)[mask])
        inside_closed = np.median(_luminance(closed.image)[mask])
        assert inside_open < inside_closed - 5
        # Closing the jaw closes the inner lips.
        gap_open = np.linalg.norm(opened.landmarks[62] - opened.landmarks[66])
        gap_closed = np.linalg.norm(closed.landmarks[62] - closed.landmarks[66])
        assert gap_open > 4 and gap_closed < 1


def test_far_ear_hidden_when_the_head_turns():
    renderer, _ = make_video(0, 0, 0, 1, 128)
    bald = dataclasses.replace(renderer.identity, hair=HairStyle(bald=True))
    renderer = VideoRenderer(bald, renderer.style, 128)
    counts = {}
    for yaw in (0.0, 35.0):
        frame = next(renderer.render(_posed(yaw=yaw), with_labels=True))
        columns = np.nonzero(frame.labels == Material.EAR)[1]
        nose = frame.landmarks[30, 0]
        counts[yaw] = ((columns < nose).sum(), (columns > nose).sum())
    assert min(counts[0.0]) > 3  # both ears show from the front
    near, far = counts[35.0]
    assert near > 10 and far == 0  # turned right: the image-right ear is behind the head


def test_blink_closes_the_eye():
    renderer, _ = make_video(0, 3, 0, 1, 128)
    open_eye = next(renderer.render(_posed(blink=0.0), with_labels=True))
    shut_eye = next(renderer.render(_posed(blink=1.0), with_labels=True))
    assert (open_eye.labels == Material.EYE).sum() > 30
    assert (shut_eye.labels == Material.EYE).sum() < 0.1 * (open_eye.labels == Material.EYE).sum()
    lid_open = np.linalg.norm(open_eye.landmarks[37] - open_eye.landmarks[41])
    lid_shut = np.linalg.norm(shut_eye.landmarks[37] - shut_eye.landmarks[41])
    assert lid_shut < 0.3 * lid_open


def test_identities_differ_in_landmark_geometry():
    """Normalised shapes (frontal pose, the corpus's expressions): between identities > within one."""

    def normalise(points):
        points = points - points.mean(-2, keepdims=True)
        return points / np.sqrt((points**2).sum((-2, -1), keepdims=True))

    shapes = []
    for identity in range(6):
        renderer, motion = make_video(0, identity, 0, 12, 128)
        zero = np.zeros(len(motion))
        frontal = Motion(zero, zero.copy(), zero.copy(), np.zeros((len(motion), 2)), motion.expression)
        shapes.append(normalise(renderer.landmarks(frontal)))
    shapes = np.stack(shapes)  # (identities, frames, 68, 2)
    count, frames = shapes.shape[:2]
    within = [
        np.linalg.norm(s[a] - s[b]) for s in shapes for a in range(frames) for b in range(a + 1, frames)
    ]
    between = [
        np.linalg.norm(shapes[i, t] - shapes[j, t])
        for i in range(count)
        for j in range(i + 1, count)
        for t in range(frames)
    ]
    assert np.mean(between) > 1.8 * np.mean(within)
    # Each frame's nearest other frame belongs to the same person.
    flat = shapes.reshape(count * frames, -1)
    dist = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    owner = np.repeat(np.arange(count), frames)
    assert np.mean(owner[dist.argmin(1)] == owner) > 0.95


def test_background_shows_around_the_head():
    renderer, motion = make_video(0, 0, 0, 1, 64)
    frame = next(renderer.render(motion, with_labels=True))
    assert frame.labels[0, 0] == BACKGROUND_LABEL and frame.labels[0, -1] == BACKGROUND_LABEL
    assert frame.labels[-1, 32] == Material.CLOTH  # shoulders at the bottom


def test_rasterizer_covers_a_square_once_and_keeps_the_nearest():
    xy = np.array([[2.0, 2.0], [12.0, 2.0], [12.0, 12.0], [2.0, 12.0]])
    quad = np.array([[0, 2, 1], [0, 3, 2]])  # counter-clockwise as seen (y down): front faces
    far = rasterize(xy, np.full(4, 5.0), quad, 16, 16)
    assert far.pixel.size == 11 * 11  # centres 2..12 inclusive, shared diagonal counted once
    assert set(far.triangle.tolist()) == {0, 1}
    np.testing.assert_allclose(far.bary.sum(1), 1.0, atol=1e-5)
    # A nearer triangle over part of it wins there; culling drops back faces.
    xy2 = np.concatenate([xy, [[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]]])
    tris = np.concatenate([quad, [[4, 6, 5]]])
    both = rasterize(xy2, np.array([5, 5, 5, 5, 1, 1, 1.0]), tris, 16, 16)
    top_left = both.triangle[both.pixel == 3 * 16 + 3]
    assert top_left.tolist() == [2]
    culled = rasterize(xy2, np.array([5, 5, 5, 5, 1, 1, 1.0]), tris[:, ::-1], 16, 16, np.ones(3, bool))
    assert culled.pixel.size == 0


# -------------------------------------------------------------------------------------------------
# The corpus on disk


def test_split_is_by_identity():
    cfg = SynthConfig(identities=10, test_fraction=0.2, seed=1)
    splits = split_identities(cfg)
    assert splits.count("test") == 2 and splits.count("train") == 8
    assert split_identities(SynthConfig(identities=3, test_fraction=0.1)).count("test") == 1


def test_corpus_round_trips_through_the_dataset_format(tmp_path):
    cfg = SynthConfig(identities=5, videos_per_identity=2, frames=3, size=64, seed=7, test_fraction=0.2)
    records = generate_corpus(tmp_path / "synth", cfg, progress=False)
    data = Dataset(tmp_path / "synth")
    assert data.info.image_size == 64 and data.info.source == "synthetic" and data.info.frame_codec == "jpeg"
    assert [r.video for r in data.records] == [r.video for r in records]
    assert len(data.records) == 10 and data.records[3].video == "synth00001_v01"
    by_identity = {}
    for rec in data.records:
        by_identity.setdefault(rec.identity, set()).add(rec.split)
    assert all(len(s) == 1 for s in by_identity.values())  # never split within an identity
    assert sorted(next(iter(s)) for s in by_identity.values()).count("test") == 1
    rec = data.records[3]
    reader = data.reader(rec)
    frames, landmarks = render_video(7, 1, 1, 3, 64)
    stored = reader.read_frames([0, 1, 2])
    assert stored.shape == (3, 64, 64, 3)
    assert np.abs(stored.astype(int) - frames).mean() < 3  # JPEG at quality 95
    np.testing.assert_array_equal(reader.read_landmarks([0, 1, 2]), landmarks)


def test_workers_do_not_change_the_corpus_and_rerun_resumes(tmp_path):
    cfg = SynthConfig(identities=2, videos_per_identity=2, frames=2, size=64, seed=3)
    one, two = tmp_path / "one", tmp_path / "two"
    generate_corpus(one, cfg, workers=1, progress=False)
    generate_corpus(two, cfg, workers=2, progress=False)
    for rec in Dataset(one).records:
        for name in ("frames.bin", "landmarks.npy", "frames.idx.npy"):
            a = (one / "videos" / rec.path / name).read_bytes()
            assert a == (two / "videos" / rec.path / name).read_bytes(), (rec.path, name)
    # Resume: finished videos are kept as they are, a missing one is made again.
    videos = one / "videos"
    kept = videos / "synth00000/synth00000_v00/frames.bin"
    kept_mtime = kept.stat().st_mtime_ns
    lost = videos / "synth00001/synth00001_v01"
    original = (lost / "frames.bin").read_bytes()
    for path in lost.iterdir():
        path.unlink()
    lost.rmdir()
    generate_corpus(one, cfg, progress=False)
    assert kept.stat().st_mtime_ns == kept_mtime
    assert (lost / "frames.bin").read_bytes() == original
    assert len(Dataset(one).records) == 4
    # Other settings into the same folder: refused, not mixed.
    with pytest.raises(DataError, match="other settings"):
        generate_corpus(one, dataclasses.replace(cfg, seed=4), progress=False)
    assert json.loads((one / "synthetic.json").read_text())["seed"] == 3


def test_bad_settings_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="image size"):
        generate_corpus(tmp_path / "x", SynthConfig(size=8), progress=False)
    with pytest.raises(ValueError, match="at least one"):
        generate_corpus(tmp_path / "x", SynthConfig(identities=0), progress=False)


def test_cli_synth(tmp_path):
    out = tmp_path / "cli"
    args = [
        "synth",
        str(out),
        "--identities",
        "3",
        "--videos-per-identity",
        "1",
        "--frames",
        "2",
        "--size",
        "64",
    ]
    assert cli_main(args + ["--seed", "5"]) == 0
    data = Dataset(out)
    assert [r.identity for r in data.records] == ["synth00000", "synth00001", "synth00002"]
    assert {r.split for r in data.records} == {"train", "test"}
    assert data.reader(data.records[0]).read_frame(1).shape == (64, 64, 3)
    assert cli_main(args + ["--seed", "6"]) == 2  # refuses to mix two corpora in one folder
