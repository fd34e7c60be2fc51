"""`metahead prepare`: input layouts, splits, stable crops, tracking, bad input, resume, shards, workers.

Pipeline tests use synthetic clips of a red disk and a fake detector that turns the disk into a
template face (injected through the LandmarkDetector interface), so crops and landmark coordinates can
be checked exactly. dlib itself is tested on skimage's astronaut; real clips only in `realdata` tests.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from metahead.cli import main
from metahead.data.face_crop import (
    CropConfig,
    crop_boxes,
    crop_frame,
    face_geometry,
    jitter_stats,
    landmark_jumps,
    to_crop_coordinates,
)
from metahead.data.format import DataError, Dataset, read_manifest
from metahead.data.prepare import (
    PrepareConfig,
    merge_shards,
    prepare_dataset,
    process_item,
    progress_path,
    read_progress,
)
from metahead.data.sources import (
    SourceItem,
    apply_identities,
    assign_splits,
    discover,
    parse_shard,
    read_identity_map,
    read_split_file,
    shard_items,
)
from metahead.data.video_io import write_video_file
from metahead.landmarks.detect import BoxThenFitDetector, Face, make_detector
from metahead.landmarks.mean_face import MEAN_FACE_UNIT
from metahead.landmarks.track import LandmarkTracker, TrackerConfig

REPO = Path(__file__).resolve().parents[1]
REAL_DEV = REPO.parent / "shared" / "data" / "real-dev"

FACE_RGB = (220, 60, 40)
GLITCH_RGB = (40, 40, 230)
FRAME = 160
RADIUS = 24.0


# ---------------------------------------------------------------------------------------------------
# A fake detector: the face is a red disk; its landmarks are the mean-face template spanning the disk.


def template_face(centre: np.ndarray, radius: float) -> np.ndarray:
    return ((MEAN_FACE_UNIT - 0.5) * 2 * radius + centre).astype(np.float32)


def disk_centre_from_landmarks(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """Invert template_face: the disk centre and radius the landmarks were made from."""
    radius = float(landmarks[16, 0] - landmarks[0, 0]) / (
        2 * float(MEAN_FACE_UNIT[16, 0] - MEAN_FACE_UNIT[0, 0])
    )
    centre = landmarks.mean(0) - (MEAN_FACE_UNIT.mean(0) - 0.5) * 2 * radius
    return centre, radius


class DiskDetector(BoxThenFitDetector):
    """Finds red disks; fits the template to the disk inside a box. A blue mark in the top-left corner
    makes `fit` return a distorted face (a tracking glitch)."""

    name = "disk"

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    @staticmethod
    def _mask(image: np.ndarray) -> np.ndarray:
        return (image[..., 0] > 140) & (image[..., 1] < 120) & (image[..., 2] < 120)

    def detect_boxes(self, image):
        self.calls["detect"] += 1
        labels, count = ndimage.label(self._mask(image))
        out = []
        for index in range(1, count + 1):
            ys, xs = np.nonzero(labels == index)
            if len(xs) < 20:
                continue
            radius = np.sqrt(len(xs) / np.pi)
            cx, cy = xs.mean(), ys.mean()
            out.append((np.array([cx - radius, cy - radius, cx + radius, cy + radius]), float(len(xs))))
        return sorted(out, key=lambda bs: -bs[1])

    def fit(self, image, box):
        self.calls["fit"] += 1
        pad = 0.5 * (box[2] - box[0])
        x0, y0 = max(0, int(box[0] - pad)), max(0, int(box[1] - pad))
        x1, y1 = int(box[2] + pad) + 1, int(box[3] + pad) + 1
        ys, xs = np.nonzero(self._mask(image[y0:y1, x0:x1]))
        if len(xs) < 20:
            return np.full((68, 2), np.nan, np.float32)
        radius = np.sqrt(len(xs) / np.pi)
        landmarks = template_face(np.array([xs.mean() + x0, ys.mean() + y0]), radius)
        corner = image[:6, :6].reshape(-1, 3).mean(0)
        if corner[2] > 150 and corner[0] < 100:
            landmarks[48:68] += np.array([0.0, 0.8 * radius], np.float32)  # the mouth drops off the face
            landmarks[36:48] += np.array([0.0, -0.5 * radius], np.float32)
        return landmarks


def disk_frames(
    count: int,
    radius: float = RADIUS,
    extra: tuple[float, float, float] | None = None,
    glitches: tuple[int, ...] = (),
    blank: bool = False,
) -> list[np.ndarray]:
    """A disk drifting smoothly; `extra` = (x, y, r) adds a second, still disk."""
    ys, xs = np.mgrid[0:FRAME, 0:FRAME]
    frames = []
    for i in range(count):
        image = np.full((FRAME, FRAME, 3), 50, np.uint8)
        image[..., 1] = 70 + (xs // 8 % 2) * 10  # a little texture
        if not blank:
            cx, cy = FRAME / 2 + 10 * np.sin(i / 6), FRAME / 2 + 5 * np.cos(i / 6)
            image[(xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2] = FACE_RGB
        if extra is not None:
            ex, ey, er = extra
            image[(xs - ex) ** 2 + (ys - ey) ** 2 <= er**2] = FACE_RGB
        if i in glitches:
            image[:8, :8] = GLITCH_RGB
        frames.append(image)
    return frames


def red_centroid(image: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(DiskDetector._mask(image))
    return np.array([xs.mean(), ys.mean()])


def small_cfg(**overrides) -> PrepareConfig:
    options = dict(size=64, min_frames=4, min_face_size=16.0)
    options.update(overrides)
    return PrepareConfig(**options)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A VoxCeleb2-like tree of synthetic clips, good and bad, and a photo folder."""
    root = tmp_path_factory.mktemp("corpus")

    def clip(rel: str, frames) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_video_file(root / rel, frames, fps=25)

    clip("idA/yt1/00001.mp4", disk_frames(24))
    clip("idA/yt1/00002.mp4", disk_frames(16))
    clip("idB/yt2/00001.mp4", disk_frames(16, extra=(25, 25, 12)))  # a second, smaller face
    clip("idB/yt3/00001.mp4", disk_frames(10, blank=True))  # no face
    clip("idC/yt4/00001.mp4", disk_frames(10, radius=5))  # too small
    clip("idC/yt4/00002.mp4", disk_frames(2))  # too few frames
    clip("idE/yt7/00001.mp4", disk_frames(24, glitches=(8, 15)))  # two landmark jumps
    (root / "idC/yt5").mkdir(parents=True)
    (root / "idC/yt5/00001.mp4").write_bytes(b"\x00garbage" * 200)  # unreadable
    rng = np.random.default_rng(0)
    whole = root / "whole.tmp.mp4"
    write_video_file(whole, [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(30)], fps=25)
    (root / "idC/yt6").mkdir(parents=True)
    (root / "idC/yt6/00001.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # truncated
    whole.unlink()
    photos = root / "idD" / "album"
    photos.mkdir(parents=True)
    for k, image in enumerate(disk_frames(3)):
        Image.fromarray(image).save(photos / f"photo{k}.png")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    return root


# ---------------------------------------------------------------------------------------------------
# Sources, splits, shards


def test_discover_layouts(tmp_path):
    for rel in [
        "vox/id00012/21Uxsk56VDQ/00001.mp4",
        "vox/id00012/21Uxsk56VDQ/00002.mp4",
        "vox/id00099/abc/00001.avi",
        "people/alice/talk.mkv",
        "loose/clip one.webm",
        "frames/id10001/1zcIwhmdeo4/0001.jpg",
        "frames/id10001/1zcIwhmdeo4/0002.jpg",
        "album/me.png",
        "loose/readme.txt",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    items = discover(
        [tmp_path / "vox", tmp_path / "people", tmp_path / "loose", tmp_path / "frames", tmp_path / "album"]
    )
    got = {(it.kind, it.identity, it.video, it.path) for it in items}
    assert got == {
        ("video", "id00012", "21Uxsk56VDQ/00001", "id00012/21Uxsk56VDQ/00001"),
        ("video", "id00012", "21Uxsk56VDQ/00002", "id00012/21Uxsk56VDQ/00002"),
        ("video", "id00099", "abc/00001", "id00099/abc/00001"),
        ("video", "alice", "talk", "alice/talk"),
        ("video", "clip one", "clip one", "clip_one"),
        ("photos", "id10001", "1zcIwhmdeo4", "id10001/1zcIwhmdeo4"),
        ("photos", "album", "album", "album"),
    }
    # A VoxCeleb identity folder given directly keeps its name as the identity.
    (single,) = discover([tmp_path / "vox" / "id00099"])
    assert (single.identity, single.video, single.path) == ("id00099", "abc/00001", "id00099/abc/00001")
    # Renaming everyone to one identity keeps (identity, video) unique, as the manifest requires.
    renamed = apply_identities(items, identity="someone")
    assert len({(it.identity, it.video) for it in renamed}) == len(renamed)
    assert {it.identity for it in renamed} == {"someone"}
    with pytest.raises(FileNotFoundError, match="nowhere"):
        discover([tmp_path / "nowhere"])
    (tmp_path / "dup" / "alice").mkdir(parents=True)
    (tmp_path / "dup" / "alice" / "talk.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="both be stored"):
        discover([tmp_path / "people", tmp_path / "dup"])


def test_identity_map_and_detector_registry(tmp_path):
    for rel in ["video/mead_a.mp4", "video/mead_b.mp4", "video/other.mp4"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "MANIFEST.tsv").write_text(
        "file\tperson_id_guess\nvideo/mead_a.mp4\tMEAD_W009\nvideo/mead_b.mp4\tMEAD_W009\n"
    )
    mapping = read_identity_map(tmp_path / "MANIFEST.tsv", "file", "person_id_guess")
    items = apply_identities(discover([tmp_path / "video"]), identity_map=mapping)
    assert {it.video: it.identity for it in items} == {
        "mead_a": "MEAD_W009",
        "mead_b": "MEAD_W009",
        "other": "other",
    }
    with pytest.raises(ValueError, match="columns"):
        read_identity_map(tmp_path / "MANIFEST.tsv", "path", "identity")
    with pytest.raises(ValueError, match="unknown landmark detector"):
        make_detector("nope")
    try:
        import face_alignment  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="face-alignment"):
            make_detector("fan")  # the optional FAN hook says what it needs, and never downloads


def test_splits_by_identity_and_shards(tmp_path):
    items = [
        SourceItem("video", f"/x/{i}/{v}.mp4", f"id{i:05d}", f"v{v}", f"id{i:05d}/v{v}")
        for i in range(10)
        for v in range(3)
    ]
    split = assign_splits(items, test_fraction=0.2, seed=3)
    by_identity: dict[str, set[str]] = {}
    for it in split:
        by_identity.setdefault(it.identity, set()).add(it.split)
    assert all(len(s) == 1 for s in by_identity.values()), "an identity never straddles splits"
    assert sum(s == {"test"} for s in by_identity.values()) == 2
    assert assign_splits(items, test_fraction=0.2, seed=3) == split  # deterministic
    assert {it.split for it in assign_splits(items[:6], test_fraction=0.05)} == {"train", "test"}  # >= 1
    assert {it.split for it in assign_splits(items, test_fraction=1.0)} == {"test"}  # evaluation-only set
    with pytest.raises(ValueError, match="test fraction"):
        assign_splits(items, test_fraction=1.5)
    # VoxCeleb meta files: vox1 (tab separated, Set column) and vox2 (comma, " dev"/" test").
    (tmp_path / "vox1_meta.csv").write_text(
        "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\nid00001\tA.J._Buckley\tm\tIreland\tdev\n"
        "id00002\tA.R._Rahman\tm\tIndia\ttest\n"
    )
    (tmp_path / "vox2_meta.csv").write_text(
        "VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \nid00003 ,n000002 ,m ,test \n"
    )
    assert read_split_file(tmp_path / "vox1_meta.csv") == {"id00001": "train", "id00002": "test"}
    assert read_split_file(tmp_path / "vox2_meta.csv") == {"id00003": "test"}
    official = assign_splits(items, {"id00001": "test"})
    assert {it.identity for it in official if it.split == "test"} == {"id00001"}
    # Shards partition the items.
    shards = [shard_items(items, i, 3) for i in range(3)]
    assert sorted(it.path for s in shards for it in s) == sorted(it.path for it in items)
    assert all(s for s in shards)
    assert parse_shard("2/8") == (2, 8)
    for bad in ("8/8", "x", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


# ---------------------------------------------------------------------------------------------------
# Crop geometry and landmark checks


def test_crop_coordinates_are_exact():
    image = np.zeros((100, 120, 3), np.uint8)
    image[40:43, 70:73] = 255  # a 3x3 dot centred on pixel (71, 41)
    box = np.array([60.0, 50.0, 50.0])  # centre (60, 50), side 50 -> scale 2 at size 100
    crop = crop_frame(image, box, 100)
    dot = np.array([[71.0, 41.0]])
    mapped = to_crop_coordinates(np.repeat(dot, 68, 0), box, 100)[0]
    ys, xs = np.nonzero(crop[..., 0] > 100)
    assert np.allclose([xs.mean(), ys.mean()], mapped, atol=0.3)
    # Past the edge: "pad" fills black, and coordinates still map.
    outside = crop_frame(image, np.array([10.0, 10.0, 40.0]), 40)
    assert outside[:5, :5].max() == 0


def test_crop_boxes_modes():
    times = np.arange(50) / 25.0
    still = np.stack(
        [
            template_face(np.array([100.0, 90.0]) + np.random.default_rng(i).normal(0, 0.5, 2), 30)
            for i in range(50)
        ]
    )
    boxes, mode = crop_boxes(still, times, (240, 320), CropConfig(size=64))
    assert mode == "clip" and np.ptp(boxes, axis=0).max() == 0  # one box: no jitter at all
    assert boxes[0, 2] == pytest.approx(2.2 * np.median([face_geometry(x)[1] for x in still]))
    # A head that travels far gets a smoothed trajectory that follows it, with small steps.
    moving = np.stack([template_face(np.array([70.0 + 4 * i, 90.0]), 30) for i in range(50)])
    boxes, mode = crop_boxes(moving, times, (240, 400), CropConfig(size=64))
    assert mode == "smooth"
    assert np.allclose(boxes[:, 0], 70.0 + 4 * np.arange(50), atol=0.5)  # steady motion followed exactly
    # Shifted inside the frame (and shrunk to fit) unless padding is asked for.
    near_edge = template_face(np.array([20.0, 20.0]), 40)[None]
    (box,), _ = crop_boxes(near_edge, times[:1], (100, 150), CropConfig(size=64, mode="frame"))
    assert box[2] == 100 and box[0] - box[2] / 2 >= -0.5 and box[1] - box[2] / 2 >= -0.5
    (box,), _ = crop_boxes(
        near_edge, times[:1], (100, 150), CropConfig(size=64, mode="frame", overflow="pad")
    )
    assert box[0] == pytest.approx(face_geometry(near_edge[0])[0][0]) and box[2] > 100


def test_landmark_jumps_and_jitter():
    times = np.arange(12) / 25.0
    faces = np.stack([template_face(np.array([50.0 + i, 50.0]), 20) for i in range(12)])
    bad = faces.copy()
    bad[5, 48:68] += [0, 25]  # one glitching frame
    assert np.flatnonzero(landmark_jumps(bad, times, 0.25)).tolist() == [5]
    first_bad = faces.copy()
    first_bad[0, 36:48] -= [0, 15]  # the very first frame is the odd one
    assert np.flatnonzero(landmark_jumps(first_bad, times, 0.25)).tolist() == [0]
    sparse = np.arange(12) * 1.0  # 1 fps: frames are not compared
    assert not landmark_jumps(bad, sparse, 0.25).any()
    still = jitter_stats(np.repeat(faces[:1], 5, 0))
    assert still["jitter_median"] == 0 and still["step_median"] == 0
    linear = jitter_stats(faces)  # uniform motion: steps but no jitter
    assert linear["jitter_median"] == pytest.approx(0, abs=1e-6) and linear["step_median"] > 0.05


# ---------------------------------------------------------------------------------------------------
# The pipeline


def test_prepare_pipeline_with_fake_detector(corpus, tmp_path):
    out = tmp_path / "data"
    detector = DiskDetector()
    items = assign_splits(discover([corpus]), test_fraction=0.3, seed=1)
    summary = prepare_dataset(items, out, small_cfg(), detector_factory=lambda: detector, progress=False)

    records = {r.path: r for r in read_manifest(out)}
    assert sorted(records) == [
        "idA/yt1/00001",
        "idA/yt1/00002",
        "idB/yt2/00001",
        "idD/album",
        "idE/yt7/00001",
    ]
    with open(out / "rejects.csv") as f:
        rejects = {row["path"]: row["reason"] for row in csv.DictReader(f)}
    assert rejects == {
        "idB/yt3/00001": "no_face",
        "idC/yt4/00001": "face_too_small",
        "idC/yt4/00002": "too_few_frames",
        "idC/yt5/00001": "unreadable",
        "idC/yt6/00001": "truncated",
    }
    assert summary["rejects_by_reason"] == {
        "face_too_small": 1,
        "no_face": 1,
        "too_few_frames": 1,
        "truncated": 1,
        "unreadable": 1,
    }
    assert summary["frame_drops_by_reason"]["landmark_jump"] == 2
    assert summary["frame_drops_by_reason"]["unreadable"] == 1  # the broken photo
    assert json.loads((out / "prepare-summary.json").read_text())["dataset"]["videos_ok"] == 5
    # Tracking: one full detection, a few checks near the face, the fitter alone on the other frames.
    tracked = read_progress(out)["idA/yt1/00001"].tracker
    assert tracked["full_detections"] == 1 and tracked["window_checks"] == 2 and tracked["tracked"] == 21
    assert detector.calls["fit"] > detector.calls["detect"]

    dataset = Dataset(out)
    assert dataset.info.image_size == 64
    splits = {r.identity: r.split for r in dataset.records}
    assert set(splits.values()) <= {"train", "test"}
    assert records["idA/yt1/00001"].num_frames == 24
    assert records["idE/yt7/00001"].num_frames == 22  # the two glitching frames are dropped
    assert records["idD/album"].num_frames == 3 and records["idD/album"].video == "album"
    assert records["idA/yt1/00001"].video == "yt1/00001"

    for path in ["idA/yt1/00001", "idB/yt2/00001", "idD/album"]:
        reader = dataset.reader(records[path])
        frames = reader.read_frames(range(len(reader)))
        landmarks = reader.read_landmarks(range(len(reader)))
        assert frames.shape[1:] == (64, 64, 3)
        for frame, marks in zip(frames, landmarks):
            centre, radius = disk_centre_from_landmarks(marks)
            # Landmarks sit on the disk in crop coordinates (the larger disk, in the two-face clip).
            labels, _ = ndimage.label(DiskDetector._mask(frame))
            biggest = np.bincount(labels.ravel())[1:].argmax() + 1
            ys, xs = np.nonzero(labels == biggest)
            assert np.allclose([xs.mean(), ys.mean()], centre, atol=1.0), path
            assert np.sqrt(len(xs) / np.pi) == pytest.approx(radius, rel=0.1)
    # A still crop over the clip: the disk moves in the crop as much as in the source (scaled).
    reader = dataset.reader(records["idA/yt1/00001"])
    centres = np.array([red_centroid(reader.read_frame(i)) for i in range(len(reader))])
    progress = read_progress(out)
    assert progress["idA/yt1/00001"].crop_mode == "clip"
    scale = 64 / (2.2 * np.median([face_geometry(template_face(np.zeros(2), RADIUS))[1]]))
    assert np.ptp(centres[:, 0]) == pytest.approx(np.ptp(10 * np.sin(np.arange(24) / 6)) * scale, rel=0.15)
    assert progress["idA/yt1/00001"].jitter["jitter_median"] < 0.02


def test_resume_skips_finished_and_redoes_missing(corpus, tmp_path):
    out = tmp_path / "data"
    items = discover([corpus / "idA", corpus / "idC"])
    first = prepare_dataset(items, out, small_cfg(), detector_factory=DiskDetector, progress=False)
    assert first["sources"] == 6 and first["skipped_as_done"] == 0
    log = progress_path(out, (0, 1))
    lines = log.read_text().splitlines()
    again = prepare_dataset(items, out, small_cfg(), detector_factory=DiskDetector, progress=False)
    assert again["sources"] == 0 and again["skipped_as_done"] == 6
    assert log.read_text().splitlines() == lines
    # A crash: a torn last line, and one video folder that never appeared.
    with open(log, "a") as f:
        f.write('{"path": "idA/yt1/000')
    import shutil

    shutil.rmtree(out / "videos" / "yt1" / "00002")
    redo = prepare_dataset(items, out, small_cfg(), detector_factory=DiskDetector, progress=False)
    assert redo["sources"] == 1 and redo["videos_ok"] == 1
    assert len(read_manifest(out)) == 2
    retry = prepare_dataset(
        items, out, small_cfg(), detector_factory=DiskDetector, progress=False, retry_rejects=True
    )
    assert retry["sources"] == 4 and retry["rejected"] == 4
    with pytest.raises(DataError, match="size"):
        prepare_dataset(items, out, small_cfg(size=32), detector_factory=DiskDetector, progress=False)


def test_face_selection_policies(corpus, tmp_path):
    (item,) = [it for it in discover([corpus]) if it.path == "idB/yt2/00001"]
    largest = process_item(item, small_cfg(), tmp_path / "a", DiskDetector())
    assert largest.status == "ok" and largest.several_faces
    rejected = process_item(item, small_cfg(select="reject"), tmp_path / "b", DiskDetector())
    assert (rejected.status, rejected.reason) == ("rejected", "several_faces")
    # A large face in a corner and a small one in the middle: "central" follows the small one.
    ys, xs = np.mgrid[0:FRAME, 0:FRAME]
    frame = np.full((FRAME, FRAME, 3), 50, np.uint8)
    frame[(xs - 35) ** 2 + (ys - 35) ** 2 <= 30**2] = FACE_RGB
    frame[(xs - 110) ** 2 + (ys - 110) ** 2 <= 18**2] = FACE_RGB
    for policy, expected in [("central", (110, 110)), ("largest", (35, 35))]:
        result = LandmarkTracker(DiskDetector(), TrackerConfig(select=policy)).update(frame)
        assert result.num_faces == 2
        assert np.allclose((result.face.box[:2] + result.face.box[2:]) / 2, expected, atol=1.5), policy


def test_shards_then_merge(corpus, tmp_path):
    items = discover([corpus / "idA", corpus / "idE", corpus / "idD"])
    shared = tmp_path / "shared"
    for index in range(2):
        prepare_dataset(
            items, shared, small_cfg(), shard=(index, 2), detector_factory=DiskDetector, progress=False
        )
    assert not (shared / "manifest.csv").exists()
    merged = merge_shards(shared)
    assert merged["videos_ok"] == 4
    assert sorted(r.path for r in read_manifest(shared)) == sorted(it.path for it in items)
    # Shards written to separate folders are gathered into one.
    parts = [tmp_path / f"part{i}" for i in range(2)]
    for index, part in enumerate(parts):
        prepare_dataset(
            items, part, small_cfg(), shard=(index, 2), detector_factory=DiskDetector, progress=False
        )
    gathered = tmp_path / "gathered"
    merge_shards(gathered, parts)
    assert sorted(r.path for r in read_manifest(gathered)) == sorted(it.path for it in items)
    Dataset(gathered).reader(read_manifest(gathered)[0]).read_frame(0)


class CrashingDiskDetector(DiskDetector):
    """Kills its worker process on a frame without a face (as a segfault in a decoder would)."""

    def detect_boxes(self, image):
        found = super().detect_boxes(image)
        if not found:
            os._exit(3)
        return found


def make_crashing_detector() -> CrashingDiskDetector:
    """Module-level factory: picklable for worker processes."""
    return CrashingDiskDetector()


def test_worker_processes_and_a_crash(corpus, tmp_path):
    # A worker that dies takes only the sources in flight with it; the run goes on in a new pool.
    everything = {it.path: it for it in discover([corpus])}
    # The crash comes first (on its first frame): the two sources sent along with it are lost with it,
    # the last one is done by the new pool.
    order = ["idB/yt3/00001", "idA/yt1/00001", "idA/yt1/00002", "idE/yt7/00001"]
    items = [everything[path] for path in order]
    summary = prepare_dataset(
        items,
        tmp_path / "crash",
        small_cfg(),
        workers=2,
        detector_factory=make_crashing_detector,
        progress=False,
    )
    results = read_progress(tmp_path / "crash")
    assert sorted(results) == sorted(it.path for it in items)
    assert (results["idB/yt3/00001"].status, results["idB/yt3/00001"].reason) == (
        "rejected",
        "worker_crashed",
    )
    assert results["idE/yt7/00001"].status == "ok"
    assert summary["rejects_by_reason"]["worker_crashed"] >= 1
    assert [r.path for r in read_manifest(tmp_path / "crash")] == ["idE/yt7/00001"]


# ---------------------------------------------------------------------------------------------------
# dlib on a real face (skimage's astronaut)


@pytest.fixture(scope="module")
def astronaut_clip(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    from skimage import data

    image = data.astronaut()
    frames = [np.ascontiguousarray(image[30 + i : 286 + i, 90 + 2 * i : 346 + 2 * i]) for i in range(16)]
    path = tmp_path_factory.mktemp("astronaut") / "astronaut.mp4"
    write_video_file(path, frames, fps=25)
    return path, frames


@pytest.fixture(scope="module")
def dlib_detector():
    from metahead.landmarks.detect import DlibLandmarkDetector

    return DlibLandmarkDetector()  # loading the 68-point model takes a second or more: once per module


def test_dlib_tracker_follows_a_real_face(astronaut_clip, dlib_detector):
    from metahead.landmarks.detect import eye_distance

    _, frames = astronaut_clip
    detector = dlib_detector
    (face,) = detector.detect(frames[0])
    assert isinstance(face, Face) and face.landmarks.shape == (68, 2)
    left, right = face.landmarks[36:42].mean(0), face.landmarks[42:48].mean(0)
    assert left[0] < right[0] and abs(left[1] - right[1]) < 10  # an upright frontal face
    tracker = LandmarkTracker(detector, TrackerConfig(redetect_every=10))
    results = [tracker.update(f) for f in frames]
    assert all(r.face is not None for r in results)
    assert tracker.stats["full_detections"] == 1 and tracker.stats["tracked"] >= 12
    # The scene moves by (-2, -1) px per frame; so do the landmarks, to within dlib's noise.
    marks = np.stack([r.face.landmarks for r in results])
    motion = np.median(marks[1:] - marks[:-1], axis=(0, 1))
    assert np.allclose(motion, [-2, -1], atol=0.6)
    assert np.median(eye_distance(marks[0])) > 20


def test_cli_prepare_and_merge(astronaut_clip, tmp_path, capsys):
    path, frames = astronaut_clip
    album = tmp_path / "album"
    album.mkdir()
    Image.fromarray(frames[0]).save(album / "one.jpg")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(album / "empty.png")  # no face: dropped
    out = tmp_path / "data"
    sheet = tmp_path / "sheet.png"
    code = main(
        [
            "prepare",
            str(path),
            str(album),
            "--out",
            str(out),
            "--size",
            "128",
            "--min-frames",
            "8",
            "--no-progress",
            "--contact-sheet",
            str(sheet),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "2 videos prepared" in printed and "frames/s" in printed
    records = {r.path: r for r in read_manifest(out)}
    assert records["astronaut"].num_frames == 16 and records["album"].num_frames == 1
    marks = Dataset(out).reader(records["astronaut"]).read_landmarks(range(16))
    assert ((marks > 0) & (marks < 128)).all()
    assert Image.open(sheet).size[0] > 128
    # Shards (made here with the fake detector) merged through the command line.
    sharded = tmp_path / "sharded"
    items = discover([Path(path)])
    for index in range(2):
        prepare_dataset(
            items,
            sharded,
            small_cfg(min_frames=1),
            shard=(index, 2),
            detector_factory=DiskDetector,
            progress=False,
        )
    assert not (sharded / "manifest.csv").exists()
    assert main(["merge-shards", str(sharded)]) == 0
    assert len(read_manifest(sharded)) + len(list(csv.DictReader(open(sharded / "rejects.csv")))) == 1
    assert main(["prepare", str(tmp_path / "absent"), "--out", str(out)]) == 2


# ---------------------------------------------------------------------------------------------------
# Real clips (../shared/data/real-dev); the full validation is benchmarks/validate_prepare.py.

REAL_CLIPS = [
    "mead_W009_angry_level3.mp4",
    "vox2_Input_00010.mp4",
    "lrs3_0Fi83BHQsMA_00002.mp4",
    "liveportrait_d12.mp4",
]


@pytest.mark.realdata
def test_real_dev_clips_landmarks_and_jitter(tmp_path, dlib_detector):
    if not REAL_DEV.is_dir():
        pytest.skip(f"real clips not present at {REAL_DEV} (../shared/data/real-dev next to the repository)")
    items = discover([REAL_DEV / "video" / name for name in REAL_CLIPS])
    cfg = PrepareConfig(size=128, max_frames=40)
    summary = prepare_dataset(
        items, tmp_path / "data", cfg, detector_factory=lambda: dlib_detector, progress=False
    )
    assert summary["videos_ok"] == len(REAL_CLIPS), summary
    assert summary["landmark_coverage"] >= 0.98, summary
    # Consecutive-frame jitter of the stored landmarks (second difference, eye distances): dlib's noise
    # is one to three hundredths; a tracker that slips off the face shows tenths. (liveportrait_d12
    # shakes fast enough to reach 0.09 with detection on every frame, hence the median over videos.)
    assert summary["jitter_median_of_videos"] < 0.05, summary
    counts = Counter()
    for result in read_progress(tmp_path / "data").values():
        counts.update(result.tracker)
    assert counts["tracked"] > 3 * counts["full_detections"], counts  # tracking, not detection, per frame
    assert (tmp_path / "data" / "manifest.csv").is_file()
