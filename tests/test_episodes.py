"""EpisodeDataset and FewShotDataset on tiny datasets written here with data.format.write_video."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

from metahead.data.episodes import EpisodeDataset, FewShotDataset, mirror_frames, recolour_frames
from metahead.data.format import (
    DataError,
    DatasetInfo,
    DataWarning,
    VideoReader,
    VideoRecord,
    write_info,
    write_manifest,
    write_video,
)
from metahead.landmarks.draw import draw_landmarks
from metahead.landmarks.mean_face import mean_face_landmarks
from metahead.landmarks.parts import FACE_PARTS, MIRROR_ORDER

SIZE = 32


def _frames_and_landmarks(
    num_frames: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random frames whose pixel (0, 0) encodes the frame number, and a template face's landmarks."""
    frames = rng.integers(0, 256, size=(num_frames, size, size, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = np.arange(num_frames)
    landmarks = mean_face_landmarks(size)[None] + rng.normal(0, size * 0.01, (num_frames, 68, 2))
    return frames, landmarks.astype(np.float32)


def make_dataset(
    root: Path, lengths: dict[tuple[str, str, str], int], size: int = SIZE, seed: int = 0
) -> Path:
    """A PNG-coded dataset: one video per (identity, video, split) key, with the given frame counts."""
    rng = np.random.default_rng(seed)
    write_info(root, DatasetInfo(image_size=size, frame_codec="png", source="tests"))
    records = []
    for (identity, video, split), count in lengths.items():
        path = f"{identity}/{video}"
        frames, landmarks = _frames_and_landmarks(count, size, rng)
        write_video(root, path, frames, landmarks, codec="png")
        records.append(VideoRecord(identity, video, split, count, path))
    write_manifest(root, records[::-1])  # manifest order must not matter
    return root


@pytest.fixture
def dataset_root(tmp_path) -> Path:
    lengths = {(f"id{i // 2}", f"v{i}", "train"): 12 + i for i in range(6)}
    lengths[("id9", "t0", "test")] = 10
    return make_dataset(tmp_path / "data", lengths)


def _frame_numbers(images: torch.Tensor) -> list[int]:
    """The frame numbers written into pixel (0, 0) (exact with PNG at the stored size)."""
    return [round((v + 1.0) * 127.5) for v in images[:, 0, 0, 0].tolist()]


def test_episode_shapes_ranges_and_video_index(dataset_root):
    ds = EpisodeDataset(dataset_root, split="train", shots=4)
    assert len(ds) == ds.num_videos == 6
    assert ds.video_ids == [f"id{i // 2}/v{i}" for i in range(6)]  # sorted, whatever the manifest order
    item = ds[3]
    assert item["images"].shape == (5, 3, SIZE, SIZE) and item["images"].dtype == torch.float32
    assert item["landmark_images"].shape == (5, 3, SIZE, SIZE)
    assert item["landmarks"].shape == (5, 68, 2)
    assert item["images"].min() >= -1 and item["images"].max() <= 1
    assert item["landmark_images"].min() == -1 and item["landmark_images"].max() > 0.9
    assert item["video_index"].dtype == torch.long and item["video_index"].item() == 3
    assert (item["identity"], item["video"]) == ("id1", "v3")
    expected = draw_landmarks(item["landmarks"], SIZE) * 2 - 1
    torch.testing.assert_close(item["landmark_images"], expected)
    assert ds[-1]["video_index"].item() == 5
    with pytest.raises(IndexError):
        ds[6]


def test_frames_are_distinct_from_one_video_and_match_their_landmarks(dataset_root):
    ds = EpisodeDataset(dataset_root, shots=8)
    for index in range(len(ds)):
        item = ds[index]
        numbers = _frame_numbers(item["images"])
        assert numbers == item["frame_indices"].tolist()
        assert len(set(numbers)) == 9
        record = ds.records[index]
        reader = VideoReader(dataset_root, record.path)
        assert max(numbers) < record.num_frames
        # the item's images and landmarks are exactly the stored frames' (PNG, same size)
        stored = torch.from_numpy(reader.read_frames(numbers)).permute(0, 3, 1, 2).float() / 127.5 - 1
        torch.testing.assert_close(item["images"], stored)
        np.testing.assert_array_equal(item["landmarks"].numpy(), reader.read_landmarks(numbers))


def test_frames_drawn_afresh_and_deterministic_under_manual_seed(dataset_root):
    ds = EpisodeDataset(dataset_root, shots=4)
    draws = {tuple(ds[0]["frame_indices"].tolist()) for _ in range(8)}
    assert len(draws) > 1
    torch.manual_seed(123)
    first = [ds[i]["frame_indices"] for i in range(len(ds))]
    torch.manual_seed(123)
    again = [ds[i]["frame_indices"] for i in range(len(ds))]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    other_seed = EpisodeDataset(dataset_root, shots=4, seed=1)
    torch.manual_seed(123)
    assert any(not torch.equal(a, other_seed[i]["frame_indices"]) for i, a in enumerate(first))


def test_mirror_order_swaps_the_paired_parts():
    assert sorted(MIRROR_ORDER) == list(range(68))
    assert all(MIRROR_ORDER[MIRROR_ORDER[i]] == i for i in range(68))  # mirroring twice is the identity
    part_of = {i: part.name for part in FACE_PARTS for i in range(part.start, part.stop)}
    swapped = {"right_brow": "left_brow", "right_eye": "left_eye"}
    swapped |= {b: a for a, b in swapped.items()}
    for i, j in enumerate(MIRROR_ORDER):
        assert part_of[j] == swapped.get(part_of[i], part_of[i])
    assert MIRROR_ORDER[36] == 45 and MIRROR_ORDER[39] == 42  # outer to outer, inner to inner eye corner
    assert MIRROR_ORDER[8] == 8 and MIRROR_ORDER[30] == 30 and MIRROR_ORDER[57] == 57  # chin, nose tip, lip


def test_mirror_frames_moves_points_with_the_pixels():
    size = 32
    # The template face is left-right symmetric: mirrored and re-indexed, its points are its own.
    template = torch.from_numpy(mean_face_landmarks(size))[None]
    images = torch.rand(1, 3, size, size)
    mirrored_images, mirrored = mirror_frames(images, template)
    torch.testing.assert_close(mirrored, template, atol=1e-4, rtol=0)
    torch.testing.assert_close(mirrored_images, images.flip(-1))
    # A lopsided face (one eye moved): each point lands on the mirrored pixel, and the drawing mirrors too
    # (up to the rasteriser's rounding on a few edge pixels).
    lopsided = template.clone()
    lopsided[0, 36:42] += torch.tensor([2.0, -1.5])
    _, moved = mirror_frames(images, lopsided)
    torch.testing.assert_close(moved[0, list(MIRROR_ORDER), 0], size - 1 - lopsided[0, :, 0])
    difference = (draw_landmarks(moved, size) - draw_landmarks(lopsided, size).flip(-1)).abs()
    assert difference.mean() < 0.01 and (difference > 0.25).float().mean() < 0.01
    assert not torch.allclose(moved, lopsided, atol=0.5)
    torch.testing.assert_close(mirror_frames(*mirror_frames(images, lopsided))[1], lopsided)


def _episode_with_and_without(root, **option) -> tuple[dict, dict]:
    """Episode 2 drawn from the same RNG state by a plain dataset and by one with `option` always on; both
    draw the same frames."""
    items = []
    for dataset in (EpisodeDataset(root, shots=4), EpisodeDataset(root, shots=4, **option)):
        torch.manual_seed(5)
        items.append(dataset[2])
    assert torch.equal(items[0]["frame_indices"], items[1]["frame_indices"])
    # the flag that keeps per-frame caches (training/face_descriptors.py) off the changed images
    assert not items[0]["augmented"] and items[1]["augmented"]
    return items[0], items[1]


def test_mirrored_episodes_keep_their_frames(dataset_root):
    a, b = _episode_with_and_without(dataset_root, mirror_probability=1.0)
    torch.testing.assert_close(b["images"], a["images"].flip(-1))
    torch.testing.assert_close(b["landmarks"], mirror_frames(a["images"], a["landmarks"])[1])
    half = EpisodeDataset(dataset_root, shots=4, mirror_probability=0.5)
    torch.manual_seed(0)
    mirrored = []
    for _ in range(40):
        item = half[1]
        stored = VideoReader(dataset_root, half.records[1].path).read_landmarks(
            item["frame_indices"].tolist()
        )
        mirrored.append(not np.array_equal(item["landmarks"].numpy(), stored))
    assert 8 <= sum(mirrored) <= 32
    with pytest.raises(ValueError, match="mirror_probability"):
        EpisodeDataset(dataset_root, mirror_probability=1.5)


def test_recolouring_turns_hue_keeps_luminance_and_is_the_identity_at_zero():
    images = torch.rand(2, 3, 8, 8) * 1.6 - 0.8  # away from the clamp
    torch.testing.assert_close(recolour_frames(images, 0.0, 1.0, 0.0), images, atol=1e-5, rtol=0)
    luminance = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    pale = images * 0.5  # colours a hue turn keeps inside [-1, 1] (no clamping)
    turned = recolour_frames(pale, 0.5, 1.0, 0.0)
    torch.testing.assert_close((turned * luminance).sum(1), (pale * luminance).sum(1), atol=1e-4, rtol=0)
    assert (turned - pale).abs().mean() > 0.02  # the colours did move
    # Turning back restores the colours; saturation 0 leaves grey; brightness lifts every channel alike.
    back = recolour_frames(recolour_frames(pale, 0.4, 1.0, 0.0), -0.4, 1.0, 0.0)
    torch.testing.assert_close(back, pale, atol=1e-4, rtol=0)
    grey = recolour_frames(images, 0.0, 0.0, 0.0)
    torch.testing.assert_close(grey[:, 0], grey[:, 1], atol=1e-4, rtol=0)
    torch.testing.assert_close(recolour_frames(pale, 0.0, 1.0, 0.1), pale + 0.2, atol=1e-5, rtol=0)


def test_recoloured_episodes_keep_their_frames_and_landmarks(dataset_root):
    a, b = _episode_with_and_without(dataset_root, colour_jitter_probability=1.0)
    assert torch.equal(a["landmark_images"], b["landmark_images"])
    assert not torch.allclose(a["images"], b["images"], atol=0.01)
    # One recolouring for the whole episode: over all K+1 frames' unclamped pixels, one affine colour map
    # takes the plain colours to the recoloured ones.
    before, after = (x.permute(0, 2, 3, 1).reshape(-1, 3) for x in (a["images"], b["images"]))
    unclamped = (after.abs() < 0.999).all(1)
    design = torch.cat([before[unclamped], torch.ones(int(unclamped.sum()), 1)], 1)
    fit = torch.linalg.lstsq(design, after[unclamped]).solution
    assert (design @ fit - after[unclamped]).abs().max() < 1e-3
    with pytest.raises(ValueError, match="colour_jitter_probability"):
        EpisodeDataset(dataset_root, colour_jitter_probability=-0.1)


def test_image_size_resizes_frames_and_scales_landmarks(dataset_root):
    small = EpisodeDataset(dataset_root, shots=2, image_size=16)
    full = EpisodeDataset(dataset_root, shots=2)
    torch.manual_seed(0)
    a = small[1]
    torch.manual_seed(0)
    b = full[1]
    assert a["images"].shape == (3, 3, 16, 16) and a["landmark_images"].shape == (3, 3, 16, 16)
    torch.testing.assert_close(a["landmarks"], (b["landmarks"] + 0.5) * 0.5 - 0.5)
    # anti-aliased like PIL's bilinear resize (within a grey level's rounding)
    stored = np.round((b["images"].permute(0, 2, 3, 1).numpy() + 1) * 127.5).astype(np.uint8)
    pil = np.stack([np.asarray(Image.fromarray(f).resize((16, 16), Image.BILINEAR)) for f in stored])
    np.testing.assert_allclose((a["images"].permute(0, 2, 3, 1).numpy() + 1) * 127.5, pil, atol=1.01)


def test_too_short_videos_are_skipped_with_one_warning(tmp_path):
    lengths = {("a", "long", "train"): 6, ("b", "short1", "train"): 3, ("c", "short2", "train"): 5}
    root = make_dataset(tmp_path / "d", lengths)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = EpisodeDataset(root, shots=5)
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(messages) == 1
    assert "2 of 3" in messages[0] and "b/short1" in messages[0] and "c/short2" in messages[0]
    assert ds.video_ids == ["a/long"] and ds[0]["video_index"].item() == 0
    with pytest.raises(DataError, match="none of the 3 videos.*K\\+1=7") as err:
        EpisodeDataset(root, shots=6)
    assert str(root / "manifest.csv") in str(err.value)


def test_missing_split_and_empty_manifest_are_errors(dataset_root, tmp_path):
    with pytest.raises(DataError, match="no videos in split 'dev'"):
        EpisodeDataset(dataset_root, split="dev")
    root = tmp_path / "empty"
    write_info(root, DatasetInfo(image_size=SIZE))
    write_manifest(root, [])
    with pytest.raises(DataError, match="lists no videos"):
        EpisodeDataset(root)
    (root / "manifest.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        EpisodeDataset(root)


def test_bad_files_surface_as_data_errors_naming_the_file(dataset_root):
    ds = EpisodeDataset(dataset_root, shots=2)
    video_dir = dataset_root / "videos" / ds.records[0].path
    np.save(video_dir / "landmarks.npy", np.zeros((ds.records[0].num_frames, 5, 2), np.float32))
    with pytest.raises(DataError, match=str(video_dir / "landmarks.npy")):
        ds[0]
    bin_path = dataset_root / "videos" / ds.records[1].path / "frames.bin"
    bin_path.write_bytes(bin_path.read_bytes()[:-10])
    with pytest.raises(DataError, match=f"{bin_path}.*truncated"):
        ds[1]
    # a corrupt frame inside an intact-size file
    bin_path = dataset_root / "videos" / ds.records[2].path / "frames.bin"
    bin_path.write_bytes(b"\0" * bin_path.stat().st_size)
    with pytest.raises(DataError, match=f"{bin_path}: frame .* corrupt"):
        ds[2]
    # and through a DataLoader worker, the same error type and message
    loader = DataLoader(torch.utils.data.Subset(ds, [2]), batch_size=1, num_workers=1)
    with pytest.raises(DataError, match=str(bin_path)):
        next(iter(loader))


def test_dataloader_with_workers_batches_and_differs_per_worker(dataset_root):
    ds = EpisodeDataset(dataset_root, shots=3)
    torch.manual_seed(0)
    loader = DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    assert len(batches) == 3
    batch = batches[0]
    assert batch["images"].shape == (2, 4, 3, SIZE, SIZE)
    assert batch["video_index"].tolist() == [0, 1]
    assert batch["identity"] == ["id0", "id0"] and batch["video"] == ["v0", "v1"]
    video_index = torch.cat([b["video_index"] for b in batches])
    assert video_index.tolist() == list(range(6))
    # another epoch draws other frames
    again = torch.cat([b["frame_indices"] for b in loader])
    first = torch.cat([b["frame_indices"] for b in batches])
    assert not torch.equal(first, again)


def test_distributed_sampler_partitions_the_videos(dataset_root):
    ds = EpisodeDataset(dataset_root, shots=2)
    seen = []
    for rank in range(3):
        sampler = DistributedSampler(ds, num_replicas=3, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(1)
        loader = DataLoader(ds, batch_size=1, sampler=sampler, num_workers=0)
        seen.append([b["video_index"].item() for b in loader])
    assert all(len(s) == 2 for s in seen)
    assert sorted(sum(seen, [])) == list(range(6))


# --- FewShotDataset ----------------------------------------------------------------------------------


def test_few_shot_from_folder(dataset_root):
    ds = FewShotDataset(dataset_root, identity="id1", shots=5, seed=3)
    assert len(ds) == 5
    assert {video for _, video in ds.names} <= {"v2", "v3"}
    item = ds[0]
    assert item["image"].shape == (3, SIZE, SIZE) and item["landmark_image"].shape == (3, SIZE, SIZE)
    assert item["landmarks"].shape == (68, 2) and item["identity"] == "id1"
    assert _frame_numbers(ds.images) == ds.frame_indices.tolist()
    pairs = list(zip(ds.names, ds.frame_indices.tolist()))
    assert len(set(pairs)) == 5  # distinct frames
    same = FewShotDataset(dataset_root, identity="id1", shots=5, seed=3)
    assert torch.equal(same.images, ds.images)  # fixed by `seed`, not by torch's RNG
    exact = FewShotDataset(dataset_root, identity="id1", video="v2", frame_indices=[4, 0, 7], image_size=16)
    assert exact.images.shape == (3, 3, 16, 16) and exact.frame_indices.tolist() == [4, 0, 7]
    batch = next(iter(DataLoader(ds, batch_size=5)))
    assert batch["image"].shape == (5, 3, SIZE, SIZE) and len(batch["video"]) == 5


def test_few_shot_from_arrays_and_errors(dataset_root):
    rng = np.random.default_rng(0)
    frames, landmarks = _frames_and_landmarks(4, 24, rng)
    ds = FewShotDataset(frames, landmarks, image_size=48)
    assert len(ds) == 4 and ds.images.shape == (4, 3, 48, 48)
    torch.testing.assert_close(ds.landmarks, (torch.from_numpy(landmarks) + 0.5) * 2 - 0.5)
    as_float = FewShotDataset(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1, landmarks)
    torch.testing.assert_close(as_float.images, FewShotDataset(frames, landmarks).images)
    with pytest.raises(ValueError, match="68, 2"):
        FewShotDataset(frames, landmarks[:, :60])
    with pytest.raises(ValueError, match="landmarks are missing"):
        FewShotDataset(frames)
    with pytest.raises(DataError, match="fewer than shots"):
        FewShotDataset(dataset_root, identity="id9", shots=11)
    with pytest.raises(DataError, match="no identity 'nobody'"):
        FewShotDataset(dataset_root, identity="nobody")
