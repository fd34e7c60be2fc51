"""Cameras without a camera: OpenCV's VideoCapture replaced by a scripted fake `cv2` module (frames, then
unplugged, then plugged back), which backend a camera index goes to, PyAV's camera class on a clip, and
`metahead live AVATAR --camera 0` up to the camera. With OpenCV installed, its VideoCapture reads a clip
through OpenCVCamera (the real BGR to RGB order)."""

from __future__ import annotations

import json
import sys
import time
import types

import av
import numpy as np
import pytest

from app_inputs import tiny_avatar
from metahead.cli import main
from metahead.live import FramePump, LatestFrame
from metahead.live_sources import (
    CameraLost,
    FFmpegCamera,
    OpenCVCamera,
    camera_source,
    parse_frame_size,
    synthetic_camera_frames,
    write_camera_clip,
)

pytestmark = pytest.mark.usefixtures("one_thread")

BGR = (10, 20, 30)  # the fake camera's colour, in OpenCV's channel order


class FakeCamera:
    """What the fake `cv2.VideoCapture` reads: `images` (BGR, one after another, over and over) at `fps`;
    unplugged after `unplug_after` frames, plugged back after `replug_after` failed opens. Counts what
    was asked of it."""

    def __init__(self, images: np.ndarray, fps: float = 200.0, unplug_after: int | None = None,
                 replug_after: int = 2):  # fmt: skip
        self.images, self.fps = images, fps
        self.unplug_after, self.replug_after = unplug_after, replug_after
        self.plugged = True
        self.delivered = 0  # frames read in all
        self.devices: list[int | str] = []  # each VideoCapture(device)
        self.failed_opens = 0
        self.released = 0
        self.asked: dict[int, float] = {}

    def module(self) -> types.ModuleType:
        camera = self
        cv2 = types.ModuleType("cv2")
        cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FPS = 3, 4, 5
        cv2.error = type("error", (Exception,), {})

        class VideoCapture:
            def __init__(self, device):
                camera.devices.append(device)
                self.opened = camera.plugged or camera.failed_opens == camera.replug_after
                camera.failed_opens += not self.opened
                camera.plugged = self.opened

            def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
                return self.opened

            def set(self, prop: int, value: float) -> bool:
                camera.asked[prop] = value
                return True

            def read(self):
                if not (self.opened and camera.plugged):
                    return False, None
                if camera.delivered == camera.unplug_after:
                    camera.plugged, camera.unplug_after = False, None
                    return False, None
                time.sleep(1 / camera.fps)
                image = camera.images[camera.delivered % len(camera.images)].copy()
                image[0, 0, 0] = camera.delivered  # the frame's number, in the first pixel's blue
                camera.delivered += 1
                return True, image

            def release(self) -> None:
                camera.released += 1

        cv2.VideoCapture = VideoCapture
        return cv2


def _plain(bgr=BGR, shape=(48, 64)) -> np.ndarray:
    return np.broadcast_to(np.array(bgr, np.uint8), (1, *shape, 3)).copy()


@pytest.fixture
def fake_cv2(monkeypatch):
    """Installs a FakeCamera's `cv2` module; returns a function that makes and installs one."""

    def install(images: np.ndarray | None = None, **settings) -> FakeCamera:
        camera = FakeCamera(_plain() if images is None else images, **settings)
        monkeypatch.setitem(sys.modules, "cv2", camera.module())
        return camera

    return install


def test_opencv_camera_frames_arrive_rgb_and_an_unplugged_camera_is_lost(fake_cv2) -> None:
    camera = fake_cv2(unplug_after=3, replug_after=1)
    source = camera_source(0, fps=30.0, size=(64, 48))
    assert isinstance(source, OpenCVCamera) and source.name == "camera 0"
    frames = []
    with pytest.raises(CameraLost, match="camera 0: the camera stopped delivering frames"):
        for index, image in source.frames():
            frames.append((index, image))
    assert [index for index, _ in frames] == [0, 1, 2]
    for _, image in frames:  # OpenCV's BGR arrives as RGB
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
        assert tuple(image[1, 1]) == BGR[::-1]
    assert [int(image[0, 0, 2]) for _, image in frames] == [0, 1, 2]  # the numbered blue: now last
    assert camera.devices == [0] and camera.released == 1  # released when it failed
    assert camera.asked == {5: 30.0, 3: 64.0, 4: 48.0}  # fps, width, height asked
    with pytest.raises(CameraLost, match="camera 0: cannot open the camera: no such camera"):
        next(source.frames())  # still unplugged
    assert camera.released == 2
    index, image = next(source.frames())  # plugged back: frames again, numbered from 0
    assert index == 0 and int(image[0, 0, 2]) == 3


def test_frame_pump_opens_an_unplugged_camera_again_and_releases_it_on_stop(fake_cv2) -> None:
    camera = fake_cv2(unplug_after=5, replug_after=3)
    mailbox = LatestFrame()
    pump = FramePump(camera_source("0"), mailbox, retry_seconds=0.01).start()
    numbers: list[int] = []
    deadline = time.monotonic() + 10.0
    try:
        while time.monotonic() < deadline and (not numbers or numbers[-1] < 12):
            frame = mailbox.take(timeout=0.5)
            if frame is not None:
                numbers.append(int(frame.image[0, 0, 2]))
    finally:
        pump.stop()
    assert numbers and numbers[-1] >= 12  # frames came again after the camera was plugged back
    assert numbers == sorted(numbers)
    assert camera.failed_opens == 3 and len(camera.devices) == 5  # opened, 3 failed retries, opened again
    assert pump.finished and pump.error is None
    assert camera.released == len(camera.devices)  # every capture released, the last one on stop


def test_a_camera_index_goes_to_opencv_else_v4l2_else_says_what_to_install(fake_cv2, monkeypatch) -> None:
    fake_cv2()
    assert isinstance(camera_source(1), OpenCVCamera)
    url = camera_source("http://phone:8080/video")  # URLs and paths always through PyAV
    assert isinstance(url, FFmpegCamera) and url.format is None and url.options == {}
    monkeypatch.setitem(sys.modules, "cv2", None)  # OpenCV not installed
    monkeypatch.setattr(av, "formats_available", av.formats_available | {"v4l2"})
    v4l2 = camera_source(2, fps=30.0, size=(640, 480))
    assert isinstance(v4l2, FFmpegCamera) and (v4l2.url, v4l2.format) == ("/dev/video2", "v4l2")
    assert v4l2.options == {"framerate": "30", "video_size": "640x480"}
    monkeypatch.setattr(av, "formats_available", av.formats_available - {"v4l2"})
    with pytest.raises(ValueError, match=r"camera 0: .*pip install 'metahead\[camera\]'.*stream URL"):
        camera_source(0)


def test_ffmpeg_camera_reads_a_stream_as_rgb_then_is_lost_at_its_end(tmp_path) -> None:
    frames = np.zeros((6, 48, 64, 3), np.uint8)
    frames[..., 0] = 220  # red
    clip = write_camera_clip(tmp_path / "red.mjpeg", frames, 25.0)
    source = camera_source(str(clip))
    assert isinstance(source, FFmpegCamera)
    seen = []
    with pytest.raises(CameraLost, match="stopped delivering frames"):
        for index, image in source.frames():
            seen.append(index)
            assert image.shape == (48, 64, 3) and image[24, 32, 0] > 180 and image[24, 32, 2] < 60
    assert seen == list(range(6))
    with pytest.raises(CameraLost, match="cannot open the camera"):
        next(camera_source(str(tmp_path / "absent.mjpeg")).frames())


def test_opencv_itself_reads_frames_as_rgb(tmp_path) -> None:
    """The real module, where installed (`metahead[camera]`): a clip stands in for the device."""
    pytest.importorskip("cv2")
    frames = np.zeros((4, 48, 64, 3), np.uint8)
    frames[..., 0] = 220  # red
    clip = write_camera_clip(tmp_path / "red.mp4", frames, 25.0)
    images = [image for _, (_, image) in zip(range(4), OpenCVCamera(str(clip)).frames())]
    assert len(images) == 4
    assert all(image.shape == (48, 64, 3) and image[24, 32, 0] > 180 and image[24, 32, 2] < 60
               for image in images)  # fmt: skip


def test_frame_size_text() -> None:
    assert parse_frame_size("640x480") == (640, 480) and parse_frame_size("1280X720") == (1280, 720)
    for bad in ("640", "640x", "x480", "0x480", "axb"):
        with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
            parse_frame_size(bad)


# --- the command line -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def avatar_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("camera")
    return tiny_avatar(folder).save(folder / "person.avatar")


def test_metahead_live_camera_0_drives_the_avatar_through_opencv(fake_cv2, avatar_file, tmp_path) -> None:
    """The synthetic webcam person (a 200 px face in 320×240) as a camera's BGR frames at 25 frames/s."""
    rgb = synthetic_camera_frames(seconds=1.0, fps=25.0)
    camera = fake_cv2(np.ascontiguousarray(rgb[..., ::-1]), fps=25.0)
    stats = tmp_path / "stats.json"
    code = main(["live", str(avatar_file), "--camera", "0", "--camera-fps", "25", "--camera-size", "320x240",
                 "--seconds", "2", "--no-page", "--record", str(tmp_path / "live.mp4"), "--threads", "1",
                 "--stats-json", str(stats)])  # fmt: skip
    assert code == 0
    assert camera.devices == [0] and camera.asked == {5: 25.0, 3: 320.0, 4: 240.0}
    assert camera.released == 1  # the device let go when the session ended
    figures = json.loads(stats.read_text())
    assert figures["source_frames"] >= 25 and figures["frames"] > 0
    assert figures["tracker"]["full_detections"] >= 1 and figures["tracker"]["tracked"] > 0  # a face found
    assert (tmp_path / "live.mp4").is_file()


def test_metahead_live_camera_that_never_opens_reports_it_and_records_nothing(
    fake_cv2, avatar_file, tmp_path, capsys
) -> None:
    camera = fake_cv2(replug_after=10**6)
    camera.plugged = False
    record = tmp_path / "live.mp4"
    code = main(["live", str(avatar_file), "--camera", "0", "--seconds", "1.5", "--no-page", "--record",
                 str(record), "--threads", "1"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "camera 0: cannot open the camera: no such camera" in out and "recorded nothing" in out
    assert not record.exists() and camera.failed_opens >= 1 and camera.released == len(camera.devices)


def test_metahead_live_camera_0_without_opencv_or_v4l2_says_what_to_install(
    avatar_file, monkeypatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)
    monkeypatch.setattr(av, "formats_available", av.formats_available - {"v4l2"})
    assert main(["live", str(avatar_file), "--camera", "0", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "camera 0" in err and "pip install 'metahead[camera]'" in err
    assert main(["live", str(avatar_file), "--camera", "0", "--camera-size", "big", "--port", "0"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
