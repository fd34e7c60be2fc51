"""The web app's work without the web page (AppService): making avatars, driving them, CSIM.

    service = AppService(AppConfig(model=Path("runs/demo/model.pt")))
    made = service.make_avatar(photos=["me1.png", "me2.png"], mode="ft", steps=40)
    result = service.animate(made.avatar_path, driver_name=service.driver_names()[0], retarget="auto")
    print(result.video, result.csim)

Everything here takes and returns paths, numbers and text (results.py), so tests call it directly; `ui.py`
only wires it to Gradio components. Its pieces: settings.py (AppConfig), model_lookup.py (which model),
uploads.py (checks of uploads; input the page should refuse raises AppInputError with a message meant for
a person), results.py (what requests return, CSIM).

Work folder: every request writes into its own folder `WORK/jobs/.<id>.partial` and renames it to
`WORK/jobs/<id>` only when everything in it is complete; a failed request removes its folder, so no
half-written avatar or video is ever left. Single files are written atomically as well (fileio).
The synthetic drivers are rendered once per image size into `WORK/drivers/` the same way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metahead.app.model_lookup import ModelInfo, load_model_info
from metahead.app.results import AnimationResult, AvatarResult, animation_summary, mean_csim
from metahead.app.settings import AppConfig
from metahead.app.uploads import (
    AppInputError,
    FaceCountingDetector,
    check_photos,
    check_upload_size,
    check_video,
    display_name,
    with_upload_names,
)
from metahead.avatar import (
    Avatar,
    AvatarError,
    InputWarning,
    driving_sequence,
    evenly_spaced,
    faces_from_photos,
    faces_from_video,
)
from metahead.data.format import DataError
from metahead.data.video_io import enlarge_frames

# What a progress report looks like: (fraction done in [0, 1] or None, what is happening).
ProgressFn = Callable[[float | None, str], None]

MODES = {"ft": "fine-tuned (FT)", "ff": "feed-forward (FF)"}
RETARGET_CHOICES = ("auto", "on", "off")
# The synthetic drivers: people of the synthetic corpus generator under a seed of their own, so no corpus
# made with the default seed (the demo's) holds them.
DRIVER_SEED = 2019
SYNTHETIC_DRIVERS = {"synthetic person 1": 0, "synthetic person 2": 1, "synthetic person 3": 2}


# =========================================================================================================
# The service
# =========================================================================================================


class AppService:
    """The app's state shared by all browser sessions: the model, the work folder, the synthetic drivers,
    a few loaded avatars. Safe to call from several threads at once (Gradio runs requests in threads)."""

    def __init__(self, cfg: AppConfig, detector_factory: Callable[[], Any] | None = None):
        import torch

        self.cfg = cfg
        self.device = cfg.device
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self._own_work_dir = cfg.work_dir is None
        self.work_dir = (
            Path(tempfile.mkdtemp(prefix="metahead-app-"))
            if cfg.work_dir is None
            else Path(cfg.work_dir).expanduser().resolve()
        )
        (self.work_dir / "jobs").mkdir(parents=True, exist_ok=True)
        self._remove_partial_folders()
        self.model = load_model_info(cfg.model, self.device)
        self._detector_factory = detector_factory or _dlib_detector
        self._local = threading.local()  # one landmark detector per worker thread
        self._lock = threading.Lock()
        self._drivers_lock = threading.Lock()
        self._identity_net: Any = None
        self._avatars: OrderedDict[Path, Any] = OrderedDict()  # a few loaded avatars, newest last

    # --- housekeeping -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Remove the work folder if the app made it (a --work-dir given by the user stays)."""
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _remove_partial_folders(self) -> None:
        """Folders an interrupted earlier run (e.g. killed mid-request) left unfinished."""
        for parent in (self.work_dir / "jobs", self.work_dir / "drivers"):
            if parent.is_dir():
                for path in parent.glob(".*.partial"):
                    shutil.rmtree(path, ignore_errors=True)

    @contextlib.contextmanager
    def _job(self, kind: str) -> Iterator[tuple[Path, Path]]:
        """(folder to write into, the folder's final path): renamed into place only when the block
        finishes; removed whole when it fails."""
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{uuid.uuid4().hex[:8]}"
        final = self.work_dir / "jobs" / name
        partial = final.with_name(f".{name}.partial")
        partial.mkdir(parents=True)
        try:
            yield partial, final
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        os.replace(partial, final)

    def detector(self) -> Any:
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = self._local.detector = self._detector_factory()
        return detector

    def identity_net(self) -> Any:
        with self._lock:
            if self._identity_net is None:
                from metahead.models.face_identity import FaceIdentityNet

                self._identity_net = FaceIdentityNet.from_dlib_file().eval()
            return self._identity_net

    def _require_model(self) -> ModelInfo:
        if not self.model.ok:
            raise AppInputError(self.model.error or "no model")
        return self.model

    # --- making an avatar -------------------------------------------------------------------------------

    def default_steps(self, shots: int = 8) -> int:
        """The model's fine-tuning steps for T = `shots` (finetune.steps_for: more above T = 8 in the demo and
        real-64 presets), within the page's max_finetune_steps."""
        steps = self.model.cfg.finetune.steps_for(max(1, int(shots))) if self.model.ok else 50
        return max(0, min(int(steps), self.cfg.max_finetune_steps))

    def person_frames(
        self, photos: Sequence[str | os.PathLike] | None, video: str | os.PathLike | None, shots: int
    ) -> Any:
        """The face crops an avatar is made from (avatar.FaceFrames, at the model's size), checked: every
        photo (or the video's frames looked at) shows exactly one face unless refuse_several_faces is off."""
        size = self.model.cfg.model.image_size
        if photos and video:
            raise AppInputError("upload photos or a video, not both")
        if video:
            check_video(video, self.cfg, "video")
            if not 1 <= shots <= self.cfg.max_shots:
                raise AppInputError(f"frames from the video (T): 1 to {self.cfg.max_shots}, got {shots}")
            detector = FaceCountingDetector(self.detector())
            try:
                faces = faces_from_video(video, size, shots, detector=detector)
            except (DataError, ValueError) as err:
                raise AppInputError(with_upload_names(str(err), [video])) from None
            several = sum(c > 1 for c in detector.counts)
            if several and self.cfg.refuse_several_faces:
                raise AppInputError(
                    f"{display_name(video)}: {several} of the {len(detector.counts)} frames looked at show "
                    "more than one face; use a video of the person alone"
                )
            faces.sources = [with_upload_names(s, [video]) for s in faces.sources]
            return faces
        paths = check_photos(photos, self.cfg)
        detector = FaceCountingDetector(self.detector())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InputWarning)  # several faces: decided below
            try:
                faces = faces_from_photos(paths, size, detector=detector)
            except DataError as err:
                raise AppInputError(with_upload_names(str(err), paths)) from None
        crowded = [(p, c) for p, c in zip(paths, detector.counts) if c > 1]
        if crowded and self.cfg.refuse_several_faces:
            path, count = crowded[0]
            raise AppInputError(
                f"{display_name(path)}: {count} faces found; upload photos that show the person alone "
                "(or crop the others out)"
            )
        faces.sources = [display_name(p) for p in paths]
        return faces

    def make_avatar(
        self,
        photos: Sequence[str | os.PathLike] | None = None,
        video: str | os.PathLike | None = None,
        mode: str = "ft",
        steps: int | None = None,
        shots: int = 8,
        progress: ProgressFn | None = None,
    ) -> AvatarResult:
        """An avatar of the person in the photos (all of them used) or in T = `shots` frames of the video:
        fine-tuned for `steps` steps (FT) or feed-forward (FF). Written to WORK/jobs/<id>/person.avatar."""
        model = self._require_model()
        report = progress or (lambda fraction, text: None)
        if mode not in MODES:
            raise AppInputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if steps is not None and mode == "ft" and not 0 <= int(steps) <= self.cfg.max_finetune_steps:
            raise AppInputError(f"fine-tuning steps: 0 to {self.cfg.max_finetune_steps}, got {steps}")
        started = time.monotonic()
        report(0.0, "finding the face")
        faces = self.person_frames(photos, video, int(shots))
        steps = self.default_steps(len(faces)) if steps is None else int(steps)
        notes = []
        with self._job("avatar") as (folder, final):
            report(0.05, "fine-tuning" if mode == "ft" else "embedding")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", InputWarning)
                avatar = Avatar.create(
                    model.networks, frames=faces.frames, landmarks=faces.landmarks, finetune=mode == "ft",
                    steps=steps, device=self.device, amp=self.cfg.finetune_amp, progress=progress is not None,
                    curve_path=folder / "finetune.json" if mode == "ft" and steps > 0 else None,
                )  # fmt: skip
            notes += [str(w.message) for w in caught if issubclass(w.category, InputWarning)]
            avatar.info["model"] = str(model.path)
            avatar.info["sources"] = list(faces.sources)
            report(0.95, "saving the avatar")
            avatar.save(folder / "person.avatar")
        seconds = time.monotonic() - started
        path = final / "person.avatar"
        curve = final / "finetune.png"
        shots_used = len(faces)
        what = f"{MODES[mode]}, {steps} fine-tuning steps" if mode == "ft" else MODES[mode]
        summary = (
            f"**Avatar made** from {shots_used} {'photo' if photos else 'video frame'}"
            f"{'s' if shots_used != 1 else ''} ({what}) in {seconds:.0f} s."
        )
        if mode == "ft" and steps > 0:
            ft = avatar.info.get("finetune", {})
            if "content_first" in ft:
                summary += f" Content loss {ft['content_first']:.3g} → {ft['content_last']:.3g}."
        self._remember(path, avatar)
        return AvatarResult(
            path, mode, shots_used, avatar.image_size, faces.frames,
            curve if curve.is_file() else None, summary, notes,
        )  # fmt: skip

    def open_avatar(self, path: str | os.PathLike) -> AvatarResult:
        """An avatar file made earlier (`metahead avatar` or this app), copied into the work folder."""
        path = Path(path)
        check_upload_size(path, self.cfg)
        try:
            avatar = Avatar.load(path, device=self.device)
        except (AvatarError, FileNotFoundError) as err:
            raise AppInputError(with_upload_names(str(err), [path])) from None
        with self._job("opened") as (folder, final):
            shutil.copyfile(path, folder / "person.avatar")
        copy = final / "person.avatar"
        self._remember(copy, avatar)
        shots = 0 if avatar.source_frames is None else len(avatar.source_frames)
        size = avatar.image_size
        summary = (
            f"**Avatar opened:** `{display_name(path)}` ({MODES[avatar.mode]}, {size}×{size} pixels, "
            f"made from {shots or 'unknown'} frame{'s' if shots != 1 else ''})."
        )
        return AvatarResult(copy, avatar.mode, shots, size, avatar.source_frames, None, summary)

    def _remember(self, path: Path, avatar: Any) -> None:
        with self._lock:
            self._avatars[path] = avatar
            self._avatars.move_to_end(path)
            while len(self._avatars) > 4:
                self._avatars.popitem(last=False)

    def avatar(self, path: str | os.PathLike) -> Any:
        """A loaded avatar of the work folder (kept loaded while in use)."""
        path = Path(path).resolve()
        if self.work_dir.resolve() not in path.parents:
            raise AppInputError("that avatar is not one of this app's: make or open an avatar first")
        with self._lock:
            if path in self._avatars:
                self._avatars.move_to_end(path)
                return self._avatars[path]
        if not path.is_file():
            raise AppInputError("the avatar is gone (the app was restarted?): make or open an avatar again")
        try:
            avatar = Avatar.load(path, device=self.device)
        except AvatarError as err:
            raise AppInputError(str(err)) from None
        self._remember(path, avatar)
        return avatar

    # --- drivers ----------------------------------------------------------------------------------------

    def driver_names(self) -> list[str]:
        return list(SYNTHETIC_DRIVERS)

    def drivers_root(self, size: int) -> Path:
        """The synthetic drivers at `size`² as a dataset (DATA/videos/<person>/v00), rendered on first use."""
        from metahead.data.format import DatasetInfo, write_info, write_video
        from metahead.data.synthetic import make_video

        final = self.work_dir / "drivers" / f"{size}px-{self.cfg.driver_frames}f"
        with self._drivers_lock:
            if final.is_dir():
                return final
            partial = final.with_name(f".{final.name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            try:
                write_info(partial, DatasetInfo(image_size=size, frame_codec="jpeg", source="synthetic"))
                scale = max(1, round(self.cfg.video_size / size))
                for name, index in SYNTHETIC_DRIVERS.items():
                    renderer, motion = make_video(DRIVER_SEED, index, 0, self.cfg.driver_frames, size)
                    frames = np.stack([frame.image for frame in renderer.render(motion)])
                    write_video(partial, _driver_rel(name), frames, renderer.landmarks(motion), codec="jpeg")
                    _write_video(
                        partial / "previews" / f"{_driver_rel(name)}.mp4", enlarge_frames(frames, scale), 25.0
                    )
                os.replace(partial, final)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        return final

    def _driver_size(self) -> int:
        return self.model.cfg.model.image_size if self.model.ok else 64

    def driver_folder(self, name: str, size: int | None = None) -> Path:
        if name not in SYNTHETIC_DRIVERS:
            raise AppInputError(f"unknown driver {name!r}; choose one of {', '.join(SYNTHETIC_DRIVERS)}")
        return self.drivers_root(size or self._driver_size()) / "videos" / _driver_rel(name)

    def driver_preview(self, name: str, size: int | None = None) -> Path:
        """An mp4 of the synthetic driver (enlarged), for the page."""
        if name not in SYNTHETIC_DRIVERS:
            raise AppInputError(f"unknown driver {name!r}; choose one of {', '.join(SYNTHETIC_DRIVERS)}")
        return self.drivers_root(size or self._driver_size()) / "previews" / f"{_driver_rel(name)}.mp4"

    # --- animating --------------------------------------------------------------------------------------

    def animate(
        self,
        avatar_path: str | os.PathLike | None,
        driver_name: str | None = None,
        driver_video: str | os.PathLike | None = None,
        retarget: str = "auto",
        progress: ProgressFn | None = None,
    ) -> AnimationResult:
        """Drive the avatar with a synthetic driver or an uploaded video; writes the result and the
        side-by-side view (driver | landmarks | result) as mp4 and measures CSIM to the avatar's photos."""
        report = progress or (lambda fraction, text: None)
        if avatar_path is None:
            raise AppInputError("make an avatar (or open an avatar file) first")
        if retarget not in RETARGET_CHOICES:
            raise AppInputError(f"retarget must be one of {', '.join(RETARGET_CHOICES)}, got {retarget!r}")
        started = time.monotonic()
        avatar = self.avatar(avatar_path)
        size = avatar.image_size
        report(0.0, "reading the driver")
        if driver_video:
            check_video(driver_video, self.cfg, "driving video")
            try:
                sequence = driving_sequence(
                    driver_video, size, detector=self.detector(), max_frames=self.cfg.max_driver_frames
                )
            except (DataError, ValueError) as err:
                raise AppInputError(with_upload_names(str(err), [driver_video])) from None
            driver_label = display_name(driver_video)
        elif driver_name:
            folder = self.driver_folder(driver_name, size)
            sequence = driving_sequence(folder, size, max_frames=self.cfg.max_driver_frames)
            driver_label = driver_name
        else:
            raise AppInputError("choose a synthetic driver or upload a driving video")
        animation = avatar.animate(
            sequence, retarget={"auto": None, "on": True, "off": False}[retarget], side_by_side=True
        )
        scale = max(1, round(self.cfg.video_size / size))
        results: list[np.ndarray] = []  # the avatar's frames at its own size (CSIM, the second video)

        def side_by_side() -> Iterator[np.ndarray]:
            for frame in animation:
                results.append(np.ascontiguousarray(frame[:, 2 * size :]))
                report(0.05 + 0.8 * len(results) / len(animation), f"rendering frame {len(results)}")
                yield enlarge_frames(frame[None], scale)[0]

        with self._job("animation") as (folder, final):
            audio = sequence.audio_source
            _write_video(folder / "side-by-side.mp4", side_by_side(), animation.fps, audio)
            report(0.87, "writing the video")
            enlarged = (enlarge_frames(frame[None], scale)[0] for frame in results)
            _write_video(folder / "animation.mp4", enlarged, animation.fps, audio)
        csim_value = None
        if self.cfg.csim_frames and avatar.source_frames is not None and avatar.source_landmarks is not None:
            report(0.95, "measuring CSIM")
            pick = evenly_spaced(len(results), min(len(results), self.cfg.csim_frames))
            csim_value = mean_csim(
                self.identity_net(), np.stack([results[i] for i in pick]), animation.landmarks[pick],
                avatar.source_frames, avatar.source_landmarks,
            )  # fmt: skip
        seconds = time.monotonic() - started
        summary = animation_summary(animation, driver_label, csim_value, seconds)
        return AnimationResult(
            final / "animation.mp4", final / "side-by-side.mp4", len(animation), animation.fps,
            animation.retargeted, float(animation.shape_distance), animation.missing_faces, csim_value,
            seconds, summary,
        )  # fmt: skip


def _driver_rel(name: str) -> str:
    return f"person{SYNTHETIC_DRIVERS[name] + 1}/v00"


def _write_video(path: Path, frames: Iterable[np.ndarray], fps: float, audio_from: str | None = None) -> None:
    from metahead.data.video_io import write_video_file

    path.parent.mkdir(parents=True, exist_ok=True)
    write_video_file(path, frames, fps, audio_from=audio_from)


def _dlib_detector() -> Any:
    from metahead.data.prepare.config import PrepareConfig
    from metahead.landmarks.detect import make_detector

    prepare = PrepareConfig()  # the crops avatars are made with (metahead.avatar uses prepare's settings too)
    return make_detector(prepare.detector, **prepare.detector_options)


__all__ = [
    "DRIVER_SEED",
    "MODES",
    "RETARGET_CHOICES",
    "SYNTHETIC_DRIVERS",
    "AppService",
]
