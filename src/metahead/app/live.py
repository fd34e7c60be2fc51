"""The app's Live tab without the page: one live session (metahead.live) per browser tab.

    sessions = LiveSessions(service)
    view = sessions.frame("tab-id", avatar_path, camera_image, retarget="auto")   # None: dropped
    sessions.set_neutral("tab-id"); print(sessions.idle_status("tab-id")); sessions.close("tab-id")

The browser sends camera frames while none is being processed (Gradio's webcam stream skips a capture
while the last one is pending); a frame that still arrives while its tab's session is busy is dropped
here too, never queued. A tab whose frames stop (camera unplugged, stream stopped) keeps showing the last
avatar frame; `idle_status` says how long nothing came. A video file can be played as a camera
(`play_file`): frames at its own rate, the newest one processed, late ones dropped.

Landmark detectors (dlib's: ~70 MB and seconds to load each) are shared by all tabs: a frame borrows one
for its processing, so there are only as many as frames processed at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metahead.app.service import AppInputError, AppService, check_video, display_name
from metahead.live import RETARGET_MODES, LiveConfig, LiveFrame, LiveSession, VideoFileSource, live_frames


@dataclass
class LiveView:
    """What the page shows for one frame."""

    panel: np.ndarray | None  # driver crop | landmarks | avatar at the avatar's size; None: keep the last
    status: str  # Markdown
    fresh: bool


@dataclass
class _Tab:
    session: LiveSession
    avatar_path: Path
    lock: threading.Lock
    last_frame_at: float
    played_file: bool = False  # the last frames came from a video file that ended: no camera to miss


class DetectorPool:
    """Landmark detectors made on demand and lent one at a time: as many exist as were ever in use at once."""

    def __init__(self, factory: Callable[[], Any]):
        self._factory = factory
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()

    @contextlib.contextmanager
    def borrow(self) -> Iterator[Any]:
        try:
            detector = self._free.get_nowait()
        except queue.Empty:
            detector = self._factory()
        try:
            yield detector
        finally:
            self._free.put(detector)


class LiveSessions:
    """Live sessions of the app's browser tabs, at most `max_sessions` (the least recently used goes)."""

    def __init__(
        self,
        service: AppService,
        config: LiveConfig | None = None,
        max_sessions: int = 8,
        detector_factory: Callable[[], Any] | None = None,
    ):
        from metahead.landmarks.detect import make_detector

        self.service = service
        self.config = config or LiveConfig()
        self.max_sessions = max_sessions
        self._detectors = DetectorPool(
            detector_factory or (lambda: make_detector("dlib", detect_max_side=self.config.detect_max_side))
        )
        self._tabs: OrderedDict[str, _Tab] = OrderedDict()
        self._lock = threading.Lock()

    def _tab(self, key: str, avatar_path: str | os.PathLike | None, retarget: str) -> _Tab:
        if avatar_path is None:
            raise AppInputError("make an avatar (or open an avatar file) first, then start the camera")
        if retarget not in RETARGET_MODES:
            raise AppInputError(f"retarget must be one of {', '.join(RETARGET_MODES)}, got {retarget!r}")
        path = Path(avatar_path).resolve()
        with self._lock:
            tab = self._tabs.get(key)
            if tab is not None and tab.avatar_path == path:
                self._tabs.move_to_end(key)
                tab.session.set_retarget(retarget)
                return tab
        avatar = self.service.avatar(path)  # AppInputError when it is not one of the app's
        with self._detectors.borrow() as detector:  # lent again for each frame (_process)
            session = LiveSession(avatar, dataclasses.replace(self.config, retarget=retarget), detector)
        tab = _Tab(session, path, threading.Lock(), time.monotonic())
        with self._lock:
            self._tabs[key] = tab
            while len(self._tabs) > self.max_sessions:
                self._tabs.popitem(last=False)
        return tab

    def frame(
        self, key: str, avatar_path: str | os.PathLike | None, image: Any, retarget: str = "auto"
    ) -> LiveView | None:
        """One camera frame of tab `key`; None when that tab's previous frame is still being processed
        (this one is dropped)."""
        arrived = time.monotonic()
        if image is None:
            return None
        tab = self._tab(key, avatar_path, retarget)
        if not tab.lock.acquire(blocking=False):
            tab.session.stats.dropped += 1
            return None
        try:
            tab.last_frame_at, tab.played_file = arrived, False
            with self._detectors.borrow() as detector:
                tab.session.tracker.detector = detector
                result = tab.session.process(np.asarray(image), arrived)
        except ValueError as err:
            raise AppInputError(str(err)) from None
        finally:
            tab.lock.release()
        return self._view(tab.session, result)

    def _view(self, session: LiveSession, result: LiveFrame) -> LiveView:
        panel = result.panel if result.fresh else None
        return LiveView(panel, live_status(session, result.message), result.fresh)

    def play_file(
        self, key: str, avatar_path: str | os.PathLike | None, video: str | os.PathLike | None, retarget: str
    ) -> Iterator[LiveView]:
        """A video file played as a camera at its own frame rate (the newest frame processed, late frames
        dropped): one view per processed frame."""
        check_video(video, self.service.cfg, "video")
        tab = self._tab(key, avatar_path, retarget)
        tab.session.reset()
        source = VideoFileSource(video)
        source.name = display_name(video)
        with tab.lock, self._detectors.borrow() as detector:
            tab.session.tracker.detector = detector
            for result, _ in live_frames(tab.session, source):
                tab.last_frame_at = time.monotonic()
                yield self._view(tab.session, result)
            tab.played_file = True
        yield LiveView(None, live_status(tab.session, "") + f"  \nPlayed `{source.name}` to its end.", False)

    def set_neutral(self, key: str) -> str:
        with self._lock:
            tab = self._tabs.get(key)
        if tab is None:
            return "Start the camera first: the neutral face is taken from it."
        if tab.session.set_neutral():
            return "Neutral face set: expressions are now measured against this frame."
        return "No face in view now: the next face seen becomes the neutral one."

    def idle_status(self, key: str) -> str | None:
        """A message when tab `key` had frames but none for camera_timeout seconds; else None."""
        with self._lock:
            tab = self._tabs.get(key)
        if tab is None or tab.session.stats.frames == 0 or tab.played_file:
            return None
        idle = time.monotonic() - tab.last_frame_at
        if idle < self.config.camera_timeout:
            return None
        return live_status(
            tab.session,
            f"no camera frame for {idle:.0f} s (camera stopped or unplugged?): the last frame is kept",
        )

    def summary(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            tab = self._tabs.get(key)
        return None if tab is None else tab.session.summary()

    def close(self, key: str) -> None:
        with self._lock:
            self._tabs.pop(key, None)


def live_status(session: LiveSession, message: str) -> str:
    """The Live tab's status: the problem (red) if any, the figures, whether the face is retargeted."""
    lines = []
    if message:
        lines.append(f'<span class="mh-error">**⚠ {html.escape(message, quote=False)}**</span>')
    lines.append(f"**Live:** {session.stats.describe()}. Latency: frame received → avatar frame ready.")
    if session.neutral is not None:
        how = (
            "retargeted onto the avatar's face"
            if session.retargeting
            else "the driver's landmarks used as they are"
        )
        lines.append(f"Expression {how} (face-shape distance to the avatar {session.shape_distance:.3f}).")
    return "  \n".join(lines)


__all__ = ["DetectorPool", "LiveSessions", "LiveView", "live_status"]
