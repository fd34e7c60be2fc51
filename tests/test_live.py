"""Live puppeteering without a camera: the session's tracking, retargeting switch, neutral frame and
messages on recorded (synthetic) landmarks through a scripted detector; the frame-dropping loop and its
latency; a camera that stops and comes back; the recording, the MJPEG page and `metahead live` on a
synthetic clip with the real detector."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest

from app_inputs import tiny_avatar
from metahead.avatar import Avatar
from metahead.cli import main
from metahead.data.synthetic import render_video
from metahead.landmarks.retarget import shape_distance
from metahead.live import (
    CameraLost,
    LatencyStats,
    LatestFrame,
    LiveConfig,
    LiveFrame,
    LiveRecorder,
    LiveSession,
    MjpegServer,
    TimedFrame,
    run_live,
    synthetic_camera_clip,
)

pytestmark = pytest.mark.usefixtures("one_thread")

FRAME_SHAPE = (240, 320, 3)


@pytest.fixture(scope="module")
def avatar(tmp_path_factory) -> Avatar:
    return tiny_avatar(tmp_path_factory.mktemp("live"))


@pytest.fixture(scope="module")
def driver_marks() -> np.ndarray:
    """A synthetic person talking (another seed than the avatar's), placed in a 320×240 camera frame."""
    _, marks = render_video(2019, 1, 0, 40, 192)
    return marks + np.array([64.0, 24.0], np.float32)


class ScriptedDetector:
    """A landmark detector that knows the faces of the frame being processed (`faces`, camera pixels):
    boxes around them for full frames; none for the tracker's check windows (smaller images), so that a
    check falls back on the full frame; the landmarks of the face under a box, NaN when none is."""

    name = "scripted"

    def __init__(self, script: list[list[np.ndarray]] | None = None) -> None:
        self.faces: list[np.ndarray] = []
        self.full_frame_calls = 0
        self.script = script  # faces of each frame, by the number in its top-left pixel (_numbered)

    def _faces(self, image: np.ndarray) -> list[np.ndarray]:
        return self.faces if self.script is None else self.script[_number(image)]

    @staticmethod
    def _box(marks: np.ndarray) -> np.ndarray:
        lo, hi = marks.min(0), marks.max(0)
        pad = 0.1 * (hi - lo)
        return np.concatenate([lo - pad, hi + pad]).astype(np.float64)

    def detect_boxes(self, image: np.ndarray):
        if image.shape != FRAME_SHAPE:
            return []
        self.full_frame_calls += 1
        return [(self._box(m), 1.0) for m in self._faces(image)]

    def fit(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        for marks in self._faces(image):
            face = self._box(marks)
            overlap = np.minimum(face[2:], box[2:]) - np.maximum(face[:2], box[:2])
            if (overlap > 0).all() and overlap.prod() > 0.3 * (face[2:] - face[:2]).prod():
                return marks.astype(np.float32)
        return np.full((68, 2), np.nan, np.float32)

    def detect(self, image: np.ndarray):
        raise NotImplementedError


def _session(avatar: Avatar, **config) -> tuple[LiveSession, ScriptedDetector]:
    detector = ScriptedDetector()
    settings = {"count_faces_every": 0.0, "redetect_every": 1000, **config}
    return LiveSession(avatar, LiveConfig(**settings), detector=detector), detector


def _frame() -> np.ndarray:
    return np.full(FRAME_SHAPE, 90, np.uint8)


def _numbered(shape: tuple[int, ...], i: int) -> np.ndarray:
    """A frame whose top-left pixel holds its number."""
    image = np.zeros(shape, np.uint8)
    image[0, 0, 0], image[0, 0, 1] = i % 256, i // 256
    return image


def _number(image: np.ndarray) -> int:
    return int(image[0, 0, 0]) + 256 * int(image[0, 0, 1])


def _drive(session, detector, faces_per_frame) -> list[LiveFrame]:
    results = []
    for faces in faces_per_frame:
        detector.faces = faces
        results.append(session.process(_frame()))
    return results


def test_detects_once_then_tracks_and_the_avatar_follows_the_driver(avatar, driver_marks) -> None:
    session, detector = _session(avatar)
    results = _drive(session, detector, [[m] for m in driver_marks[:20]])
    assert all(r.fresh and r.message == "" for r in results)
    assert session.tracker.stats["full_detections"] == 1 and session.tracker.stats["tracked"] == 19
    assert results[0].faces == 1 and all(r.faces is None for r in results[1:])
    size = avatar.image_size
    assert results[-1].avatar.shape == (size, size, 3) and results[-1].panel.shape == (size, 3 * size, 3)
    # the driver talks: what is drawn and rendered changes from frame to frame
    drawn = np.stack([r.drawn for r in results])
    assert np.abs(np.diff(drawn, axis=0)).max() > 0.2
    assert len({r.avatar.tobytes() for r in results}) > 10
    assert session.stats.frames == 20 and session.stats.summary()["latency_median_ms"] > 0


def test_a_face_that_leaves_and_returns_keeps_the_last_good_frame(avatar, driver_marks) -> None:
    session, detector = _session(avatar)
    script = [[m] for m in driver_marks[:8]] + [[]] * 5 + [[m] for m in driver_marks[13:20]]
    results = _drive(session, detector, script)
    last_good = results[7].avatar
    for gone in results[8:13]:
        assert not gone.fresh and "no face" in gone.message and gone.landmarks is None
        assert np.array_equal(gone.avatar, last_good)  # kept, not blanked
    back = results[13:]
    assert all(r.fresh and r.message == "" for r in back)
    assert back[0].faces == 1  # found again by a full detection
    assert session.tracker.stats["full_detections"] == 1 + 5 + 1  # start, each empty frame, the return
    assert session.tracker.stats["tracked"] == 7 + 6


def test_no_face_before_any_frame_says_so(avatar) -> None:
    session, detector = _session(avatar)
    result = _drive(session, detector, [[]])[0]
    assert result.avatar is None and result.panel is None and "no face in view yet" in result.message


def test_several_faces_are_reported_and_one_keeps_driving(avatar, driver_marks) -> None:
    session, detector = _session(avatar, count_faces_every=1e-9)  # count the faces in every frame
    other = driver_marks + np.array([150.0, 0.0], np.float32)  # a second person to the right
    script = [[m] for m in driver_marks[:3]] + [[m, o] for m, o in zip(driver_marks[3:6], other[3:6])]
    script += [[m] for m in driver_marks[6:9]]
    results = _drive(session, detector, script)
    assert [r.faces for r in results] == [1] * 3 + [2] * 3 + [1] * 3
    assert all("2 faces in view" in r.message for r in results[3:6])
    assert all(r.fresh for r in results)
    assert all(r.message == "" for r in results[6:])
    assert np.allclose(results[5].landmarks, driver_marks[5])  # still the first person


def test_retarget_switch_and_neutral_button(avatar, driver_marks) -> None:
    session, detector = _session(avatar, retarget="on")
    first = _drive(session, detector, [[driver_marks[0]]])[0]
    assert first.retargeted and np.allclose(session.neutral, driver_marks[0])  # the first face is neutral
    # at the neutral frame, the retargeted face is the avatar's own neutral shape
    assert shape_distance(first.drawn, avatar.neutral_landmarks) < 1e-3
    talking = _drive(session, detector, [[driver_marks[10]]])[0]
    assert shape_distance(talking.drawn, avatar.neutral_landmarks) > 1e-3
    assert session.set_neutral()  # "this is my neutral face": the current one
    assert np.allclose(session.neutral, driver_marks[10])
    again = _drive(session, detector, [[driver_marks[10]]])[0]
    assert shape_distance(again.drawn, avatar.neutral_landmarks) < 1e-3
    session.set_retarget("off")  # the driver's own landmarks, in the crop
    raw = _drive(session, detector, [[driver_marks[10]]])[0]
    assert not raw.retargeted
    assert shape_distance(raw.drawn, driver_marks[10]) < 1e-3
    with pytest.raises(ValueError, match="retarget"):
        session.set_retarget("sideways")


def test_auto_retargets_only_another_face_shape(avatar, driver_marks) -> None:
    session, detector = _session(avatar, retarget="auto")
    _drive(session, detector, [[driver_marks[0]]])
    assert session.retargeting and session.shape_distance > 0.03  # another person
    own = avatar.neutral_landmarks * 1.5 + np.array([60.0, 10.0], np.float32)  # the avatar's own shape
    session.reset()
    result = _drive(session, detector, [[own]])[0]
    assert not result.retargeted and not session.retargeting


def test_neutral_before_any_face_waits_for_the_next_face(avatar, driver_marks) -> None:
    session, detector = _session(avatar, retarget="on")
    assert not session.set_neutral()
    _drive(session, detector, [[driver_marks[4]]])
    assert np.allclose(session.neutral, driver_marks[4])


# --- pacing -----------------------------------------------------------------------------------------------


class SteadySource:
    """`count` frames at `fps`, then the end (or, with `fail_after`, a camera that is unplugged once and
    then comes back)."""

    def __init__(self, count: int, fps: float, fail_after: int | None = None, shape=(8, 8, 3)):
        self.count, self.fps, self.fail_after, self.shape = count, fps, fail_after, shape
        self.name = "test camera"
        self.opened = 0

    def frames(self):
        self.opened += 1
        start = time.monotonic()
        for i in range(self.count):
            time.sleep(max(0.0, start + i / self.fps - time.monotonic()))
            if self.fail_after is not None and self.opened == 1 and i == self.fail_after:
                raise CameraLost("test camera: unplugged")
            yield i, _numbered(self.shape, i)


class SlowSession:
    """Stands in for LiveSession: each frame takes `seconds` of work."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.config = LiveConfig(camera_timeout=0.3, stats_window=10_000)
        self.stats = LatencyStats(10_000)
        self.indices: list[int] = []
        self.retargeting = False

    def track(self, image, arrived_at):
        time.sleep(self.seconds)
        self.indices.append(_number(image))
        return image, arrived_at

    def render(self, tracked):
        image, arrived_at = tracked
        done = time.monotonic()
        self.stats.add(done - arrived_at, done)
        return LiveFrame(image, image, True, "", None, done - arrived_at, False)

    def summary(self):
        return self.stats.summary()


def test_pipeline_tracks_in_a_thread_and_renders_each_frame_with_its_own_landmarks(avatar, driver_marks):
    detector = ScriptedDetector(script=[[m] for m in driver_marks])
    session = LiveSession(avatar, LiveConfig(count_faces_every=0.0, redetect_every=1000), detector=detector)
    outputs = []
    run = run_live(session, SteadySource(len(driver_marks), 50.0, shape=FRAME_SHAPE),
                   lambda result, frame, message: outputs.append((result, frame)), pipeline=True)  # fmt: skip
    assert outputs and all(result.fresh for result, _ in outputs)
    numbers = [frame.index for _, frame in outputs]
    assert numbers == sorted(numbers) and numbers[-1] >= len(driver_marks) - 2
    for result, frame in outputs:  # tracked in one thread, rendered in another, still paired
        assert np.allclose(result.landmarks, driver_marks[frame.index])
    summary = run.summary
    assert summary["frames"] + summary["dropped"] >= summary["source_frames"] - 2
    # one detection starts the track; after that only a frame dropped under load can make the face jump
    # past the tracker's fast-motion limit and send it to the (scripted: full-frame) detector again
    assert 1 <= session.tracker.stats["full_detections"] <= 1 + summary["dropped"]


def test_latest_frame_replaces_what_was_not_taken() -> None:
    box = LatestFrame()
    for i in range(3):
        box.put(TimedFrame(np.zeros((2, 2, 3), np.uint8), float(i), i))
    assert box.take(0).index == 2 and box.dropped == 2 and box.take(0.01) is None
    box.close()
    assert box.take(1.0) is None and box.closed


def test_a_slow_consumer_drops_frames_and_latency_does_not_grow() -> None:
    """Frames come at 100/s for 3 s, each takes 25 ms: about 60% are dropped, none waits in a queue."""
    session = SlowSession(0.025)
    run = run_live(session, SteadySource(300, 100.0))
    summary = run.summary
    assert summary["source_frames"] == 300
    assert summary["frames"] + summary["dropped"] >= 299  # at most one left in the mailbox at the end
    assert summary["dropped"] > 100
    assert session.indices == sorted(session.indices)  # always the newest, in order
    latencies = np.array([latency for _, latency in run.latencies])
    third = len(latencies) // 3
    # A queue would add 15 ms per processed frame; dropping keeps the last third where the first was.
    assert np.median(latencies[-third:]) < np.median(latencies[:third]) + 0.02
    assert np.median(latencies) < 0.1


def test_an_unplugged_camera_is_reported_and_the_last_frame_kept() -> None:
    session = SlowSession(0.0)
    source = SteadySource(40, 50.0, fail_after=10)
    seen: list[tuple[bool, str]] = []
    run = run_live(session, source, lambda result, frame, message: seen.append((frame is None, message)),
                   seconds=4.0)  # fmt: skip
    assert source.opened == 2  # opened again after the failure
    assert any("unplugged" in m for m in run.messages)
    repeats = [m for again, m in seen if again]
    assert repeats and all("last frame is kept" in m for m in repeats)
    assert session.indices[-1] == 39  # frames came again after the camera returned


def test_a_camera_that_never_opens_is_reported() -> None:
    class Unplugged:
        name, fps = "test camera", 25.0

        def frames(self):
            raise CameraLost("test camera: cannot open the camera: no such device")
            yield  # a generator

    seen: list[LiveFrame] = []
    run = run_live(SlowSession(0.0), Unplugged(), lambda result, frame, message: seen.append(result),
                   seconds=1.0)  # fmt: skip
    assert seen and all(r.avatar is None and "no such device" in r.message for r in seen)
    assert run.summary["frames"] == 0 and "no such device" in run.messages[0]


def test_latency_stats_figures() -> None:
    stats = LatencyStats(window=4)
    for i, latency in enumerate([0.5, 0.01, 0.02, 0.03, 0.04]):
        stats.add(latency, i * 0.04)
    summary = stats.summary()
    assert summary["frames"] == 5 and summary["fps"] == pytest.approx(25.0)
    assert summary["latency_median_ms"] == pytest.approx(25.0)  # the window holds the last four
    assert "25.0 frames/s" in stats.describe()


# --- outputs and the command line -------------------------------------------------------------------------


def _count_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_recording_fills_dropped_frames_with_the_last_output(tmp_path) -> None:
    recorder = LiveRecorder(tmp_path / "out.mp4", 25.0)
    for index in (0, 1, 4, 5):
        recorder.add(np.full((32, 96, 3), index * 40, np.uint8), index)
    assert recorder.close() == 6 and _count_frames(tmp_path / "out.mp4") == 6


@pytest.mark.timeout(60)
def test_a_recording_without_frames_writes_nothing(tmp_path) -> None:
    recorder = LiveRecorder(tmp_path / "out.mp4", 25.0)  # a camera that never opened: nothing added
    assert recorder.close(source_frames=0) == 0 and not (tmp_path / "out.mp4").exists()


@pytest.mark.timeout(60)
def test_a_recording_that_fails_after_its_last_frame_reports_it(tmp_path, monkeypatch) -> None:
    """The writer fails once it has taken every frame (the disk filled up while finishing): close() says
    so instead of waiting for frames that will never come."""

    def write_then_fail(path, frames, fps):
        assert sum(1 for _ in frames) == 3
        raise OSError(f"{path}: no space left on device")

    monkeypatch.setattr("metahead.data.video_io.write_video_file", write_then_fail)
    recorder = LiveRecorder(tmp_path / "out.mp4", 25.0)
    for index in range(3):
        recorder.add(np.zeros((8, 24, 3), np.uint8), index)
    with pytest.raises(OSError, match="no space left"):
        recorder.close()


def test_mjpeg_page_serves_the_latest_frame(tmp_path) -> None:
    server = MjpegServer("127.0.0.1", 0)
    try:
        server.publish(np.full((32, 96, 3), 200, np.uint8), "", "25.0 frames/s")
        with urllib.request.urlopen(server.url, timeout=10) as response:
            assert b"/stream.mjpg" in response.read()
        with urllib.request.urlopen(server.url + "stats.json", timeout=10) as response:
            assert json.loads(response.read())["figures"] == "25.0 frames/s"
        with urllib.request.urlopen(server.url + "stream.mjpg", timeout=10) as response:
            assert "multipart/x-mixed-replace" in response.headers["Content-Type"]
            head = response.read(200)
            assert b"Content-Type: image/jpeg" in head and b"\xff\xd8" in head  # a JPEG starts
    finally:
        server.close()


def test_metahead_live_replays_a_clip_records_and_reports(avatar, tmp_path, capsys) -> None:
    """The real detector on a synthetic webcam-like clip (a 200 px face in 320×240), in real time."""
    clip = synthetic_camera_clip(tmp_path / "camera.mp4", seconds=2.0, fps=25.0)
    avatar_path = avatar.save(tmp_path / "person.avatar")
    stats = tmp_path / "stats.json"
    code = main(["live", str(avatar_path), "--driving", str(clip), "--record", str(tmp_path / "live.mp4"),
                 "--port", "0", "--threads", "1", "--stats-json", str(stats)])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "frames/s" in out and "latency median" in out and "recorded:" in out
    figures = json.loads(stats.read_text())
    assert figures["frames"] > 0 and figures["source_frames"] == 50
    assert figures["amp"] == "none"  # rendering in fp32 unless --amp asks
    assert figures["tracker"]["full_detections"] >= 1 and figures["retargeted"]
    # real time: the recording lasts as long as the clip, whatever was dropped
    assert _count_frames(tmp_path / "live.mp4") == 50


def test_metahead_live_without_outputs_says_why(avatar, tmp_path, capsys) -> None:
    avatar_path = avatar.save(tmp_path / "person.avatar")
    assert main(["live", str(avatar_path), "--driving", "x.mp4", "--no-page"]) == 2
    assert "--no-page needs --record" in capsys.readouterr().err
