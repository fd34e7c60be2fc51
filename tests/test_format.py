"""The on-disk dataset format: manifest and info round trips, video round trips, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metahead.data.format import (
    FORMAT_VERSION,
    INFO,
    MANIFEST,
    DataError,
    Dataset,
    DatasetInfo,
    VideoReader,
    VideoRecord,
    read_info,
    read_manifest,
    write_info,
    write_manifest,
    write_video,
)
from metahead.landmarks.mean_face import mean_face_landmarks

HEADER = "identity,video,split,num_frames,path\n"


def _video(num_frames: int = 5, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(num_frames, size, size, 3), dtype=np.uint8)
    landmarks = mean_face_landmarks(size)[None] + rng.normal(0, 0.5, (num_frames, 68, 2))
    return frames, landmarks.astype(np.float32)


def test_manifest_round_trip(tmp_path):
    records = [
        VideoRecord("id 1", "clip,with,commas", "train", 10, "id 1/clip0"),
        VideoRecord("id2", 'quoted "name"', "test", 0, "id2/v"),
        VideoRecord("idé", "v", "dev", 123456, "a/b/c"),
    ]
    write_manifest(tmp_path, records)
    assert read_manifest(tmp_path) == records
    assert read_manifest(tmp_path, split="test") == [records[1]]
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, nothing left over


def test_info_round_trip_and_newer_version(tmp_path):
    info = DatasetInfo(image_size=64, frame_codec="png", source="unit test")
    write_info(tmp_path, info)
    assert read_info(tmp_path) == info
    raw = json.loads((tmp_path / INFO).read_text())
    raw.update(version=FORMAT_VERSION + 1, a_field_from_the_future=1)
    (tmp_path / INFO).write_text(json.dumps(raw))
    with pytest.raises(DataError, match=f"{tmp_path / INFO}: format version {FORMAT_VERSION + 1} is newer"):
        read_info(tmp_path)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "missing"),
        ("not json", "malformed"),
        ("[1, 2]", "malformed"),
        ('{"format": "something-else", "version": 1, "image_size": 8}', "format is 'something-else'"),
        ('{"format": "metahead-dataset", "version": 1}', "malformed"),
        ('{"format": "metahead-dataset", "version": 1, "image_size": 0}', "image_size"),
        (
            '{"format": "metahead-dataset", "version": 1, "image_size": 8, "frame_codec": "gif"}',
            "frame_codec",
        ),
        ('{"format": "metahead-dataset", "version": "1", "image_size": 8}', "version"),
    ],
)
def test_bad_info_is_a_data_error_naming_the_file(tmp_path, text, problem):
    if text:
        (tmp_path / INFO).write_text(text)
    with pytest.raises(DataError, match=problem) as err:
        read_info(tmp_path)
    assert str(tmp_path / INFO) in str(err.value)


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_video_round_trip(tmp_path, codec):
    frames, landmarks = _video(7)
    assert write_video(tmp_path, "id/v", frames, landmarks, codec=codec) == 7
    reader = VideoReader(tmp_path, "id/v", expected_frames=7)
    assert len(reader) == 7
    got = reader.read_frames([6, 0, 3, 3])
    assert got.shape == (4, 16, 16, 3) and got.dtype == np.uint8
    if codec == "png":
        np.testing.assert_array_equal(got, frames[[6, 0, 3, 3]])  # lossless
    else:
        # lossy, but each decoded frame is nearest to its own original
        errors = np.abs(got[:, None].astype(int) - frames[None].astype(int)).mean(axis=(2, 3, 4))
        assert errors.argmin(1).tolist() == [6, 0, 3, 3]
    np.testing.assert_array_equal(reader.read_frame(2), reader.read_frames([2])[0])
    np.testing.assert_array_equal(reader.read_landmarks([6, 1]), landmarks[[6, 1]])
    with pytest.raises(IndexError):
        reader.read_frame(7)
    assert not (tmp_path / "videos" / "id" / "v.partial").exists()


def test_write_video_rejects_bad_input_and_leaves_nothing(tmp_path):
    frames, landmarks = _video(3)
    with pytest.raises(ValueError, match="landmarks shape"):
        write_video(tmp_path, "v", frames, landmarks[:2])
    with pytest.raises(ValueError, match="frame 1 has shape"):
        write_video(tmp_path, "v", [frames[0], frames[1, :8]], landmarks[:2])
    bad = landmarks.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        write_video(tmp_path, "v", frames, bad)
    assert not any((tmp_path / "videos").iterdir())


def test_truncated_frames_bin_is_a_data_error_naming_it(tmp_path):
    write_video(tmp_path, "v", *_video(4))
    path = tmp_path / "videos" / "v" / "frames.bin"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match=f"{path}: .* bytes, the index expects .* \\(truncated\\)"):
        VideoReader(tmp_path, "v")


def test_corrupt_frame_is_a_data_error_naming_the_file(tmp_path):
    write_video(tmp_path, "v", *_video(4), codec="png")
    path = tmp_path / "videos" / "v" / "frames.bin"
    data = bytearray(path.read_bytes())
    offsets = np.load(tmp_path / "videos" / "v" / "frames.idx.npy")
    start = int(offsets[2])
    data[start : start + 40] = bytes(40)  # frame 2's header destroyed, file size unchanged
    path.write_bytes(bytes(data))
    reader = VideoReader(tmp_path, "v")
    reader.read_frames([0, 1, 3])  # the others still decode
    with pytest.raises(DataError, match=f"{path}: frame 2 is corrupt"):
        reader.read_frames([1, 2])


def test_wrong_landmark_shape_is_a_data_error(tmp_path):
    write_video(tmp_path, "v", *_video(4))
    lm_path = tmp_path / "videos" / "v" / "landmarks.npy"
    np.save(lm_path, np.zeros((4, 68, 3), np.float32))
    with pytest.raises(DataError, match=f"{lm_path}: landmarks have shape \\(4, 68, 3\\)"):
        VideoReader(tmp_path, "v")
    np.save(lm_path, np.zeros((3, 68, 2), np.float32))
    with pytest.raises(DataError, match=f"{lm_path}: 3 landmark sets for 4 frames"):
        VideoReader(tmp_path, "v")
    lm_path.write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"{lm_path}: unreadable or corrupt"):
        VideoReader(tmp_path, "v")
    nan = np.zeros((4, 68, 2), np.float32)
    nan[1, 3] = np.nan
    np.save(lm_path, nan)
    reader = VideoReader(tmp_path, "v")
    reader.read_landmarks([0, 2])
    with pytest.raises(DataError, match=f"{lm_path}: .*NaN"):
        reader.read_landmarks([1])


def test_missing_files_and_frame_count_mismatch(tmp_path):
    write_video(tmp_path, "v", *_video(4))
    with pytest.raises(DataError, match="holds 4 frames, the manifest says 5"):
        VideoReader(tmp_path, "v", expected_frames=5)
    with pytest.raises(DataError, match="video folder missing"):
        VideoReader(tmp_path, "nope")
    (tmp_path / "videos" / "v" / "frames.idx.npy").unlink()
    with pytest.raises(DataError, match="frames.idx.npy: missing"):
        VideoReader(tmp_path, "v")


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "empty"),
        ("identity,video,split\na,b,train\n", "lacks columns \\['num_frames', 'path'\\]"),
        (HEADER + "a,b,train,many,a/b\n", ":2: malformed row"),
        (HEADER + "a,b,train,3\n", ":2: malformed row"),
        (HEADER + "a,b,train,3,a/b,extra\n", ":2: malformed row"),
        (HEADER + "a,b,train,-1,a/b\n", "negative"),
        (HEADER + "a,b,validation,3,a/b\n", "split 'validation'"),
        (HEADER + ",b,train,3,a/b\n", "non-empty"),
        (HEADER + "a,b,train,3,../../etc\n", "'..'"),
        (HEADER + "a,b,train,3,/abs/path\n", "relative"),
        (
            HEADER + "a,b,train,3,a/b\na,c,train,3,a/c\na,b,test,4,a/b2\n",
            ":4: video a/b already listed on line 2",
        ),
    ],
)
def test_malformed_manifest_is_a_data_error(tmp_path, text, problem):
    (tmp_path / MANIFEST).write_text(text)
    with pytest.raises(DataError, match=problem) as err:
        read_manifest(tmp_path)
    assert str(tmp_path / MANIFEST) in str(err.value)


def test_dataset_folder(tmp_path):
    write_info(tmp_path, DatasetInfo(image_size=16))
    with pytest.raises(DataError, match="manifest missing"):
        Dataset(tmp_path)
    write_manifest(tmp_path, [])
    with pytest.raises(DataError, match="lists no videos"):
        Dataset(tmp_path)
    write_video(tmp_path, "a/v", *_video(3))
    records = [VideoRecord("a", "v", "train", 3, "a/v")]
    write_manifest(tmp_path, records)
    ds = Dataset(tmp_path)
    assert ds.split("train") == records and ds.split("test") == []
    assert len(ds.reader(records[0])) == 3
    with pytest.raises(ValueError, match="split 'training'"):
        write_manifest(tmp_path, [VideoRecord("a", "v", "training", 3, "a/v")])


def _small_dataset(root, people: int = 6) -> list[VideoRecord]:
    """people identities with two 3-frame videos each, the last person in test."""
    write_info(root, DatasetInfo(image_size=16, source="test"))
    records = []
    for p in range(people):
        for v in range(2):
            write_video(root, f"p{p}/v{v}", *_video(3, seed=10 * p + v))
            split = "test" if p == people - 1 else "train"
            records.append(VideoRecord(f"p{p}", f"v{v}", split, 3, f"p{p}/v{v}"))
    write_manifest(root, records)
    return records


def test_resplit_holds_out_people_and_links_their_frames(tmp_path):
    from metahead.cli import main
    from metahead.data.resplit import resplit_dataset
    from metahead.data.sources import assign_splits

    source, out = tmp_path / "source", tmp_path / "parts" / "holdout"
    records = _small_dataset(source)
    manifest_before = (source / MANIFEST).read_bytes()
    counts = resplit_dataset(source, out, test_fraction=0.4, seed=5, only_split="train")
    # Only the source's training people, 2 of those 5 now test, drawn as `prepare` would draw them.
    expected = assign_splits([r for r in records if r.split == "train"], test_fraction=0.4, seed=5)
    assert read_manifest(out) == expected
    assert counts == {"test": {"identities": 2, "videos": 4}, "train": {"identities": 3, "videos": 6}}
    assert (source / MANIFEST).read_bytes() == manifest_before
    held_out = Dataset(out).split("test")
    assert {r.identity for r in held_out} <= {f"p{p}" for p in range(5)}
    for rec in held_out:  # the frames read through the link are the source's
        np.testing.assert_array_equal(
            Dataset(out).reader(rec).read_frame(1), Dataset(source).reader(rec).read_frame(1)
        )
    # Named people instead of a fraction, through the CLI; a used folder is refused and left as it was.
    names = tmp_path / "names.txt"
    names.write_text("p0\np5  # already test in the source\n")
    named = ["resplit", str(source), "--out", str(tmp_path / "named"), "--test-identities", str(names)]
    assert main(named) == 0
    assert {r.identity for r in Dataset(tmp_path / "named").split("test")} == {"p0", "p5"}
    with pytest.raises(DataError, match="not an empty folder"):
        resplit_dataset(source, out, test_fraction=0.5)
    assert read_manifest(out) == expected
    assert main(["resplit", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
