"""Live puppeteering: camera frames (or a video played as a camera) drive an avatar one by one, in real time.

    session = LiveSession(Avatar.load("me.avatar"), LiveConfig(retarget="auto"))
    result = session.process(camera_image)        # LiveFrame: the avatar's frame, what happened, timings
    session.set_neutral()                         # "this is my neutral face"

Each frame: the face's 68 landmarks are tracked in the camera image (landmarks.track.LandmarkTracker:
one full detection, then the landmark fitter follows the face from the last frame's box, with a detector
check in a window near it every few frames; a full detection again when the track is lost), moved onto
the avatar's face (landmarks.retarget, measured against the driver's neutral frame: the first face seen,
or the frame `set_neutral` marks; "auto" retargets unless the driver has the avatar's face shape), drawn
at the avatar's size inside a square crop around the face (prepare's framing, re-centred only when the
face leaves it) and rendered by the avatar's G. A frame without a usable face keeps the last good
avatar frame and says why (no face, several faces, the camera stopped).

Pacing: frames are dropped, never queued. `LatestFrame` holds at most one frame waiting to be processed;
a newer frame replaces it (counted as dropped), so when the machine falls behind, the latency stays one
frame's processing time plus at most one frame's wait. `LatencyStats` keeps the last frames' latencies
(frame in → avatar frame out) and output times: frames/s, median and 95th percentile.

`run_live` is the loop `metahead live` runs: a `FrameSource` (live_sources: a video file replayed at its
own rate, or a camera) feeds `LatestFrame` from a thread; the loop processes the newest frame and hands
each result to its sinks (an MJPEG page, a recording). Nothing here imports a UI.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metahead.avatar import Avatar, to_uint8
from metahead.data.face_crop import CropConfig, crop_boxes, crop_frame, to_crop_coordinates
from metahead.landmarks.detect import LandmarkDetector
from metahead.landmarks.retarget import SAME_FACE_TOLERANCE, Retargeter, shape_distance
from metahead.landmarks.track import LandmarkTracker, TrackerConfig
from metahead.live_sources import (
    CameraLost,
    FrameSource,
    VideoFileSource,
    camera_source,
    synthetic_camera_clip,
    synthetic_camera_frames,
    write_camera_clip,
)

RETARGET_MODES = ("auto", "on", "off")


@dataclass
class LiveConfig:
    """Settings of a live session (`metahead live` and the app's Live tab map onto these)."""

    retarget: str = "auto"  # auto: unless the driver has the avatar's face shape; on; off
    anchor: str = "driver"  # landmarks.retarget: where the retargeted face is placed
    # The tracker's detector checks near the face: every `redetect_every` frames; a track whose checks find
    # no face `max_missed_checks` times in a row is dropped (a face that left: dlib's fitter alone would
    # follow a ghost). 5 and 2 notice a face that left within about 0.4 s at 25 frames/s.
    redetect_every: int = 5
    max_missed_checks: int = 2
    # Camera frames are scaled down to this longer side for face detection (HOG's cost grows with the pixel
    # count; landmarks are fitted at full resolution). 320 finds faces from about 160 px in a 640 frame.
    detect_max_side: int = 320
    # Seconds between full-frame detections that count the faces in view while tracking (0: only when a
    # track starts); several faces are reported, the tracked one keeps driving.
    count_faces_every: float = 2.0
    margin: float = 2.2  # crop side / face size (prepare's framing)
    # The crop is re-centred on the face when a landmark comes closer than this fraction of its side to
    # its edge; otherwise it stays put, so head motion moves the avatar's head.
    crop_inner_fraction: float = 0.04
    stats_window: int = 250  # frames the frames/s and latency figures are measured over
    camera_timeout: float = 2.0  # seconds without a frame before the camera counts as stopped

    def __post_init__(self) -> None:
        if self.retarget not in RETARGET_MODES:
            raise ValueError(f"retarget must be one of {', '.join(RETARGET_MODES)}, got {self.retarget!r}")
        if self.anchor not in ("driver", "avatar"):
            raise ValueError(f"anchor must be 'driver' or 'avatar', got {self.anchor!r}")
        if self.detect_max_side < 64 or self.stats_window < 2 or self.margin <= 0:
            raise ValueError("LiveConfig: detect_max_side >= 64, stats_window >= 2 and margin > 0")
        if self.count_faces_every < 0 or self.camera_timeout <= 0:
            raise ValueError("LiveConfig: count_faces_every >= 0 and camera_timeout > 0")


# =========================================================================================================
# Timing
# =========================================================================================================


class LatencyStats:
    """Latencies and output times of the last `window` frames, and counts of all frames seen."""

    def __init__(self, window: int = 250):
        self._latencies: deque[float] = deque(maxlen=window)
        self._done: deque[float] = deque(maxlen=window)
        self.frames = 0  # frames processed
        self.dropped = 0  # frames never processed (a newer one replaced them)

    def add(self, latency: float, done_at: float) -> None:
        self._latencies.append(latency)
        self._done.append(done_at)
        self.frames += 1

    def fps(self) -> float:
        """Frames out per second over the window (0 before two frames)."""
        if len(self._done) < 2 or self._done[-1] <= self._done[0]:
            return 0.0
        return (len(self._done) - 1) / (self._done[-1] - self._done[0])

    def summary(self) -> dict[str, float | int]:
        """frames/s, latency median and 95th percentile (ms) over the window; frames and dropped in all."""
        lat = np.asarray(self._latencies, dtype=np.float64) * 1000.0
        median, p95 = (float(np.median(lat)), float(np.percentile(lat, 95))) if len(lat) else (0.0, 0.0)
        return {"fps": self.fps(), "latency_median_ms": median, "latency_p95_ms": p95,
                "frames": self.frames, "dropped": self.dropped}  # fmt: skip

    def describe(self) -> str:
        s = self.summary()
        if not s["frames"]:
            return "no frames yet"
        return (
            f"{s['fps']:.1f} frames/s, latency median {s['latency_median_ms']:.0f} ms, "
            f"95th percentile {s['latency_p95_ms']:.0f} ms ({s['frames']} frames, {s['dropped']} dropped)"
        )


@dataclass
class TimedFrame:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    captured_at: float  # time.monotonic() when it arrived
    index: int  # its number in the source (gaps: frames the source itself skipped)


class LatestFrame:
    """A one-frame mailbox between a frame source and the processing loop: `put` replaces a frame not yet
    taken (that one is dropped, never queued), `take` waits for the next one. (Any item will do: the
    pipeline's tracking stage passes (frame, tracked) pairs.)"""

    def __init__(self) -> None:
        self._frame: Any = None
        self._cond = threading.Condition()
        self._closed = False
        self.put_count = 0
        self.dropped = 0

    def put(self, frame: Any) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self.put_count += 1
            self._cond.notify()

    def take(self, timeout: float | None = None) -> Any:
        """The newest frame, waiting up to `timeout` s; None on timeout or when closed and empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout)
            frame, self._frame = self._frame, None
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


# =========================================================================================================
# The session: one driver, one avatar
# =========================================================================================================


@dataclass
class LiveFrame:
    """What one camera frame gave."""

    avatar: np.ndarray | None  # (S, S, 3) uint8: rendered now, or the last good frame; None before any
    panel: np.ndarray | None  # (S, 3S, 3): driver crop | landmark image | avatar (last good when not fresh)
    fresh: bool  # the avatar was rendered from this frame
    message: str  # empty when all is well; else what is wrong, for a person
    faces: int | None  # faces seen by this frame's full-frame detection (None: none ran)
    latency: float  # seconds from the frame's arrival to this result
    retargeted: bool
    landmarks: np.ndarray | None = None  # (68, 2) the driver's, camera pixels (None: no face)
    drawn: np.ndarray | None = None  # (68, 2) what was drawn for G, avatar crop pixels (None: not fresh)


@dataclass
class TrackedFrame:
    """A camera frame tracked and retargeted, not yet rendered (LiveSession.track → render)."""

    arrived_at: float
    faces: int | None  # faces seen by this frame's full-frame detection (None: none ran)
    landmarks: np.ndarray | None = None  # (68, 2) the driver's, camera pixels; None: no face
    drawn: np.ndarray | None = None  # (68, 2) what G gets, avatar crop pixels
    driver: np.ndarray | None = None  # (S, S, 3) the driver's crop
    message: str = ""


class LiveSession:
    """Drives one avatar with one stream of camera frames; not thread-safe (one frame at a time)."""

    def __init__(
        self, avatar: Avatar, config: LiveConfig | None = None, detector: LandmarkDetector | None = None
    ):
        self.avatar = avatar
        self.config = config or LiveConfig()
        if detector is None:
            from metahead.landmarks.detect import make_detector

            detector = make_detector("dlib", detect_max_side=self.config.detect_max_side)
        tracking = TrackerConfig(
            redetect_every=self.config.redetect_every, max_missed_checks=self.config.max_missed_checks
        )
        self.tracker = LandmarkTracker(detector, tracking)
        self.stats = LatencyStats(self.config.stats_window)
        self._crop = CropConfig(size=avatar.image_size, margin=self.config.margin, mode="frame")
        self.reset()

    def reset(self) -> None:
        """Forget the face, the neutral frame and the last frame (a new driver)."""
        self.tracker.reset()
        self._neutral: np.ndarray | None = None
        self._retargeter: Retargeter | None = None
        self._box: np.ndarray | None = None
        self._want_neutral = False
        self._last_count_at = -np.inf
        self._faces_in_view: int | None = None
        self.last_avatar: np.ndarray | None = None
        self.last_panel: np.ndarray | None = None
        self.last_landmarks: np.ndarray | None = None
        self.shape_distance: float | None = None

    # --- settings ---------------------------------------------------------------------------------------

    def set_retarget(self, mode: str) -> None:
        if mode not in RETARGET_MODES:
            raise ValueError(f"retarget must be one of {', '.join(RETARGET_MODES)}, got {mode!r}")
        self.config = dataclasses.replace(self.config, retarget=mode)

    def set_neutral(self) -> bool:
        """Make the current face the neutral one (what expression is measured against); if no face is
        tracked now, the next face seen. Returns whether a face was there."""
        if self.last_landmarks is None:
            self._want_neutral = True
            return False
        self._use_neutral(self.last_landmarks)
        return True

    @property
    def neutral(self) -> np.ndarray | None:
        return self._neutral

    @property
    def retargeting(self) -> bool:
        """Whether the driver's landmarks are retargeted now (auto decides on the neutral face's shape)."""
        mode = self.config.retarget
        if mode == "auto":
            return self.shape_distance is None or self.shape_distance > SAME_FACE_TOLERANCE
        return mode == "on"

    def _use_neutral(self, landmarks: np.ndarray, image_shape: tuple[int, ...] | None = None) -> None:
        self._neutral = np.asarray(landmarks, np.float64).copy()
        self._retargeter = Retargeter(self.avatar.neutral_landmarks, self._neutral, self.config.anchor)
        self.shape_distance = shape_distance(self._neutral, self.avatar.neutral_landmarks)
        self._want_neutral = False
        if image_shape is not None or self._box is None:
            self._box = self._crop_box(self._neutral, image_shape)

    # --- one frame --------------------------------------------------------------------------------------

    def process(self, image: np.ndarray, arrived_at: float | None = None) -> LiveFrame:
        """Track, retarget and render one camera frame (H, W, 3) uint8 RGB."""
        return self.render(self.track(image, arrived_at))

    def track(self, image: np.ndarray, arrived_at: float | None = None) -> TrackedFrame:
        """The first half of `process`: the face tracked, retargeted and placed in the crop."""
        arrived_at = time.monotonic() if arrived_at is None else arrived_at
        image = _check_frame(image)
        result = self.tracker.update(image)
        faces = result.num_faces
        now = time.monotonic()
        if result.face is not None and faces is None and self.config.count_faces_every > 0:
            if now - self._last_count_at >= self.config.count_faces_every:
                faces = len(self.tracker.detector.detect_boxes(image))
        if faces is not None:
            self._last_count_at = now
            self._faces_in_view = faces
        if result.face is None:
            self.last_landmarks = None
            return TrackedFrame(arrived_at, faces)
        landmarks = result.face.landmarks
        self.last_landmarks = landmarks
        if self._neutral is None or self._want_neutral:
            self._use_neutral(landmarks, image.shape)
        self._box = self._follow_box(self._box, landmarks, image.shape)
        points = self._retargeter(landmarks) if self.retargeting else landmarks
        crop_points = to_crop_coordinates(points, self._box, self.avatar.image_size)
        message = ""
        if self._faces_in_view is not None and self._faces_in_view > 1:
            message = f"{self._faces_in_view} faces in view: following one of them (the first found)"
        driver = crop_frame(image, self._box, self.avatar.image_size)
        return TrackedFrame(arrived_at, faces, landmarks, crop_points, driver, message)

    def render(self, tracked: TrackedFrame) -> LiveFrame:
        """The second half of `process`: the avatar's frame (or the last good one, and why)."""
        if tracked.drawn is None:
            message = (
                "no face in view: the last frame is kept (face the camera, with light on your face)"
                if self.last_avatar is not None
                else "no face in view yet: face the camera, with light on your face"
            )
            return self._finish(tracked, message, fresh=False)
        drawn = self.avatar.landmark_images(tracked.drawn[None])
        avatar = to_uint8(self.avatar.render_images(drawn))[0]
        self.last_avatar = avatar
        self.last_panel = np.concatenate([tracked.driver, to_uint8(drawn)[0], avatar], axis=1)
        return self._finish(tracked, tracked.message, fresh=True)

    def _finish(self, tracked: TrackedFrame, message: str, fresh: bool) -> LiveFrame:
        done = time.monotonic()
        latency = done - tracked.arrived_at
        self.stats.add(latency, done)
        return LiveFrame(self.last_avatar, self.last_panel, fresh, message, tracked.faces, latency,
                         self.retargeting, tracked.landmarks, tracked.drawn)  # fmt: skip

    def _crop_box(self, landmarks: np.ndarray, image_shape: tuple[int, ...] | None) -> np.ndarray:
        shape = image_shape[:2] if image_shape is not None else (1 << 20, 1 << 20)
        (box,), _ = crop_boxes(np.asarray(landmarks)[None], np.zeros(1), shape, self._crop)
        return box

    def _follow_box(
        self, box: np.ndarray | None, landmarks: np.ndarray, shape: tuple[int, ...]
    ) -> np.ndarray:
        """The crop box, moved onto the face only when the face nears its edge (or leaves it)."""
        if box is not None:
            half = box[2] / 2 * (1 - 2 * self.config.crop_inner_fraction)
            if (landmarks.min(0) >= box[:2] - half).all() and (landmarks.max(0) <= box[:2] + half).all():
                return box
        return self._crop_box(landmarks, shape)

    def summary(self) -> dict[str, Any]:
        return {**self.stats.summary(), "tracker": dict(self.tracker.stats), "retargeted": self.retargeting,
                "shape_distance": self.shape_distance}  # fmt: skip


def _check_frame(image: Any) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 4:  # RGBA from a browser canvas
        image = image[..., :3]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"camera frames must be HxWx3 uint8 RGB, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


# =========================================================================================================
# The loop of `metahead live` (its frame sources: metahead.live_sources)
# =========================================================================================================


class _Worker:
    """A daemon thread running the subclass's `_run` until `stop()` (which sets `_stop` and waits)."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class FramePump(_Worker):
    """Reads a FrameSource in a thread into a LatestFrame. A camera that fails is opened again every
    `retry_seconds` (unplugged and plugged back) while `error` says what happened; a file that ends
    closes the mailbox."""

    def __init__(
        self, source: FrameSource, mailbox: LatestFrame, retry: bool = True, retry_seconds: float = 1.0
    ):
        self.source = source
        self.mailbox = mailbox
        self.retry = retry
        self.retry_seconds = retry_seconds
        self.error: str | None = None
        self.finished = False
        super().__init__("metahead-live-frames")

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    for index, image in self.source.frames():
                        self.error = None
                        self.mailbox.put(TimedFrame(image, time.monotonic(), index))
                        if self._stop.is_set():
                            return
                    return  # the source ended
                except CameraLost as err:
                    self.error = str(err)
                    if not self.retry:
                        return
                    self._stop.wait(self.retry_seconds)
        finally:
            self.finished = True
            self.mailbox.close()


class MjpegServer:
    """The live output as a local web page (`/`), an MJPEG stream (`/stream.mjpg`) and figures
    (`/stats.json`): works on a headless machine, in any browser. Binds `host` (default this machine)."""

    PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>metahead live</title></head>
<body style="font-family:system-ui,sans-serif;background:#111;color:#eee">
<h1 style="font-size:1.2em">metahead live: driver | landmarks | avatar</h1>
<img id="stream" src="/stream.mjpg" style="image-rendering:pixelated;width:min(96vw,1152px)">
<p id="stats"></p>
<script>
async function tick() {
  try { const s = await (await fetch('/stats.json')).json();
        document.getElementById('stats').textContent = s.message || s.figures; } catch (e) {}
  setTimeout(tick, 1000);
}
tick();
</script></body></html>"""

    def __init__(self, host: str = "127.0.0.1", port: int = 8090):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self._jpeg: bytes | None = None
        self._count = 0
        self._cond = threading.Condition()
        self._stats: dict[str, Any] = {"message": "waiting for frames", "figures": ""}
        self._closed = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path == "/":
                    self._send(server.PAGE.encode(), "text/html; charset=utf-8")
                elif self.path == "/stats.json":
                    import json

                    with server._cond:
                        body = json.dumps(server._stats).encode()
                    self._send(body, "application/json")
                elif self.path == "/stream.mjpg":
                    self._stream()
                else:
                    self.send_error(404)

            def _send(self, body: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                seen = -1
                try:
                    while True:
                        with server._cond:
                            server._cond.wait_for(
                                lambda seen=seen: server._count != seen or server._closed, 1.0
                            )
                            if server._closed:
                                return
                            jpeg, seen = server._jpeg, server._count
                        if jpeg is None:
                            continue
                        head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                        self.wfile.write(head.encode() + jpeg + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    return

        try:
            self._http = ThreadingHTTPServer((host, port), Handler)
        except OSError as err:
            raise ValueError(
                f"{host}:{port}: cannot serve the live page there ({err}); try another --port"
            ) from None
        self._http.daemon_threads = True
        self.url = f"http://{host}:{self._http.server_address[1]}/"
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="metahead-live-http", daemon=True
        )
        self._thread.start()

    def publish(self, frame: np.ndarray | None, message: str, figures: str) -> None:
        """Show `frame` (None: keep the last one) with a status line."""
        jpeg = None if frame is None else encode_jpeg(frame)
        with self._cond:
            if jpeg is not None:
                self._jpeg = jpeg
                self._count += 1
            self._stats = {"message": message, "figures": figures}
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._http.shutdown()
        self._http.server_close()


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class LiveRecorder:
    """Writes the output frames to a video at the source's frame rate in real time: a frame the loop
    dropped is filled by repeating the last output (so the recording lasts as long as the session).
    Encoding runs in its own thread (data.video_io.write_video_file: the file appears when complete)."""

    def __init__(self, path: str | Path, fps: float):
        import queue

        from metahead.data.video_io import write_video_file

        self.path = Path(path)
        self.fps = fps
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue()
        self._last: np.ndarray | None = None
        self._next_index = 0
        self.frames = 0
        self.error: BaseException | None = None

        ended = threading.Event()  # close()'s end mark was taken from the queue

        def frames() -> Iterator[np.ndarray]:
            while (frame := self._queue.get()) is not None:
                yield frame
            ended.set()

        def encode() -> None:
            first = self._queue.get()
            if first is None:  # no frame came (a camera that never opened): no file
                return
            try:
                self.frames = write_video_file(self.path, itertools.chain([first], frames()), fps)
            except BaseException as err:  # reported by close()
                self.error = err
                while not ended.is_set() and self._queue.get() is not None:  # drain: add() never blocks
                    pass

        self._thread = threading.Thread(target=encode, name="metahead-live-record", daemon=True)
        self._thread.start()

    def add(self, frame: np.ndarray, index: int) -> None:
        """The output for source frame `index` (indices skipped since the last call repeat the last)."""
        self._repeat_last_until(index)
        self._queue.put(frame)
        self._last = frame
        self._next_index = index + 1

    def _repeat_last_until(self, index: int) -> None:
        if self._last is not None:
            for _ in range(max(0, index - self._next_index)):
                self._queue.put(self._last)
        self._next_index = max(self._next_index, index)

    def close(self, source_frames: int | None = None) -> int:
        """Finish the file (frames after the last output, up to `source_frames`, repeat it); returns the
        frames written (0: no frame came, no file written)."""
        if source_frames is not None:
            self._repeat_last_until(source_frames)
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.frames


@dataclass
class LiveRun:
    """What `run_live` did."""

    summary: dict[str, Any]
    messages: list[str] = field(default_factory=list)  # each distinct problem reported, in order
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, latency)


class TrackingStage(_Worker):
    """Tracking in a thread of its own (`live_frames(pipeline=True)`): it tracks the newest camera frame
    while the caller renders the previous one, so on two cores a frame takes max(track, render) instead of
    their sum. Its results go through a LatestFrame as well: never queued."""

    def __init__(self, session: LiveSession, frames: LatestFrame):
        self.session = session
        self.frames = frames
        self.out = LatestFrame()  # (TimedFrame, TrackedFrame)
        self.error: BaseException | None = None
        super().__init__("metahead-live-track")

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                frame = self.frames.take(timeout=0.1)
                if frame is None:
                    if self.frames.closed:
                        return
                    continue
                self.out.put((frame, self.session.track(frame.image, frame.captured_at)))
        except BaseException as err:  # handed to the rendering side
            self.error = err
        finally:
            self.out.close()


def live_frames(
    session: LiveSession,
    source: FrameSource,
    seconds: float | None = None,
    stop: threading.Event | None = None,
    retry_camera: bool = True,
    run: LiveRun | None = None,
    pipeline: bool = False,
) -> Iterator[tuple[LiveFrame, TimedFrame | None]]:
    """Process `source` through `session`, always the newest frame, until the source ends, `seconds` pass
    or `stop` is set; yields (result, its frame). When the source stops delivering (a camera unplugged),
    yields the last good result again (or an empty one) with the reason and frame None, every
    camera_timeout seconds. pipeline: track in a thread of its own (TrackingStage) while rendering here.
    `run`, when given, collects the figures, latencies and messages."""
    mailbox = LatestFrame()
    pump = FramePump(source, mailbox, retry=retry_camera).start()
    stage = TrackingStage(session, mailbox).start() if pipeline else None
    inbox = mailbox if stage is None else stage.out
    started = time.monotonic()
    run = run if run is not None else LiveRun(summary={})
    last: LiveFrame | None = None

    def note(message: str) -> None:
        if message and (not run.messages or run.messages[-1] != message):
            run.messages.append(message)

    def dropped() -> int:
        return mailbox.dropped + (0 if stage is None else stage.out.dropped)

    try:
        while not (stop is not None and stop.is_set()) and (
            seconds is None or time.monotonic() - started < seconds
        ):
            item = inbox.take(timeout=session.config.camera_timeout)
            if item is None:
                if inbox.closed:
                    break
                message = pump.error or f"{source.name}: no frame for {session.config.camera_timeout:g} s"
                message += "; the last frame is kept"
                note(message)
                if last is None:  # nothing shown yet (a camera that never opened): say so all the same
                    yield LiveFrame(None, None, False, message, None, 0.0, session.retargeting), None
                else:
                    yield dataclasses.replace(last, fresh=False, message=message), None
                continue
            frame, tracked = (
                item if stage is not None else (item, session.track(item.image, item.captured_at))
            )
            session.stats.dropped = dropped()
            last = session.render(tracked)
            run.latencies.append((frame.captured_at - started, last.latency))
            note(last.message)
            yield last, frame
    finally:
        if stage is not None:
            stage.stop()
        pump.stop()
        session.stats.dropped = dropped()
        run.summary = {**session.summary(), "source_frames": mailbox.put_count, "source_fps": source.fps,
                       "seconds": time.monotonic() - started}  # fmt: skip
        if pump.error:
            note(pump.error)
    if stage is not None and stage.error is not None:
        raise stage.error


def run_live(
    session: LiveSession,
    source: FrameSource,
    on_frame: Callable[[LiveFrame, TimedFrame | None, str], None] | None = None,
    seconds: float | None = None,
    stop: threading.Event | None = None,
    retry_camera: bool = True,
    pipeline: bool = False,
) -> LiveRun:
    """`live_frames` to the end, each result handed to on_frame(result, its frame or None, message)."""
    run = LiveRun(summary={})
    for result, frame in live_frames(session, source, seconds, stop, retry_camera, run, pipeline):
        if on_frame is not None:
            on_frame(result, frame, result.message)
    return run


__all__ = [
    "CameraLost",
    "FramePump",
    "FrameSource",
    "LatencyStats",
    "LatestFrame",
    "LiveConfig",
    "LiveFrame",
    "LiveRecorder",
    "LiveRun",
    "LiveSession",
    "MjpegServer",
    "TimedFrame",
    "TrackedFrame",
    "TrackingStage",
    "VideoFileSource",
    "camera_source",
    "encode_jpeg",
    "live_frames",
    "run_live",
    "synthetic_camera_clip",
    "synthetic_camera_frames",
    "write_camera_clip",
]
