"""The web app's work without the web page: checking uploads, making avatars, driving them, CSIM.

    service = AppService(AppConfig(model=Path("runs/demo/model.pt")))
    made = service.make_avatar(photos=["me1.png", "me2.png"], mode="ft", steps=40)
    result = service.animate(made.avatar_path, driver_name=service.driver_names()[0], retarget="auto")
    print(result.video, result.csim)

Everything here takes and returns paths, numbers and text, so tests call it directly; `ui.py` only wires
it to Gradio components. Input the page should refuse raises AppInputError with a message meant for a
person (naming the uploaded file by its own name, not the server's temporary path).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
from metahead.fileio import read_weights_file

# What a progress report looks like: (fraction done in [0, 1] or None, what is happening).
ProgressFn = Callable[[float | None, str], None]

MODES = {"ft": "fine-tuned (FT)", "ff": "feed-forward (FF)"}
RETARGET_CHOICES = ("auto", "on", "off")
DEMO_OUTPUT = "demo-output"  # `make demo` runs `metahead demo --out demo-output` in the checkout
# The synthetic drivers: people of the synthetic corpus generator under a seed of their own, so no corpus
# made with the default seed (the demo's) holds them.
DRIVER_SEED = 2019
SYNTHETIC_DRIVERS = {"synthetic person 1": 0, "synthetic person 2": 1, "synthetic person 3": 2}
MEGABYTE = 1024 * 1024


class AppInputError(ValueError):
    """Input the page refuses; the message is shown as it is."""


@dataclass
class AppConfig:
    """Settings of `metahead app` (the CLI maps its flags onto these)."""

    model: Path | None = None  # model file; None: the model `make demo` trains (demo_model_candidates)
    host: str = "127.0.0.1"
    port: int = 7860
    work_dir: Path | None = None  # avatars and videos made; None: a new temporary folder, removed at exit
    device: str = "cpu"  # cpu, cuda, cuda:1, or auto
    threads: int = 0  # torch threads of the app's process (launch); 0: $OMP_NUM_THREADS or the idle cores
    concurrency: int = 2  # long requests (making, animating) running at once; more wait in the queue
    # limits on what the page accepts
    max_photos: int = 32
    max_upload_mb: float = 50.0  # any one uploaded file
    max_image_pixels: int = 40_000_000
    max_video_seconds: float = 20.0  # a person's video or a driving video
    max_shots: int = 32  # T taken from a video
    max_finetune_steps: int = 300
    max_driver_frames: int = 500  # rendered frames of one animation
    refuse_several_faces: bool = True  # a photo or video frame with several faces is refused (else: largest)
    # output
    driver_frames: int = 75  # length of the synthetic drivers (3 s at 25 fps)
    video_size: int = 256  # result videos are enlarged to about this height
    csim_frames: int = 16  # result frames compared with the photos for CSIM
    # the Live tab: the browser sends a camera frame this often at most (none while one is processed)
    live_stream_every: float = 0.04

    def __post_init__(self) -> None:
        for name in ("max_photos", "max_shots", "max_driver_frames", "driver_frames", "video_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"AppConfig.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_upload_mb", "max_video_seconds", "max_image_pixels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"AppConfig.{name} must be positive, got {getattr(self, name)}")
        if self.concurrency < 1 or self.max_finetune_steps < 0 or self.csim_frames < 0:
            raise ValueError("AppConfig: concurrency >= 1, max_finetune_steps >= 0 and csim_frames >= 0")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"AppConfig.port must be 0..65535, got {self.port}")


# =========================================================================================================
# The model: given, or the one `make demo` trains
# =========================================================================================================


def demo_model_path(out: str | os.PathLike) -> Path:
    """Where `metahead demo --out OUT` writes its meta-trained model (demo.py: OUT/work/run/model.pt)."""
    from metahead.demo import WORK

    return Path(out) / WORK / "run" / "model.pt"


# Where the app looks for `make demo`'s model when no --model is given, in this order (docs/app.md).
STARTED_IN = "the folder the app was started in"
IN_CHECKOUT = "the source checkout metahead runs from"


def source_checkout() -> Path | None:
    """The source checkout this package runs from (`make install`, `pip install -e .` or PYTHONPATH=src);
    None for an installed package, which has none."""
    root = Path(__file__).resolve().parents[3]  # src/metahead/app/service.py -> the checkout
    return root if (root / "pyproject.toml").is_file() and (root / "Makefile").is_file() else None


def demo_model_candidates(cwd: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """(model file, where) for each place the model `make demo` trains is looked for, in order:
    demo-output/ under the folder the app is started in (`cwd`), then under the source checkout (when
    metahead runs from one and it is another folder), so an app started elsewhere still finds the model
    `make demo` trained in the clone."""
    here = (Path(cwd) if cwd is not None else Path.cwd()).resolve()
    candidates = [(demo_model_path(here / DEMO_OUTPUT), STARTED_IN)]
    checkout = source_checkout()
    if checkout is not None and checkout != here:
        candidates.append((demo_model_path(checkout / DEMO_OUTPUT), IN_CHECKOUT))
    return candidates


@dataclass
class ModelInfo:
    """The model the app makes avatars with, or why there is none."""

    path: Path
    is_demo_default: bool  # no --model given: the model `make demo` trains
    found_in: str | None = None  # the default's place (STARTED_IN, IN_CHECKOUT); None: not found or given
    networks: tuple | None = None  # (E, G, D, cfg) as checkpoint.load_model returns, when it loaded
    step: int | None = None
    error: str | None = None  # why it cannot be used

    @property
    def ok(self) -> bool:
        return self.networks is not None

    @property
    def cfg(self) -> Any:
        return None if self.networks is None else self.networks[3]

    def shown_path(self) -> str:
        """The path as the page shows it: relative to the folder the app was started in, when inside it."""
        try:
            return str(self.path.relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(self.path)

    def describe(self) -> str:
        """One Markdown paragraph for the page."""
        origin = (
            f"the model `make demo` trains, found in {self.found_in} (no `--model` given)"
            if self.is_demo_default
            else "given by `--model`"
        )
        if self.ok:
            size = self.cfg.model.image_size
            step = f", meta-trained {self.step} steps" if self.step else ""
            shape = f"{size}×{size} pixels, preset `{self.cfg.preset}`{step}"
            return f"**Model:** `{self.shown_path()}` — {origin}; {shape}."
        return f"**No model to make avatars with.** {self.error}"


def load_model_info(path: Path | None, device: str) -> ModelInfo:
    """Load the model once for the whole app; a missing or unusable file becomes an error message.
    path None: the first of demo_model_candidates that exists."""

    from metahead.training import checkpoint

    is_default, found_in = path is None, None
    if is_default:
        candidates = demo_model_candidates()
        found = next(((file, where) for file, where in candidates if file.is_file()), None)
        if found is None:
            looked = " nor at ".join(f"`{file}` ({where})" for file, where in candidates)
            error = (
                f"No `--model` given, and `make demo` has made no model at {looked}. Run `make demo` in "
                "the checkout first (about 10 minutes on two cores), or start the app with "
                "`metahead app --model RUN/model.pt`. You can still open avatar files made earlier."
            )
            return ModelInfo(candidates[0][0], True, error=error)
        path, found_in = found
    else:
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            error = f"`{path}`: no such model file (`--model`). You can still open avatar files made earlier."
            return ModelInfo(path, False, error=error)
    try:
        networks = checkpoint.load_model(path, map_location=device)
        step = read_weights_file(path, mmap=True).get("step")
    except (checkpoint.CheckpointError, OSError, ValueError, KeyError) as err:
        which = f"`{path}` (the model `make demo` trains, found in {found_in}): " if is_default else ""
        return ModelInfo(path, is_default, found_in, error=f"{which}this model file cannot be used: {err}")
    return ModelInfo(
        path, is_default, found_in, networks=networks, step=int(step) if step is not None else None
    )


# =========================================================================================================
# Checks of uploads
# =========================================================================================================


def display_name(path: str | os.PathLike) -> str:
    """An uploaded file's own name (uploads sit in the server's temporary folders under their names)."""
    return Path(path).name


def _named(message: str, paths: Sequence[str | os.PathLike]) -> str:
    """A lower layer's message with the server's paths replaced by the uploaded files' names."""
    for path in sorted({str(p) for p in paths}, key=len, reverse=True):
        message = message.replace(path, display_name(path))
    return message


def _check_size(path: Path, cfg: AppConfig) -> None:
    if not path.is_file():
        raise AppInputError(f"{display_name(path)}: the upload did not arrive; upload it again")
    size = path.stat().st_size
    if size > cfg.max_upload_mb * MEGABYTE:
        raise AppInputError(
            f"{display_name(path)}: {size / MEGABYTE:.1f} MB, "
            f"larger than the {cfg.max_upload_mb:g} MB allowed"
        )
    if size == 0:
        raise AppInputError(f"{display_name(path)}: the file is empty")


def check_photos(paths: Sequence[str | os.PathLike] | None, cfg: AppConfig) -> list[Path]:
    """1 to max_photos readable image files, each within the size limits; AppInputError naming the first
    that is not."""
    from PIL import Image

    from metahead.data.video_io import IMAGE_EXTENSIONS, is_image_file

    paths = [Path(p) for p in paths or []]
    if not paths:
        raise AppInputError(f"upload 1 to {cfg.max_photos} photos of the person, or a video")
    if len(paths) > cfg.max_photos:
        raise AppInputError(f"{len(paths)} photos uploaded; at most {cfg.max_photos} are used: upload fewer")
    for path in paths:
        name = display_name(path)
        if not is_image_file(path):
            allowed = " ".join(sorted(IMAGE_EXTENSIONS))
            raise AppInputError(f"{name}: not a photo (the file name should end in one of {allowed})")
        _check_size(path, cfg)
        try:
            with Image.open(path) as image:
                width, height = image.size
                image.verify()  # reads the whole file: a truncated or fake image fails here
        except Exception:  # Pillow raises many types for files that are not images
            raise AppInputError(f"{name}: not an image that can be read (is it really a photo?)") from None
        if width * height > cfg.max_image_pixels:
            raise AppInputError(
                f"{name}: {width}×{height} pixels, more than the {cfg.max_image_pixels / 1e6:g} megapixels "
                "allowed; scale it down"
            )
    return paths


def check_video(path: str | os.PathLike | None, cfg: AppConfig, role: str = "video") -> Any:
    """A readable video within the size and length limits; returns its data.video_io.VideoInfo."""
    from metahead.data.video_io import VIDEO_EXTENSIONS, VideoReadError, iter_video_frames, probe_video

    if path is None:
        raise AppInputError(f"upload a {role}")
    path = Path(path)
    name = display_name(path)
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        allowed = " ".join(sorted(VIDEO_EXTENSIONS))
        raise AppInputError(f"{name}: not a video (the file name should end in one of {allowed})")
    _check_size(path, cfg)
    try:
        info = probe_video(path)
        seconds = info.duration or (info.num_frames / info.fps if info.num_frames and info.fps else 0.0)
        if seconds <= 0:  # the container does not say: count frames, up to the limit
            limit = int(cfg.max_video_seconds * (info.fps or 25.0)) + 1
            counted = sum(1 for _ in iter_video_frames(path, max_frames=limit, check_truncation=False))
            seconds = counted / (info.fps or 25.0)
    except VideoReadError as err:
        raise AppInputError(f"{name}: not a video that can be read ({_named(str(err), [path])})") from None
    if seconds > cfg.max_video_seconds:
        raise AppInputError(
            f"{name}: {seconds:.1f} s long; {role}s of up to {cfg.max_video_seconds:g} s are accepted: "
            "cut it shorter"
        )
    return info


# =========================================================================================================
# Results
# =========================================================================================================


@dataclass
class AvatarResult:
    avatar_path: Path  # the avatar file (downloadable)
    mode: str  # "ft" or "ff"
    shots: int  # T
    image_size: int
    crops: np.ndarray | None  # (T, S, S, 3) uint8: the frames it was made from
    curve_png: Path | None  # fine-tuning loss curve
    summary: str  # Markdown
    notes: list[str] = field(default_factory=list)  # warnings worth showing


@dataclass
class AnimationResult:
    video: Path  # the animated avatar (downloadable)
    side_by_side: Path  # driver | landmarks | result
    frames: int
    fps: float
    retargeted: bool
    shape_distance: float
    missing_faces: int
    csim: float | None  # result frames vs the avatar's photos; None when the avatar file holds no photos
    seconds: float
    summary: str  # Markdown


def mean_csim(
    net: Any,
    frames: np.ndarray,
    landmarks: np.ndarray,
    photos: np.ndarray,
    photo_landmarks: np.ndarray,
) -> float:
    """Mean CSIM over all (result frame, photo) pairs: frames (F, S, S, 3) uint8 with landmarks (F, 68, 2),
    photos (T, S, S, 3) with theirs (evaluation.csim: dlib's face descriptors, cosine similarity)."""
    import torch

    from metahead.evaluation.csim import face_descriptors, mean_csim_to

    def descriptors(images: np.ndarray, points: np.ndarray) -> torch.Tensor:
        pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return face_descriptors(net, pixels, torch.from_numpy(np.asarray(points, np.float32)))

    return float(mean_csim_to(descriptors(frames, landmarks), descriptors(photos, photo_landmarks)).mean())


class _CountingDetector:
    """A landmark detector that remembers how many faces each image it looked at holds."""

    def __init__(self, detector: Any):
        self.detector = detector
        self.name = getattr(detector, "name", "detector")
        self.counts: list[int] = []

    def detect(self, image: np.ndarray) -> list[Any]:
        faces = [f for f in self.detector.detect(image) if np.isfinite(f.landmarks).all()]
        self.counts.append(len(faces))
        return faces

    def detect_boxes(self, image: np.ndarray) -> list[Any]:
        return self.detector.detect_boxes(image)

    def fit(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        return self.detector.fit(image, box)


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

    def default_steps(self) -> int:
        steps = self.model.cfg.finetune.steps if self.model.ok else 50
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
            detector = _CountingDetector(self.detector())
            try:
                faces = faces_from_video(video, size, shots, detector=detector)
            except (DataError, ValueError) as err:
                raise AppInputError(_named(str(err), [video])) from None
            several = sum(c > 1 for c in detector.counts)
            if several and self.cfg.refuse_several_faces:
                raise AppInputError(
                    f"{display_name(video)}: {several} of the {len(detector.counts)} frames looked at show "
                    "more than one face; use a video of the person alone"
                )
            faces.sources = [_named(s, [video]) for s in faces.sources]
            return faces
        paths = check_photos(photos, self.cfg)
        detector = _CountingDetector(self.detector())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InputWarning)  # several faces: decided below
            try:
                faces = faces_from_photos(paths, size, detector=detector)
            except DataError as err:
                raise AppInputError(_named(str(err), paths)) from None
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
        steps = self.default_steps() if steps is None else int(steps)
        if mode == "ft" and not 0 <= steps <= self.cfg.max_finetune_steps:
            raise AppInputError(f"fine-tuning steps: 0 to {self.cfg.max_finetune_steps}, got {steps}")
        started = time.monotonic()
        report(0.0, "finding the face")
        faces = self.person_frames(photos, video, int(shots))
        notes = []
        with self._job("avatar") as (folder, final):
            report(0.05, "fine-tuning" if mode == "ft" else "embedding")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", InputWarning)
                avatar = Avatar.create(
                    model.networks, frames=faces.frames, landmarks=faces.landmarks, finetune=mode == "ft",
                    steps=steps, device=self.device, progress=progress is not None,
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
        _check_size(path, self.cfg)
        try:
            avatar = Avatar.load(path, device=self.device)
        except (AvatarError, FileNotFoundError) as err:
            raise AppInputError(_named(str(err), [path])) from None
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
                raise AppInputError(_named(str(err), [driver_video])) from None
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
        summary = _animation_summary(animation, driver_label, csim_value, seconds)
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
    from metahead.data.prepare import PrepareConfig
    from metahead.landmarks.detect import make_detector

    prepare = PrepareConfig()  # the crops avatars are made with (avatar.py uses prepare's settings too)
    return make_detector(prepare.detector, **prepare.detector_options)


def _animation_summary(animation: Any, driver: str, csim_value: float | None, seconds: float) -> str:
    retarget = (
        "retargeted onto the avatar's face" if animation.retargeted else "driver's landmarks used as they are"
    )
    lines = [
        f"**{len(animation)} frames** at {animation.fps:g} fps from `{driver}` in {seconds:.0f} s; "
        f"{retarget} "
        f"(face-shape distance driver → avatar {animation.shape_distance:.3f} eye distances).",
    ]
    if animation.missing_faces:
        lines.append(f"No face found in {animation.missing_faces} driver frames: the last pose was held.")
    if csim_value is None:
        lines.append("**CSIM:** not measured (the avatar file holds no photos to compare with).")
    else:
        lines.append(
            f"**CSIM to the photos: {csim_value:.3f}** (cosine similarity of dlib face descriptors, "
            "mean over result frames × photos; 1 = same direction)."
        )
    return "  \n".join(lines)


__all__ = [
    "AnimationResult",
    "AppConfig",
    "AppInputError",
    "AppService",
    "AvatarResult",
    "ModelInfo",
    "check_photos",
    "check_video",
    "demo_model_candidates",
    "demo_model_path",
    "load_model_info",
    "mean_csim",
]
