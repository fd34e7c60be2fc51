"""Avatars: making (FT/FF), the file format, rendering from stored ψ, animating, bad input, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metahead import perf
from metahead.avatar import (
    AVATAR_VERSION,
    Avatar,
    AvatarError,
    InputWarning,
    driving_sequence,
    evenly_spaced,
    hold_last_pose,
)
from metahead.config import apply_overrides, preset
from metahead.data.format import DataError, DatasetInfo, VideoRecord, write_info, write_manifest, write_video
from metahead.landmarks.detect import Face
from metahead.landmarks.draw import draw_landmarks_uint8
from metahead.landmarks.mean_face import mean_face_landmarks, random_faces
from metahead.models import Discriminator, Embedder, Generator
from metahead.training import checkpoint

REAL_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-dev"
SIZE = 32


def tiny_config():
    return apply_overrides(
        preset("tiny"), ["loss.identity_network=none", "finetune.steps=1", "finetune.batch_size=2"]
    )


@pytest.fixture(scope="module")
def networks():
    torch.manual_seed(0)
    cfg = tiny_config()
    return Embedder(cfg.model), Generator(cfg.model), Discriminator(cfg.model, num_videos=3), cfg


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, networks) -> Path:
    embedder, generator, discriminator, cfg = networks
    path = tmp_path_factory.mktemp("model") / "model.pt"
    return checkpoint.save_model(path, cfg, embedder, generator, discriminator, num_videos=3, step=7)


def person_frames(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Crops of one 'person': a coloured landmark drawing over a tinted background."""
    landmarks = random_faces(count, SIZE, seed=seed)
    drawn = draw_landmarks_uint8(landmarks, SIZE).astype(np.float32)
    frames = np.clip(drawn * [0.9, 0.6, 0.4] + [40, 60, 90], 0, 255).astype(np.uint8)
    return frames, landmarks


@pytest.fixture(scope="module")
def ff_avatar(model_file) -> Avatar:
    frames, landmarks = person_frames(3)
    return Avatar.create(model_file, frames=frames, landmarks=landmarks, finetune=False)


# --- rendering ----------------------------------------------------------------------------------------


def test_render_from_stored_params_equals_render_from_embedding(ff_avatar, model_file) -> None:
    _, generator, _, _ = checkpoint.load_model(model_file)
    landmarks = torch.from_numpy(random_faces(4, SIZE, seed=5))
    landmark_images = ff_avatar.landmark_images(landmarks)
    with torch.no_grad():
        expected = generator(landmark_images, person_embedding=ff_avatar.person_embedding)
    # The render copy computes the same function in another op order (channels_last, fused resampling).
    assert torch.allclose(ff_avatar.render_images(landmark_images), expected, atol=1e-4)
    with torch.no_grad():  # the stored G itself: spectral norm folded, ψ given
        folded = ff_avatar.generator(landmark_images, adain_params=ff_avatar.adain_params)
    assert torch.allclose(folded, expected, atol=1e-6)
    # ψ is a stored constant: G's projection P is never run again.
    calls = []
    projections = [m for name, m in ff_avatar.renderer().named_modules() if name.endswith("projection")]
    assert len(projections) == 1
    handle = projections[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        ff_avatar.render(landmarks)
        projections[0](ff_avatar.person_embedding)  # the hook does fire when P runs
    finally:
        handle.remove()
    assert calls == [1]


def test_render_shapes_and_batching(ff_avatar) -> None:
    landmarks = random_faces(5, SIZE, seed=2)
    one = ff_avatar.render(landmarks[0])
    many = ff_avatar.render(landmarks, batch_size=2)
    assert one.shape == (SIZE, SIZE, 3) and one.dtype == np.uint8
    assert many.shape == (5, SIZE, SIZE, 3)
    assert np.abs(many[0].astype(int) - one).max() <= 1  # batching does not change a frame
    assert np.abs(ff_avatar.render(landmarks, batch_size=5).astype(int) - many).max() <= 1
    with pytest.raises(ValueError, match="shape"):
        ff_avatar.render(landmarks[:, :10])


def test_save_load_round_trip_renders_identically(ff_avatar, tmp_path) -> None:
    path = ff_avatar.save(tmp_path / "person.avatar")
    state = torch.load(path, weights_only=True)  # plain tensors and values only
    assert state["format"] == "metahead-avatar" and state["version"] == AVATAR_VERSION
    loaded = Avatar.load(path)
    landmarks = random_faces(3, SIZE, seed=9)
    assert np.array_equal(loaded.render(landmarks), ff_avatar.render(landmarks))
    assert loaded.mode == "ff" and loaded.info["shots"] == 3
    assert np.array_equal(loaded.neutral_landmarks, ff_avatar.neutral_landmarks)
    assert loaded.source_frames.shape == (3, SIZE, SIZE, 3)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary left behind


def test_finetune_overrides_change_one_setting_of_the_models_own(networks) -> None:
    """`metahead avatar --set finetune.X=V`: the model's fine-tuning settings with X changed (it used to
    replace them all with the paper's defaults)."""
    frames, landmarks = person_frames(2)
    avatar = Avatar.create(networks, frames=frames, landmarks=landmarks, progress=False,
                           finetune_overrides=["finetune.lr_generator=3e-4"])  # fmt: skip
    settings = avatar.info["finetune"]
    assert settings["lr_generator"] == 3e-4
    assert settings["steps"] == 1 and settings["batch_size"] == 2  # tiny_config's, not the defaults
    with pytest.raises(ValueError, match=r"takes finetune\.FIELD=VALUE.*model\.base_channels=8"):
        Avatar.create(
            networks, frames=frames, landmarks=landmarks, finetune_overrides=["model.base_channels=8"]
        )


def test_finetuned_avatar_changes_g_but_not_the_model(networks, tmp_path) -> None:
    _, generator, _, _ = networks
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    frames, landmarks = person_frames(2)
    # Avatars made one after another from the same networks in memory (as the evaluation does).
    ff = Avatar.create(networks, frames=frames, landmarks=landmarks, finetune=False)
    curve = tmp_path / "curve.json"
    avatar = Avatar.create(networks, frames=frames, landmarks=landmarks, steps=2, progress=False,
                           curve_path=curve)  # fmt: skip
    assert avatar.mode == "ft" and avatar.info["finetune"]["steps"] == 2
    # finetune.min_passes raises the config's step count with T, never an explicit one
    more_passes = ["finetune.min_passes=3"]  # 2 frames in batches of 2: 3 steps
    raised = Avatar.create(networks, frames=frames, landmarks=landmarks, finetune_overrides=more_passes)
    exact = Avatar.create(networks, frames=frames, landmarks=landmarks, finetune_overrides=more_passes,
                          steps=2)  # fmt: skip
    assert (raised.info["finetune"]["steps"], exact.info["finetune"]["steps"]) == (3, 2)
    assert avatar.info["finetune"]["seconds"] > 0  # recorded (the demo page shows it)
    assert avatar.info["finetune"]["amp"] == "none"  # the library's default: fp32 unless asked
    assert curve.is_file() and curve.with_suffix(".png").is_file()
    assert not torch.equal(avatar.adain_params, ff.adain_params)  # ψ' moved away from P ê
    for key, value in generator.state_dict().items():
        assert torch.equal(value, before[key])
    loaded = Avatar.load(avatar.save(tmp_path / "ft.avatar"))
    assert np.array_equal(loaded.render(landmarks), avatar.render(landmarks))


# --- incompatible files -------------------------------------------------------------------------------


def test_incompatible_avatar_files_are_refused_naming_the_file(ff_avatar, model_file, tmp_path) -> None:
    good = ff_avatar.state()

    def write(name: str, state) -> Path:
        path = tmp_path / name
        torch.save(state, path)
        return path

    with pytest.raises(AvatarError, match=r"model\.pt.*model file"):
        Avatar.load(model_file)
    newer = write("newer.avatar", {**good, "version": AVATAR_VERSION + 1})
    with pytest.raises(AvatarError, match="newer.avatar.*newer than"):
        Avatar.load(newer)
    wider = dict(good, config={**good["config"], "model": {**good["config"]["model"], "base_channels": 16}})
    with pytest.raises(AvatarError, match="wider.avatar.*do not fit"):
        Avatar.load(write("wider.avatar", wider))
    unknown = dict(good, config={**good["config"], "model": {**good["config"]["model"], "new_field": 1}})
    with pytest.raises(AvatarError, match="unknown.avatar.*config"):
        Avatar.load(write("unknown.avatar", unknown))
    garbage = tmp_path / "garbage.avatar"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(AvatarError, match="garbage.avatar"):
        Avatar.load(garbage)
    with pytest.raises(FileNotFoundError, match="missing.avatar"):
        Avatar.load(tmp_path / "missing.avatar")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_unreadable_avatar_files_are_described_in_our_words(ff_avatar, tmp_path) -> None:
    """Never relay torch's advice to load with weights_only=False (that would run the file's code)."""
    whole = ff_avatar.save(tmp_path / "whole.avatar").read_bytes()
    truncated = tmp_path / "truncated.avatar"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(
        AvatarError, match=r"truncated\.avatar: not a readable avatar file: it is truncated"
    ) as err:
        Avatar.load(truncated)
    assert "weights_only" not in str(err.value)
    code = tmp_path / "code.avatar"
    torch.save({**ff_avatar.state(), "extra": _RunsCode()}, code)
    with pytest.raises(AvatarError, match=r"code\.avatar: .*could run code") as err:
        Avatar.load(code)
    assert "weights_only" not in str(err.value)


def test_incompatible_model_file_is_refused(tmp_path) -> None:
    bad = tmp_path / "old-model.pt"
    torch.save({"format": "metahead-model", "version": 99}, bad)
    frames, landmarks = person_frames(2)
    with pytest.raises(ValueError, match="old-model.pt.*newer"):
        Avatar.create(bad, frames=frames, landmarks=landmarks, finetune=False)


# --- bad input ----------------------------------------------------------------------------------------


def test_more_shots_than_frames_is_an_error(model_file) -> None:
    frames, landmarks = person_frames(2)
    with pytest.raises(ValueError, match="T=3.*only 2"):
        Avatar.create(model_file, frames=frames, landmarks=landmarks, shots=3, finetune=False)
    with pytest.raises(ValueError, match="T=4.*only 1 photos"):
        Avatar.create(model_file, images=["a.jpg"], shots=4, finetune=False)
    with pytest.raises(ValueError, match="exactly one"):
        Avatar.create(model_file, finetune=False)


class NoFaces:
    """A stand-in detector that finds nothing."""

    name = "no-faces"

    def detect(self, image: np.ndarray) -> list[Face]:
        return []


def test_photo_without_a_face_is_an_error_naming_it(model_file, tmp_path) -> None:
    blank = tmp_path / "empty-wall.png"
    Image.new("RGB", (96, 96), (120, 130, 140)).save(blank)
    with pytest.raises(DataError, match="empty-wall.png.*no face"):
        Avatar.create(model_file, images=[blank], finetune=False, detector=NoFaces())


class TwoFaces:
    """A stand-in detector that sees a large face on the left and a small one on the right."""

    name = "two-faces"

    def detect(self, image: np.ndarray) -> list[Face]:
        large = mean_face_landmarks(120, face_fraction=0.5, center=(50.0, 60.0))
        small = mean_face_landmarks(120, face_fraction=0.25, center=(150.0, 60.0))
        return [
            Face(np.array([150 - 15, 45, 165, 75], dtype=float), small.astype(np.float32), 1.0),
            Face(np.array([20, 30, 80, 90], dtype=float), large.astype(np.float32), 0.9),
        ]


def test_photo_with_several_faces_uses_the_largest_and_warns(model_file, tmp_path) -> None:
    image = np.zeros((120, 200, 3), np.uint8)
    image[:, :100] = (200, 30, 30)  # the large face's side is red
    image[:, 100:] = (30, 30, 200)
    path = tmp_path / "group.png"
    Image.fromarray(image).save(path)
    with pytest.warns(InputWarning, match="group.png.*2 faces.*largest"):
        avatar = Avatar.create(model_file, images=[path], finetune=False, detector=TwoFaces())
    crop = avatar.source_frames[0].astype(float)
    assert crop[..., 0].mean() > 2 * crop[..., 2].mean()


# --- animation ----------------------------------------------------------------------------------------


def test_animate_landmarks_retargets_other_faces_only(ff_avatar) -> None:
    same = random_faces(6, SIZE, seed=4)  # the avatar's own (template) face shape in other poses
    animation = ff_avatar.animate(same)
    assert not animation.retargeted and len(animation) == 6
    assert np.allclose(animation.landmarks, same)
    other = same.copy()
    other[:, 0:17, 0] = other[:, 0:17, 0] * 1.2 - 0.2 * other[:, 0:17, 0].mean(1, keepdims=True)  # wider jaw
    animation = ff_avatar.animate(other, batch_size=4, side_by_side=True)
    assert animation.retargeted
    frames = animation.to_array()
    assert frames.shape == (6, SIZE, 3 * SIZE, 3)
    # The middle column is the landmark image of what was rendered, the right the avatar's rendering.
    drawn = draw_landmarks_uint8(animation.landmarks, SIZE)
    assert np.abs(frames[:, :, SIZE : 2 * SIZE].astype(int) - drawn).max() <= 1
    assert np.abs(frames[:, :, 2 * SIZE :].astype(int) - ff_avatar.render(animation.landmarks)).max() <= 1
    assert not ff_avatar.animate(other, retarget=False).retargeted
    assert ff_avatar.animate(same, retarget=True, neutral_frame=2).neutral_frame == 2
    with pytest.raises(ValueError, match="out of range"):
        ff_avatar.animate(same, neutral_frame=6)


def test_driving_landmarks_from_npy_are_rescaled(tmp_path) -> None:
    points = random_faces(3, 64, seed=1)
    path = tmp_path / "driver.npy"
    np.save(path, points)
    sequence = driving_sequence(path, SIZE, landmark_size=64, fps=30)
    assert sequence.fps == 30 and len(sequence) == 3
    assert np.allclose(sequence.landmarks, (points + 0.5) / 2 - 0.5, atol=1e-5)
    np.save(tmp_path / "bad.npy", np.zeros((3, 5, 2)))
    with pytest.raises(ValueError, match="bad.npy"):
        driving_sequence(tmp_path / "bad.npy", SIZE)


def test_hold_last_pose_fills_frames_without_a_face() -> None:
    a, b = np.zeros((68, 2)), np.ones((68, 2))
    filled, missing = hold_last_pose([None, a, None, None, b, None])
    assert missing == 4
    assert [float(f[0, 0]) for f in filled] == [0, 0, 0, 0, 1, 1]
    with pytest.raises(ValueError):
        hold_last_pose([None, None])


def test_evenly_spaced() -> None:
    assert evenly_spaced(10, 3) == [0, 4, 9] or evenly_spaced(10, 3) == [0, 5, 9]
    assert evenly_spaced(5, 5) == [0, 1, 2, 3, 4]
    assert evenly_spaced(7, 1) == [3]


# --- the command line, on a dataset folder with exact landmarks ----------------------------------------


def write_dataset(root: Path) -> Path:
    write_info(root, DatasetInfo(image_size=64, frame_codec="png", source="tests"))
    records = []
    for v, seed in enumerate((0, 1)):
        landmarks = random_faces(6, 64, seed=seed)
        frames = np.clip(draw_landmarks_uint8(landmarks, 64).astype(int) + 30 * v, 0, 255).astype(np.uint8)
        write_video(root, f"p{v}/clip", frames, landmarks, codec="png")
        records.append(VideoRecord(f"p{v}", "clip", "test", 6, f"p{v}/clip"))
    write_manifest(root, records)
    return root


def test_cli_avatar_and_animate(model_file, tmp_path) -> None:
    from metahead.cli import main
    from metahead.data.video_io import iter_video_frames, probe_video

    data = write_dataset(tmp_path / "data")
    avatar_path = tmp_path / "p0.avatar"
    assert main([
        "avatar", str(model_file), "--video", str(data / "videos/p0/clip"), "--shots", "2",
        "--out", str(avatar_path), "--steps", "1", "--no-progress", "--device", "cpu",
    ]) == 0  # fmt: skip
    assert avatar_path.is_file()
    # --amp auto by default: bf16 fine-tuning only on hardware with native bf16
    expected_amp = "bf16" if perf.cpu_has_native_bf16() else "none"
    assert Avatar.load(avatar_path).info["finetune"]["amp"] == expected_amp
    assert (tmp_path / "p0.avatar.finetune.json").is_file() and (
        tmp_path / "p0.avatar.finetune.png"
    ).is_file()
    out = tmp_path / "out.mp4"
    assert main([
        "animate", str(avatar_path), "--driving", str(data / "videos/p1/clip"), "--out", str(out),
        "--side-by-side", "--device", "cpu",
    ]) == 0  # fmt: skip
    info = probe_video(out)
    assert (info.width, info.height) == (3 * SIZE, SIZE) and not info.has_audio
    assert sum(1 for _ in iter_video_frames(out)) == 6
    # Errors are reported, not raised: an avatar path that is a model file, T > frames.
    assert (
        main(["animate", str(model_file), "--driving", str(data / "videos/p1/clip"), "--out", str(out)]) == 2
    )
    assert main(["avatar", str(model_file), "--video", str(data / "videos/p0/clip"), "--shots", "9",
                 "--out", str(tmp_path / "x.avatar"), "--feed-forward"]) == 2  # fmt: skip


# --- real clips (skipped without ../shared/data) --------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_DEV.is_dir(), reason=f"{REAL_DEV} not present")
def test_real_photo_avatar_and_video_driver_with_missing_faces(model_file, tmp_path) -> None:
    from metahead.data.video_io import iter_video_frames, probe_video, write_video_file
    from metahead.landmarks.detect import make_detector

    detector = make_detector("dlib")
    photo = REAL_DEV / "image" / "facerec_obama.jpg"
    avatar = Avatar.create(model_file, images=[photo], finetune=False, detector=detector)
    face = avatar.source_landmarks[0]
    # prepare's crop: the face centred, about 1/2.2 of the side wide.
    assert np.abs(face.mean(0) - SIZE / 2).max() < SIZE * 0.15
    assert 0.25 * SIZE < face[:, 0].max() - face[:, 0].min() < 0.7 * SIZE

    # A driver with three black frames in the middle, and an audio track.
    source = REAL_DEV / "video" / "lrs3_OzA6jRYjVQs_00004.mp4"
    frames = [f.image for f in iter_video_frames(source, max_frames=12)]
    for i in (5, 6, 7):
        frames[i] = np.zeros_like(frames[i])
    driver = tmp_path / "driver.mp4"
    write_video_file(driver, frames, 25.0, audio_from=source)
    animation = avatar.animate(driver, side_by_side=True, detector=detector)
    assert animation.missing_faces == 3 and len(animation) == 12
    assert np.array_equal(animation.driving.landmarks[6], animation.driving.landmarks[4])  # the pose held
    assert animation.driving.audio_source == str(driver)
    out = tmp_path / "animated.mp4"
    write_video_file(out, animation, animation.fps, audio_from=animation.driving.audio_source)
    info = probe_video(out)
    assert info.has_audio and (info.width, info.height) == (3 * SIZE, SIZE)
