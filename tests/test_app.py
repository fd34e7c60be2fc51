"""The web app without a browser: checks of uploads, making and driving avatars through AppService (the
functions the page calls), bad input leaving nothing half-written, and the page served offline."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from app_inputs import blank_photo, person_video, photos, text_file, tiny_model, two_people_photo
from metahead import perf
from metahead.app.live import LiveSessions
from metahead.app.model_lookup import (
    IN_CHECKOUT,
    STARTED_IN,
    demo_model_candidates,
    demo_model_path,
    load_model_info,
    source_checkout,
)
from metahead.app.service import AppService
from metahead.app.settings import AppConfig
from metahead.app.uploads import AppInputError, check_photos, check_video
from metahead.avatar import Avatar
from metahead.cli import build_parser
from metahead.cli.serve import app_config
from metahead.landmarks.detect import make_detector
from metahead.live import synthetic_camera_clip, synthetic_camera_frames

DRIVER_FRAMES = 6
REPO = Path(__file__).resolve().parents[1]


def _config(model: Path | None, work: Path, **changes) -> AppConfig:
    return AppConfig(model=model, work_dir=work, driver_frames=DRIVER_FRAMES, video_size=64, csim_frames=4,
                     threads=1, **changes)  # fmt: skip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    return {
        "model": tiny_model(folder / "model.pt"),
        "photos": photos(folder / "photos", 3),
        "video": person_video(folder / "talking.mp4", frames=12),
        "folder": folder,
    }


@pytest.fixture(scope="module")
def service(inputs, tmp_path_factory) -> AppService:
    return AppService(_config(inputs["model"], tmp_path_factory.mktemp("work")))


@pytest.fixture(scope="module")
def ft_avatar(service, inputs):
    return service.make_avatar(photos=inputs["photos"], mode="ft", steps=2)


def _frames(path: Path) -> tuple[int, int, int]:
    """(frames, height, width) of a video file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, stream.codec_context.height, stream.codec_context.width


def _unfinished(work: Path) -> list[Path]:
    return [p for p in work.rglob("*") if p.name.endswith((".partial", ".tmp"))]


# --- configuration and the model -------------------------------------------------------------------------


def test_config_refuses_impossible_limits() -> None:
    for bad in (
        {"max_photos": 0},
        {"max_video_seconds": 0},
        {"concurrency": 0},
        {"port": 70000},
        {"live_stream_every": 0},
        {"finetune_amp": "fp16"},
    ):
        with pytest.raises(ValueError, match="AppConfig"):
            AppConfig(**bad)


def test_cli_maps_flags_onto_the_config() -> None:
    args = build_parser().parse_args(
        ["app", "--model", "m.pt", "--port", "7999", "--max-photos", "4", "--max-video-seconds", "3"]
    )
    assert args.command == "app" and args.func.__name__ == "_run_app"
    assert (args.model, args.port, args.max_photos, args.max_video_seconds) == ("m.pt", 7999, 4, 3.0)
    assert args.host == "127.0.0.1"  # this machine only, unless asked
    cfg = app_config(args)
    assert (cfg.port, cfg.max_photos, cfg.max_finetune_steps) == (7999, 4, AppConfig().max_finetune_steps)
    assert cfg.live_stream_every == pytest.approx(1 / 30)  # the Live tab sends up to 30 frames a second
    assert app_config(build_parser().parse_args(["app", "--live-fps", "20"])).live_stream_every == 0.05
    assert cfg.finetune_amp == "auto"  # bf16 fine-tuning only where the hardware has it
    assert app_config(build_parser().parse_args(["app", "--amp", "none"])).finetune_amp == "none"
    with pytest.raises(ValueError, match="--live-fps"):
        app_config(build_parser().parse_args(["app", "--live-fps", "0"]))


def test_without_model_the_demo_model_is_used_or_missing_is_explained(tmp_path, monkeypatch) -> None:
    # The app starts in a new folder, from an installed package (no checkout): whatever the clone's own
    # demo-output/ holds plays no part.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("metahead.app.model_lookup.source_checkout", lambda: None)
    expected = demo_model_path(tmp_path / "demo-output")
    assert expected == tmp_path / "demo-output" / "work" / "run" / "model.pt"
    assert demo_model_candidates() == [(expected, STARTED_IN)]
    info = load_model_info(None, "cpu")
    assert not info.ok and info.is_demo_default and info.found_in is None
    assert (
        "make demo" in info.error and "--model" in info.error and f"`{expected}` ({STARTED_IN})" in info.error
    )
    service = AppService(_config(None, tmp_path / "work"))
    with pytest.raises(AppInputError, match="make demo"):
        service.make_avatar(photos=[tmp_path / "x.png"])
    tiny_model(expected)  # now `make demo`'s model exists here
    info = load_model_info(None, "cpu")
    assert (
        info.ok and info.path == expected and info.found_in == STARTED_IN and info.cfg.model.image_size == 32
    )
    assert "make demo" in info.describe() and STARTED_IN in info.describe()


def test_app_started_elsewhere_uses_the_checkouts_demo_model_and_says_where(tmp_path, monkeypatch) -> None:
    checkout, elsewhere = tmp_path / "clone", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr("metahead.app.model_lookup.source_checkout", lambda: checkout)
    here_model = demo_model_path(elsewhere / "demo-output")
    checkout_model = demo_model_path(checkout / "demo-output")
    assert demo_model_candidates() == [(here_model, STARTED_IN), (checkout_model, IN_CHECKOUT)]
    info = load_model_info(None, "cpu")  # neither exists: both places are named
    assert (
        not info.ok
        and f"`{here_model}` ({STARTED_IN}) nor at `{checkout_model}` ({IN_CHECKOUT})" in info.error
    )

    checkout_model.parent.mkdir(parents=True)
    text_file(checkout_model)  # e.g. left by another version: named with where it was found
    info = load_model_info(None, "cpu")
    assert not info.ok and info.found_in == IN_CHECKOUT
    assert f"`{checkout_model}` (the model `make demo` trains, found in {IN_CHECKOUT})" in info.error
    assert "cannot be used" in info.error

    tiny_model(checkout_model)
    info = load_model_info(None, "cpu")
    assert info.ok and info.path == checkout_model and info.found_in == IN_CHECKOUT
    # outside the folder the app was started in: the page shows the whole path, and where it was found
    assert f"`{checkout_model}`" in info.describe() and f"found in {IN_CHECKOUT}" in info.describe()

    tiny_model(here_model)  # the folder the app is started in comes first
    info = load_model_info(None, "cpu")
    assert info.ok and info.path == here_model and info.found_in == STARTED_IN
    assert "`demo-output/work/run/model.pt`" in info.describe()

    monkeypatch.chdir(checkout)  # started in the checkout itself: one place
    assert demo_model_candidates() == [(checkout_model, STARTED_IN)]


def test_source_checkout_is_the_clone_the_package_runs_from() -> None:
    import metahead

    if not Path(metahead.__file__).resolve().is_relative_to(REPO / "src"):
        pytest.skip(f"metahead runs from {metahead.__file__}, not from this clone's src/")
    assert source_checkout() == REPO


def test_model_of_another_version_or_format_is_explained(inputs, tmp_path) -> None:
    state = torch.load(inputs["model"], weights_only=True)
    state["version"] = 99
    newer = tmp_path / "newer.pt"
    torch.save(state, newer)
    info = load_model_info(newer, "cpu")
    assert not info.ok and "newer" in info.error and "99" in info.error
    service = AppService(_config(newer, tmp_path / "work"))
    with pytest.raises(AppInputError, match="newer"):
        service.make_avatar(photos=inputs["photos"])
    not_a_model = text_file(tmp_path / "notes.pt")
    assert "cannot be used" in load_model_info(not_a_model, "cpu").error
    assert not _unfinished(tmp_path / "work")


# --- checks of uploads ------------------------------------------------------------------------------------


def test_check_photos_names_the_bad_file(inputs, tmp_path) -> None:
    cfg = AppConfig()
    assert check_photos(inputs["photos"], cfg) == inputs["photos"]
    fake = text_file(tmp_path / "holiday.png")
    with pytest.raises(AppInputError, match=r"^holiday\.png: not an image"):
        check_photos([*inputs["photos"], fake], cfg)
    with pytest.raises(AppInputError, match=r"notes\.txt: not a photo"):
        check_photos([text_file(tmp_path / "notes.txt")], cfg)
    with pytest.raises(AppInputError, match="3 photos uploaded; at most 2"):
        check_photos(inputs["photos"], AppConfig(max_photos=2))
    with pytest.raises(AppInputError, match="MB allowed"):
        check_photos(inputs["photos"], AppConfig(max_upload_mb=0.001))
    with pytest.raises(AppInputError, match="megapixels"):
        check_photos(inputs["photos"], AppConfig(max_image_pixels=100))
    with pytest.raises(AppInputError, match="upload 1 to 32 photos"):
        check_photos([], cfg)


def test_check_video_limits_length_size_and_format(inputs, tmp_path) -> None:
    info = check_video(inputs["video"], AppConfig())
    assert info.width == 192 and info.num_frames == 12
    with pytest.raises(AppInputError, match=r"talking\.mp4: 0\.5 s long; videos of up to 0\.2 s"):
        check_video(inputs["video"], AppConfig(max_video_seconds=0.2))
    with pytest.raises(AppInputError, match="MB allowed"):
        check_video(inputs["video"], AppConfig(max_upload_mb=0.001))
    with pytest.raises(AppInputError, match=r"clip\.mp4: not a video that can be read"):
        check_video(text_file(tmp_path / "clip.mp4"), AppConfig())
    with pytest.raises(AppInputError, match="not a video"):
        check_video(inputs["photos"][0], AppConfig())


# --- making avatars ---------------------------------------------------------------------------------------


def test_make_ft_avatar_from_photos(ft_avatar, service, inputs) -> None:
    assert ft_avatar.mode == "ft" and ft_avatar.shots == 3 and ft_avatar.image_size == 32
    assert ft_avatar.avatar_path.parent.parent == service.work_dir / "jobs"
    avatar = Avatar.load(ft_avatar.avatar_path)  # a complete avatar file
    assert avatar.mode == "ft" and avatar.info["finetune"]["steps"] == 2
    # the page's "auto" became what this machine computes: bf16 only with native bf16
    assert avatar.info["finetune"]["amp"] == ("bf16" if perf.cpu_has_native_bf16() else "none")
    assert avatar.info["sources"] == [p.name for p in inputs["photos"]]
    assert avatar.info["model"] == str(inputs["model"].resolve())
    assert ft_avatar.crops.shape == (3, 32, 32, 3) and ft_avatar.curve_png.is_file()
    assert "Avatar made" in ft_avatar.summary and "3 photos" in ft_avatar.summary


def test_make_ff_avatar_from_a_video(service, inputs) -> None:
    made = service.make_avatar(video=inputs["video"], mode="ff", shots=2)
    assert made.mode == "ff" and made.shots == 2 and made.curve_png is None
    avatar = Avatar.load(made.avatar_path)
    assert avatar.mode == "ff" and all(s.startswith("talking.mp4 frame") for s in avatar.info["sources"])


def test_steps_and_modes_are_bounded(service, inputs) -> None:
    with pytest.raises(AppInputError, match="fine-tuning steps: 0 to 1600"):
        service.make_avatar(photos=inputs["photos"], mode="ft", steps=1601)
    with pytest.raises(AppInputError, match="mode must be one of"):
        service.make_avatar(photos=inputs["photos"], mode="xx")
    with pytest.raises(AppInputError, match="not both"):
        service.make_avatar(photos=inputs["photos"], video=inputs["video"])
    with pytest.raises(AppInputError, match=r"T\): 1 to 32"):
        service.make_avatar(video=inputs["video"], shots=40)


def test_default_steps_follow_the_number_of_shots(inputs, tmp_path) -> None:
    # 2 steps, or 2 passes over the shots in batches of 2 where that is more (finetune.min_passes)
    model = tiny_model(tmp_path / "model.pt", overrides=("finetune.min_passes=2",))
    service = AppService(_config(model, tmp_path / "work", max_finetune_steps=5))
    # T = 8 would take 8: the page's bound 5
    assert [service.default_steps(t) for t in (1, 2, 3, 4, 8)] == [2, 2, 3, 4, 5]
    made = service.make_avatar(photos=inputs["photos"], mode="ft")  # no count given: the model's for T = 3
    assert Avatar.load(made.avatar_path).info["finetune"]["steps"] == 3
    assert "3 fine-tuning steps" in made.summary
    explicit = service.make_avatar(photos=inputs["photos"], mode="ft", steps=1)
    assert Avatar.load(explicit.avatar_path).info["finetune"]["steps"] == 1


def test_faces_wrong_in_photos_are_refused_and_nothing_is_left(service, inputs, tmp_path) -> None:
    jobs_before = set((service.work_dir / "jobs").iterdir())
    with pytest.raises(AppInputError, match=r"^empty\.png: no face found"):
        service.make_avatar(photos=[inputs["photos"][0], blank_photo(tmp_path / "empty.png")], steps=1)
    crowd = two_people_photo(tmp_path / "friends.png")
    with pytest.raises(AppInputError, match=r"^friends\.png: 2 faces found"):
        service.make_avatar(photos=[crowd], steps=1)
    with pytest.raises(AppInputError, match=r"^notes\.png: not an image"):
        service.make_avatar(photos=[text_file(tmp_path / "notes.png")], steps=1)
    assert set((service.work_dir / "jobs").iterdir()) == jobs_before
    assert not _unfinished(service.work_dir)
    # where several faces are allowed, the largest is used
    lenient = AppService(_config(inputs["model"], tmp_path / "work", refuse_several_faces=False))
    assert lenient.make_avatar(photos=[crowd], mode="ff").shots == 1


def test_a_failure_while_writing_leaves_no_partial_job(service, inputs, monkeypatch) -> None:
    jobs_before = set((service.work_dir / "jobs").iterdir())

    def broken_save(self, path):
        Path(path).write_bytes(b"half an avatar")
        raise OSError("disk full")

    monkeypatch.setattr(Avatar, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        service.make_avatar(photos=inputs["photos"][:1], mode="ff")
    assert set((service.work_dir / "jobs").iterdir()) == jobs_before
    assert not _unfinished(service.work_dir)


def test_open_avatar_files(service, ft_avatar, inputs, tmp_path) -> None:
    opened = service.open_avatar(ft_avatar.avatar_path)
    assert opened.mode == "ft" and opened.shots == 3 and opened.avatar_path != ft_avatar.avatar_path
    with pytest.raises(AppInputError, match=r"model\.pt: format is 'metahead-model'"):
        service.open_avatar(inputs["model"])
    state = torch.load(ft_avatar.avatar_path, weights_only=True)
    state["version"] = 7
    torch.save(state, tmp_path / "future.avatar")
    with pytest.raises(AppInputError, match=r"future\.avatar: avatar format version 7 is newer"):
        service.open_avatar(tmp_path / "future.avatar")


# --- animating --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("retarget", ["on", "off"])
def test_animate_with_a_synthetic_driver(service, ft_avatar, retarget) -> None:
    result = service.animate(ft_avatar.avatar_path, driver_name=service.driver_names()[0], retarget=retarget)
    assert result.retargeted == (retarget == "on")
    frames, height, width = _frames(result.video)
    assert frames == DRIVER_FRAMES == result.frames and height == width == 64  # 32² enlarged to 64²
    assert _frames(result.side_by_side) == (DRIVER_FRAMES, 64, 3 * 64)  # driver | landmarks | result
    assert -1.0 <= result.csim <= 1.0 and "CSIM to the photos" in result.summary
    assert result.video.parent.parent == service.work_dir / "jobs"


def test_animate_with_an_uploaded_driving_video(service, ft_avatar, inputs) -> None:
    result = service.animate(ft_avatar.avatar_path, driver_video=inputs["video"], retarget="auto")
    assert result.frames == 12 and _frames(result.video)[0] == 12
    assert "talking.mp4" in result.summary and result.missing_faces == 0


def test_animate_refuses_what_it_cannot_use(service, ft_avatar, inputs, tmp_path) -> None:
    with pytest.raises(AppInputError, match="make an avatar"):
        service.animate(None, driver_name=service.driver_names()[0])
    with pytest.raises(AppInputError, match="not one of this app's"):
        service.animate(inputs["model"], driver_name=service.driver_names()[0])
    with pytest.raises(AppInputError, match="unknown driver"):
        service.animate(ft_avatar.avatar_path, driver_name="nobody")
    blank = tmp_path / "blank.mp4"
    from metahead.data.video_io import write_video_file

    write_video_file(blank, [np.full((96, 96, 3), 128, np.uint8)] * 5, 25.0)
    with pytest.raises(AppInputError, match=r"^blank\.mp4: no face detected"):
        service.animate(ft_avatar.avatar_path, driver_video=blank)
    assert not _unfinished(service.work_dir)


def test_synthetic_drivers_are_rendered_once_per_size(service) -> None:
    first = service.driver_preview(service.driver_names()[1])
    assert first.is_file() and _frames(first)[0] == DRIVER_FRAMES
    stamp = first.stat().st_mtime_ns
    assert service.driver_preview(service.driver_names()[1]).stat().st_mtime_ns == stamp


# --- live ---------------------------------------------------------------------------------------------------


def test_live_sessions_drive_the_apps_avatar(service, ft_avatar, tmp_path) -> None:
    """The Live tab's work: camera frames of one browser tab drive its avatar (the real detector on a
    synthetic webcam-like frame), a frame without a face keeps the last one, a busy tab drops frames, a
    stalled camera is reported, and a video file plays as a camera."""
    made = []

    def detector():
        made.append(1)
        return make_detector("dlib", detect_max_side=320)

    live = LiveSessions(service, detector_factory=detector)
    frames = synthetic_camera_frames(seconds=0.4)  # 10 frames, a 200 px face in 320×240
    with pytest.raises(AppInputError, match="make an avatar"):
        live.frame("tab", None, frames[0])
    views = [live.frame("tab", ft_avatar.avatar_path, frame, "on") for frame in frames]
    assert all(view is not None and view.fresh for view in views)
    size = ft_avatar.image_size
    assert views[-1].panel.shape == (size, 3 * size, 3)
    assert "frames/s" in views[-1].status and "retargeted onto the avatar's face" in views[-1].status
    assert "Neutral face set" in live.set_neutral("tab")
    assert live.frame("second tab", ft_avatar.avatar_path, frames[0], "off").fresh
    assert len(made) == 1  # tabs share the detector (one frame at a time here)

    # the face leaves: within a few frames (the tracker's next checks) the page says so and keeps its frame
    blank = [live.frame("tab", ft_avatar.avatar_path, np.full_like(frames[0], 90), "on") for _ in range(12)]
    assert blank[-1].panel is None and not blank[-1].fresh and "no face in view" in blank[-1].status
    assert "next face seen" in live.set_neutral("tab")
    assert "Start the camera" in live.set_neutral("another tab")

    tab = live._tabs["tab"]
    with tab.lock:  # the tab's previous frame is still being processed: this one is dropped
        assert live.frame("tab", ft_avatar.avatar_path, frames[0], "on") is None
    assert live.summary("tab")["dropped"] == 1
    assert live.idle_status("tab") is None
    tab.last_frame_at -= 10.0
    assert "no camera frame for 10 s" in live.idle_status("tab")

    with pytest.raises(AppInputError, match="not one of this app's"):
        live.frame("tab", tmp_path / "elsewhere.avatar", frames[0])
    with pytest.raises(AppInputError, match="retarget"):
        live.frame("tab", ft_avatar.avatar_path, frames[0], "sideways")

    clip = synthetic_camera_clip(tmp_path / "driver.mp4", seconds=0.8)
    played = list(live.play_file("tab", ft_avatar.avatar_path, clip, "auto"))
    assert played and sum(view.fresh for view in played) >= 1
    assert all(view.panel is not None for view in played if view.fresh)
    assert "Played `driver.mp4` to its end" in played[-1].status
    live._tabs["tab"].last_frame_at -= 10.0
    assert live.idle_status("tab") is None  # a file that ended is no camera that stopped
    with pytest.raises(AppInputError, match="not a video"):
        list(live.play_file("tab", ft_avatar.avatar_path, text_file(tmp_path / "notes.txt"), "auto"))
    live.close("tab")
    assert live.summary("tab") is None


# --- the page ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_page_is_served_offline(inputs, tmp_path, monkeypatch, capsys) -> None:
    """The page's HTML and config: no web fonts, no external scripts or styles, analytics off."""
    pytest.importorskip("gradio")
    import httpx

    for name in ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        monkeypatch.setenv(name, "")  # the app sets them for its process; restored after this test

    from metahead.app import launch

    cfg = _config(inputs["model"], tmp_path / "work", port=_free_port())
    threads = torch.get_num_threads()
    page, service, url = launch(cfg, block=False)
    try:
        html = httpx.get(url, timeout=30).text
        config = httpx.get(url.rstrip("/") + "/config", timeout=30).json()
    finally:
        page.close()
        service.close()
        torch.set_num_threads(threads)  # launch set the process' threads for the app
    external = re.findall(r"""<(?:script|link)[^>]+(?:src|href)=["']((?:https?:)?//[^"']+)""", html)
    assert external == []
    assert "fonts.googleapis" not in html and "fonts.googleapis" not in json.dumps(config)
    assert config["analytics_enabled"] is False
    assert "tiny" in json.dumps(config)  # the model line is on the page
    assert (
        f"Model: `{inputs['model']}` — given by `--model`" in capsys.readouterr().out
    )  # and in the terminal
