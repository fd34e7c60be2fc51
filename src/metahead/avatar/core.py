"""Avatars: a person made from a few photos or a video with a meta-learned model, then rendered and animated.

    avatar = Avatar.create("runs/cpu64/model.pt", images=["me1.jpg", "me2.jpg"], finetune=True)
    avatar.save("me.avatar")
    frame = Avatar.load("me.avatar").render(landmarks)          # (68, 2) -> (S, S, 3) uint8
    for frame in avatar.animate("driver.mp4"): ...               # retargeted onto the avatar's face

Making an avatar (paper Sec. 3.3): the T frames are cropped the way `metahead prepare` crops photos and
clips (data.face_crop, with prepare's settings), embedded by E (ê_NEW = mean over T), and then either
- fine-tuned (FT, `training.finetune`): G and ψ' = P ê_NEW trained on the T frames, or
- used feed-forward (FF): ψ̂ = P ê_NEW with the meta-learned G.
Either way the avatar keeps G's weights and the person's AdaIN parameters ψ as constants: rendering
never runs E or P again, and G's spectral normalisation is folded into its weights once (W / σ(W)), so
a frame costs one landmark drawing and one pass of G, batched. Rendering uses a copy of G prepared once
by `perf.prepare_generator_for_inference` (ψ a constant buffer, resampling kernels precomputed,
channels_last); `amp="auto"` renders in bf16 only where the hardware computes bf16 natively.

The avatar file (`Avatar.save`, torch.save of tensors and plain Python values only: it loads with
torch.load(weights_only=True)):

    format "metahead-avatar", version 1
    config            the model's ExperimentConfig as a dict (networks are rebuilt from it)
    mode              "ft" (fine-tuned) or "ff" (feed-forward)
    generator         G's state dict, spectral norm folded in (keys of Generator(spectral_norm=False))
    adain_params      ψ (1, num_adain_params) float32: ψ' (FT) or P ê_NEW (FF)
    person_embedding  ê_NEW (1, N) float32
    neutral_landmarks (68, 2) float32: the avatar's neutral face (retargeting's target shape)
    source_landmarks  (T, 68, 2) float32, source_frames (T, S, S, 3) uint8: the T crops it was made from
    info              dict of str/int/float: model file, its step, T, fine-tuning settings and losses, time

Written atomically; `Avatar.load` checks format, version and that the weights fit the config, and names
the file in every error.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metahead import perf
from metahead.config import ExperimentConfig, FinetuneConfig
from metahead.data.format import DataError, VideoReader, read_info
from metahead.fileio import UnreadableFile, atomic_path, read_weights_file
from metahead.landmarks.draw import draw_landmarks
from metahead.landmarks.parts import NUM_LANDMARKS
from metahead.landmarks.retarget import SAME_FACE_TOLERANCE, Retargeter, choose_neutral_frame, shape_distance

AVATAR_FORMAT = "metahead-avatar"
AVATAR_VERSION = 1
MODES = ("ft", "ff")
DEFAULT_FPS = 25.0  # for drivers that carry no frame rate (landmark files, dataset folders)


class AvatarError(ValueError):
    """An avatar file that cannot be used; the message names the file and the problem."""


class InputWarning(UserWarning):
    """Input that was used with a fallback (e.g. the largest of several faces in a photo)."""


# =========================================================================================================
# Inputs: photos, videos and dataset folders -> face crops and landmarks at the model's size
# =========================================================================================================


@dataclass
class FaceFrames:
    """Frames of one person, cropped as `metahead prepare` crops them, with their landmarks."""

    frames: np.ndarray  # uint8 (T, S, S, 3)
    landmarks: np.ndarray  # float32 (T, 68, 2), crop pixels
    sources: list[str]  # where each frame came from ("photo.jpg", "clip.mp4 frame 12")

    def __len__(self) -> int:
        return len(self.frames)

    def subset(self, indices: Sequence[int]) -> FaceFrames:
        idx = list(indices)
        return FaceFrames(self.frames[idx], self.landmarks[idx], [self.sources[i] for i in idx])


def evenly_spaced(count: int, wanted: int) -> list[int]:
    """`wanted` distinct indices spread evenly over range(count), first and last included."""
    if wanted > count:
        raise ValueError(f"cannot pick {wanted} of {count}")
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, wanted)}) if wanted > 1 else [count // 2]


def _prepare_config(size: int, prepare_config: Any | None) -> Any:
    """prepare's settings (crop margin, detector, ...) at the model's image size."""
    from metahead.data.prepare import PrepareConfig

    cfg = prepare_config if prepare_config is not None else PrepareConfig()
    return dataclasses.replace(cfg, size=size)


def _detector(detector: Any | None, prepare_cfg: Any) -> Any:
    if detector is not None:
        return detector
    from metahead.landmarks.detect import make_detector

    return make_detector(prepare_cfg.detector, **prepare_cfg.detector_options)


def faces_from_photos(
    paths: Sequence[str | os.PathLike],
    size: int,
    detector: Any | None = None,
    prepare_config: Any | None = None,
) -> FaceFrames:
    """Detect the face in every photo and crop it like `metahead prepare` crops photos (one box per photo).

    A photo without a face raises DataError naming it; with several faces, the largest is used and an
    InputWarning names the photo.
    """
    from metahead.data.face_crop import crop_boxes, crop_frame, to_crop_coordinates
    from metahead.data.video_io import read_image
    from metahead.landmarks.detect import select_face

    if not paths:
        raise ValueError("no photos given")
    cfg = _prepare_config(size, prepare_config)
    crop_cfg = cfg.crop_config("frame")
    detector = _detector(detector, cfg)
    frames, marks = [], []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such photo")
        image = read_image(path)
        faces = [f for f in detector.detect(image) if np.isfinite(f.landmarks).all()]
        if not faces:
            raise DataError(f"{path}: no face found in this photo")
        face = select_face(faces, image.shape, "largest")
        if len(faces) > 1:
            warnings.warn(f"{path}: {len(faces)} faces found; using the largest", InputWarning, stacklevel=2)
        (box,), _ = crop_boxes(face.landmarks[None], np.zeros(1), image.shape[:2], crop_cfg)
        frames.append(crop_frame(image, box, size))
        marks.append(to_crop_coordinates(face.landmarks, box, size))
    return FaceFrames(np.stack(frames), np.stack(marks).astype(np.float32), [str(p) for p in paths])


def faces_from_video(
    path: str | os.PathLike,
    size: int,
    count: int,
    detector: Any | None = None,
    prepare_config: Any | None = None,
) -> FaceFrames:
    """`count` frames spread evenly over a video, with the face detected in each and the clip's crop of
    `metahead prepare` (one box for the clip when the head stays inside it, else a smoothed track).

    Looks at up to 2·count evenly spaced frames so that frames without a face can be skipped; raises
    ValueError when fewer than `count` frames show a face (or the video has fewer frames).
    """
    from metahead.data.face_crop import crop_boxes, crop_frame, to_crop_coordinates
    from metahead.data.video_io import iter_video_frames, probe_video
    from metahead.landmarks.detect import select_face

    cfg = _prepare_config(size, prepare_config)
    detector = _detector(detector, cfg)
    declared = probe_video(path).num_frames
    candidates = None
    if declared > 0:
        candidates = set(evenly_spaced(declared, min(declared, 2 * count)))
    images, marks, times, names = [], [], [], []
    decoded = 0
    for frame in iter_video_frames(path, check_truncation=False):
        decoded += 1
        if candidates is not None and frame.index not in candidates:
            continue
        faces = [f for f in detector.detect(frame.image) if np.isfinite(f.landmarks).all()]
        face = select_face(faces, frame.image.shape, "largest")
        if face is None:
            continue
        images.append(frame.image)
        marks.append(face.landmarks)
        times.append(frame.time)
        names.append(f"{path} frame {frame.index}")
    if len(images) < count:
        seen = decoded if candidates is None else min(len(candidates), decoded)
        raise ValueError(
            f"{path}: T={count} frames wanted, but only {len(images)} of the {seen} frames looked at show a "
            f"face (the video has {decoded} frames)"
        )
    boxes, _ = crop_boxes(np.stack(marks), np.asarray(times), images[0].shape[:2], cfg.crop_config())
    keep = evenly_spaced(len(images), count)
    return FaceFrames(
        np.stack([crop_frame(images[i], boxes[i], size) for i in keep]),
        np.stack([to_crop_coordinates(marks[i], boxes[i], size) for i in keep]).astype(np.float32),
        [names[i] for i in keep],
    )


def dataset_video_root(folder: str | os.PathLike) -> tuple[Path, str]:
    """(dataset root, video path) of a stored video folder DATA/videos/<path>; DataError if it is not one."""
    folder = Path(folder).resolve()
    for parent in folder.parents:
        if parent.name == "videos" and (parent.parent / "dataset.json").is_file():
            return parent.parent, folder.relative_to(parent).as_posix()
    raise DataError(
        f"{folder}: not a video folder of a metahead dataset (DATA/videos/<path> with DATA/dataset.json)"
    )


def is_dataset_video(path: str | os.PathLike) -> bool:
    return (
        Path(path).is_dir()
        and (Path(path) / "landmarks.npy").is_file()
        and (Path(path) / "frames.bin").is_file()
    )


def faces_from_dataset_video(folder: str | os.PathLike, size: int, count: int) -> FaceFrames:
    """`count` evenly spaced frames of a stored dataset video (exact landmarks, e.g. synthetic), at `size`."""
    root, rel = dataset_video_root(folder)
    reader = VideoReader(root, rel)
    if count > len(reader):
        raise ValueError(f"{folder}: T={count} frames wanted, but the video has {len(reader)}")
    ids = evenly_spaced(len(reader), count)
    frames, marks = resize_crops(reader.read_frames(ids), reader.read_landmarks(ids), size)
    return FaceFrames(frames, marks, [f"{folder} frame {i}" for i in ids])


def resize_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """One square crop (s, s, 3) uint8 resized to size² (bicubic); unchanged when already that size."""
    from PIL import Image

    if frame.shape[0] != frame.shape[1]:
        raise DataError(f"frames must be square crops, got {frame.shape[0]}x{frame.shape[1]}")
    if frame.shape[0] == size:
        return frame
    return np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BICUBIC))


def resize_crops(frames: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Square crops (N, s, s, 3) uint8 and their landmarks, resized to size² (landmarks moved along)."""
    resized = np.stack([resize_crop(f, size) for f in frames])
    return resized, rescale_landmarks(landmarks, frames.shape[1], size)


def rescale_landmarks(landmarks: np.ndarray, source_size: int, size: int) -> np.ndarray:
    """Landmarks in a source_size² crop moved to the same crop at size² (pixel centres at integers)."""
    if source_size == size:
        return np.asarray(landmarks, dtype=np.float32)
    return ((np.asarray(landmarks, dtype=np.float32) + 0.5) * (size / source_size) - 0.5).astype(np.float32)


# --- Drivers ---------------------------------------------------------------------------------------------


@dataclass
class DrivingSequence:
    """A driver's landmarks at the avatar's crop size, and what the animation needs to know about it."""

    landmarks: np.ndarray  # float32 (F, 68, 2), pixels of a size² crop
    size: int
    fps: float
    source: str
    audio_source: str | None = None  # a file whose audio track the animation keeps
    missing_faces: int = 0  # frames without a detected face, given the last pose seen
    read_frames: Callable[[], Iterator[np.ndarray]] | None = (
        None  # the driver's crops (size², uint8), in order
    )

    def __len__(self) -> int:
        return len(self.landmarks)


def _check_sequence(landmarks: np.ndarray, what: str) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float32)
    if points.ndim == 2:
        points = points[None]
    if points.ndim != 3 or points.shape[1:] != (NUM_LANDMARKS, 2) or len(points) == 0:
        raise ValueError(f"{what}: landmarks must have shape (F, 68, 2) with F >= 1, got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"{what}: landmarks contain NaN or inf")
    return points


def hold_last_pose(landmarks: Sequence[np.ndarray | None]) -> tuple[np.ndarray, int]:
    """Fill frames without landmarks (None) with the last landmarks seen (leading ones with the first
    seen); returns (F, 68, 2) and the number of frames filled. ValueError if no frame has landmarks."""
    first = next((m for m in landmarks if m is not None), None)
    if first is None:
        raise ValueError("no frame has landmarks")
    filled, last, missing = [], first, 0
    for m in landmarks:
        if m is None:
            missing += 1
        else:
            last = m
        filled.append(last)
    return np.stack(filled).astype(np.float32), missing


def driving_from_video(
    path: str | os.PathLike,
    size: int,
    detector: Any | None = None,
    prepare_config: Any | None = None,
    max_frames: int | None = None,
) -> DrivingSequence:
    """Track the face through a video and crop it like `metahead prepare` (clip box or smoothed track).

    Frames where no face is found keep the last pose (counted in `missing_faces`); DataError naming the
    file if no frame shows a face.
    """
    from metahead.data.face_crop import crop_boxes, crop_frame, to_crop_coordinates
    from metahead.data.video_io import iter_video_frames, probe_video
    from metahead.landmarks.track import LandmarkTracker, TrackerConfig

    cfg = _prepare_config(size, prepare_config)
    tracker = LandmarkTracker(_detector(detector, cfg), TrackerConfig(redetect_every=cfg.redetect_every))
    info = probe_video(path)
    marks: list[np.ndarray | None] = []
    times: list[float] = []
    shape = None
    for frame in iter_video_frames(path, max_frames=max_frames, threads=cfg.decode_threads):
        shape = frame.image.shape
        result = tracker.update(frame.image)
        marks.append(None if result.face is None else result.face.landmarks)
        times.append(frame.time)
    try:
        landmarks, missing = hold_last_pose(marks)
    except ValueError:
        raise DataError(f"{path}: no face detected in any of its {len(marks)} frames") from None
    boxes, _ = crop_boxes(landmarks, np.asarray(times), shape[:2], cfg.crop_config())
    crop_marks = np.stack([to_crop_coordinates(m, b, size) for m, b in zip(landmarks, boxes)])

    def read_frames() -> Iterator[np.ndarray]:
        for frame, box in zip(
            iter_video_frames(path, max_frames=max_frames, threads=cfg.decode_threads), boxes
        ):
            yield crop_frame(frame.image, box, size)

    return DrivingSequence(
        landmarks=crop_marks.astype(np.float32),
        size=size,
        fps=info.fps or DEFAULT_FPS,
        source=str(path),
        audio_source=str(path) if info.has_audio else None,
        missing_faces=missing,
        read_frames=read_frames,
    )


def driving_from_dataset_video(
    folder: str | os.PathLike, size: int, max_frames: int | None = None
) -> DrivingSequence:
    """A stored dataset video (exact landmarks, e.g. synthetic) as a driver, rescaled to size²."""
    root, rel = dataset_video_root(folder)
    reader = VideoReader(root, rel)
    count = len(reader) if max_frames is None else min(len(reader), max_frames)
    if count == 0:
        raise DataError(f"{folder}: the video has no frames")
    source_size = read_info(root).image_size
    landmarks = rescale_landmarks(reader.read_landmarks(range(count)), source_size, size)

    def read_frames() -> Iterator[np.ndarray]:
        for i in range(count):
            yield resize_crop(reader.read_frame(i), size)

    return DrivingSequence(landmarks, size, DEFAULT_FPS, str(folder), read_frames=read_frames)


def driving_sequence(
    driver: str | os.PathLike | np.ndarray | torch.Tensor,
    size: int,
    *,
    landmark_size: int | None = None,
    fps: float | None = None,
    detector: Any | None = None,
    prepare_config: Any | None = None,
    max_frames: int | None = None,
) -> DrivingSequence:
    """A driver from any of: landmarks (F, 68, 2) (array, tensor or .npy file) in pixels of a
    landmark_size² crop (default: the avatar's size); a dataset video folder; a video file."""
    from metahead.data.video_io import is_video_file

    if isinstance(driver, np.ndarray | torch.Tensor):
        points = _check_sequence(np.asarray(driver), "driving landmarks")
        source = "landmarks"
    elif Path(driver).suffix.lower() == ".npy":
        if not Path(driver).is_file():
            raise FileNotFoundError(f"{driver}: no such landmark file")
        try:
            points = _check_sequence(np.load(driver, allow_pickle=False), str(driver))
        except (OSError, ValueError) as err:
            raise DataError(f"{driver}: not a landmark array (F, 68, 2): {err}") from err
        source = str(driver)
    elif Path(driver).is_dir():
        seq = driving_from_dataset_video(driver, size, max_frames)
        if fps:
            seq.fps = fps
        return seq
    elif is_video_file(driver):
        seq = driving_from_video(driver, size, detector, prepare_config, max_frames)
        if fps:
            seq.fps = fps
        return seq
    else:
        raise ValueError(
            f"{driver}: give a video file, a dataset video folder or a .npy of landmarks (F, 68, 2)"
        )
    if max_frames is not None:
        points = points[:max_frames]
    if landmark_size is not None and landmark_size != size:
        points = rescale_landmarks(points, landmark_size, size)
    return DrivingSequence(points, size, fps or DEFAULT_FPS, source)


# =========================================================================================================
# The avatar
# =========================================================================================================


def fold_spectral_norm(generator: nn.Module, cfg: ExperimentConfig) -> nn.Module:
    """A new G without spectral norm (eval mode, no gradients) whose weights are `generator`'s effective
    weights W / σ(W), computed once from the stored power-iteration vectors exactly as an eval-mode G
    computes them on every call. `generator` itself is not changed (torch's remove_parametrizations
    would change the class it shares with its copies)."""
    from torch.nn.utils import parametrize

    was_training = generator.training
    generator.eval()  # no power-iteration update while reading the weights
    try:
        with torch.no_grad():
            state = {k: v for k, v in generator.state_dict().items() if ".parametrizations." not in k}
            for prefix, module in generator.named_modules():
                if parametrize.is_parametrized(module):
                    for name in module.parametrizations.keys():
                        state[f"{prefix}.{name}" if prefix else name] = getattr(module, name).detach().clone()
    finally:
        generator.train(was_training)
    folded = _render_generator(cfg)
    folded.load_state_dict(state)
    device = next(generator.parameters()).device
    return folded.to(device).eval().requires_grad_(False)


def _render_generator(cfg: ExperimentConfig) -> nn.Module:
    """An empty G of the avatar's shape without spectral norm, for folded weights."""
    from metahead.models.generator import Generator

    return Generator(dataclasses.replace(cfg.model, spectral_norm=False))


def _as_points(landmarks: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, bool]:
    points = torch.as_tensor(np.asarray(landmarks) if not isinstance(landmarks, torch.Tensor) else landmarks)
    points = points.detach().to("cpu", torch.float32)
    single = points.ndim == 2
    if single:
        points = points[None]
    if points.ndim != 3 or points.shape[1:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must have shape (68, 2) or (B, 68, 2), got {tuple(points.shape)}")
    return points, single


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return (
        ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    )


class Avatar:
    """One person's renderer: G (spectral norm folded in) with the person's constant AdaIN parameters ψ.

    Build one with `Avatar.create` (from a model file and photos, a video or frames) or `Avatar.load`.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        generator: nn.Module,
        adain_params: torch.Tensor,
        *,
        neutral_landmarks: np.ndarray,
        source_landmarks: np.ndarray | None = None,
        source_frames: np.ndarray | None = None,
        person_embedding: torch.Tensor | None = None,
        mode: str = "ft",
        info: dict[str, Any] | None = None,
        amp: str = "none",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if amp not in perf.AMP_MODES:
            raise ValueError(f"amp must be one of {perf.AMP_MODES}, got {amp!r}")
        from torch.nn.utils import parametrize

        if any(parametrize.is_parametrized(m) for m in generator.modules()):
            generator = fold_spectral_norm(generator, cfg)
        self.cfg = cfg
        self.generator = generator.eval().requires_grad_(False)
        device = next(self.generator.parameters()).device
        self.adain_params = adain_params.detach().to(device, torch.float32).reshape(1, -1)  # ψ, computed once
        if self.adain_params.shape[1] != generator.num_adain_params:
            raise ValueError(
                f"adain_params has {self.adain_params.shape[1]} values, G needs {generator.num_adain_params}"
            )
        self.neutral_landmarks = np.asarray(neutral_landmarks, dtype=np.float32).reshape(NUM_LANDMARKS, 2)
        self.source_landmarks = None if source_landmarks is None else np.asarray(source_landmarks, np.float32)
        self.source_frames = None if source_frames is None else np.asarray(source_frames, np.uint8)
        self.person_embedding = None if person_embedding is None else person_embedding.detach().float().cpu()
        self.mode = mode
        self.info = dict(info or {})
        self.amp = amp
        self._renderer: nn.Module | None = None  # the render-only copy of G (perf), made on first use

    # --- properties and devices -------------------------------------------------------------------------

    @property
    def image_size(self) -> int:
        return self.cfg.model.image_size

    @property
    def device(self) -> torch.device:
        return self.adain_params.device

    def to(self, device: torch.device | str) -> Avatar:
        self.generator.to(device)
        self.adain_params = self.adain_params.to(device)
        self._renderer = None
        return self

    def renderer(self) -> nn.Module:
        """G(·, ψ) prepared for rendering once (perf.prepare_generator_for_inference: a copy with ψ as a
        constant buffer, resampling kernels precomputed, channels_last): landmark images -> frames."""
        if self._renderer is None:
            self._renderer = perf.prepare_generator_for_inference(self.generator, self.adain_params)
        return self._renderer

    def __repr__(self) -> str:
        shots = None if self.source_landmarks is None else len(self.source_landmarks)
        return (
            f"Avatar(mode={self.mode!r}, image_size={self.image_size}, shots={shots}, device={self.device})"
        )

    # --- rendering --------------------------------------------------------------------------------------

    @torch.inference_mode()
    def render_images(self, landmark_images: torch.Tensor, amp: str | None = None) -> torch.Tensor:
        """G(y, ψ) for landmark images (B, 3, S, S) in [-1, 1] -> frames (B, 3, S, S) float in [-1, 1]."""
        renderer = self.renderer()
        landmark_images = perf.channels_last_input(landmark_images.to(self.device))
        with perf.autocast_context(amp or self.amp, self.device):
            return renderer(landmark_images).float()

    def landmark_images(self, landmarks: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Landmarks (B, 68, 2) in the avatar's crop pixels -> landmark images (B, 3, S, S) in [-1, 1]."""
        points, _ = _as_points(landmarks)
        return draw_landmarks(points.to(self.device), self.image_size).mul_(2.0).sub_(1.0)

    def render(
        self, landmarks: np.ndarray | torch.Tensor, batch_size: int = 8, amp: str | None = None
    ) -> np.ndarray:
        """Landmarks (68, 2) or (B, 68, 2) in the avatar's crop pixels -> uint8 (S, S, 3) or (B, S, S, 3),
        rendered `batch_size` frames at a time."""
        points, single = _as_points(landmarks)
        out = [
            to_uint8(self.render_images(self.landmark_images(points[i : i + batch_size]), amp))
            for i in range(0, len(points), batch_size)
        ]
        frames = np.concatenate(out) if out else np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
        return frames[0] if single else frames

    def animate(
        self,
        driver: str | os.PathLike | np.ndarray | torch.Tensor | DrivingSequence,
        *,
        retarget: bool | None = None,
        neutral_frame: int | None = None,
        anchor: str = "driver",
        batch_size: int = 8,
        side_by_side: bool = False,
        amp: str | None = None,
        **driver_options: Any,
    ) -> Animation:
        """Animate the avatar with a driver: landmarks (F, 68, 2) (array or .npy, see `driving_sequence`
        for their coordinates), a dataset video folder or a video file.

        retarget: True moves the avatar's own face shape with the driver's pose and expression
        (landmarks.retarget); False uses the driver's landmarks as they are; None (default) retargets
        unless the driver's neutral face has the avatar's shape (the same person). neutral_frame: the
        driver's neutral frame (default: chosen automatically). Returns an Animation: iterate it for uint8
        frames, rendered `batch_size` at a time (side_by_side: driver | landmark image | result).
        """
        sequence = (
            driver
            if isinstance(driver, DrivingSequence)
            else driving_sequence(driver, self.image_size, **driver_options)
        )
        driver_landmarks = sequence.landmarks
        if neutral_frame is not None and not -len(driver_landmarks) <= neutral_frame < len(driver_landmarks):
            raise ValueError(
                f"neutral frame {neutral_frame} out of range: the driver has {len(driver_landmarks)} frames"
            )
        neutral = (
            choose_neutral_frame(driver_landmarks).index if neutral_frame is None else int(neutral_frame)
        )
        distance = shape_distance(driver_landmarks[neutral], self.neutral_landmarks)
        use_retarget = distance > SAME_FACE_TOLERANCE if retarget is None else bool(retarget)
        if use_retarget:
            landmarks = Retargeter(self.neutral_landmarks, driver_landmarks[neutral], anchor)(
                driver_landmarks
            )
        else:
            landmarks = driver_landmarks
        return Animation(
            avatar=self,
            driving=sequence,
            landmarks=np.asarray(landmarks, dtype=np.float32),
            retargeted=use_retarget,
            neutral_frame=neutral,
            shape_distance=distance,
            batch_size=batch_size,
            side_by_side=side_by_side,
            amp=amp,
        )

    # --- making one -------------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        model: str | os.PathLike | tuple[nn.Module, nn.Module, nn.Module, ExperimentConfig],
        *,
        images: Sequence[str | os.PathLike] | None = None,
        video: str | os.PathLike | None = None,
        frames: np.ndarray | None = None,
        landmarks: np.ndarray | None = None,
        shots: int | None = None,
        finetune: bool = True,
        config: FinetuneConfig | None = None,
        steps: int | None = None,
        device: str | torch.device = "cpu",
        amp: str = "none",
        detector: Any | None = None,
        prepare_config: Any | None = None,
        content_loss: nn.Module | None = None,
        progress: bool = True,
        curve_path: str | os.PathLike | None = None,
    ) -> Avatar:
        """Make an avatar from exactly one of: photos (`images`), a video file or dataset video folder
        (`video`), or crops `frames` (T, S, S, 3) uint8 with their `landmarks` (T, 68, 2).

        model: a model file (training.checkpoint.save_model) or (E, G, D, cfg) as load_model returns.
        shots: T, the frames used (default: all photos / frames given, or config.shots for a video;
        fewer than given picks T evenly spaced; more is an error). finetune: FT (True) or FF (False).
        config: fine-tuning settings (default: the model config's `finetune` section); `steps` overrides
        its step count. curve_path: write the fine-tuning losses there as JSON, and as a PNG plot next to
        it (the same name with .png), with the T frames' reconstruction L1 every 10 steps.
        """
        from metahead.data.episodes import FewShotDataset
        from metahead.training import checkpoint
        from metahead.training import finetune as ft

        if sum(x is not None for x in (images, video, frames)) != 1:
            raise ValueError("give exactly one of images, video or frames")
        model_path = None
        if isinstance(model, str | os.PathLike):
            model_path = str(model)
            embedder, generator, discriminator, cfg = checkpoint.load_model(model, map_location=device)
        else:
            embedder, generator, discriminator, cfg = model
        cfg = copy.deepcopy(cfg)
        if config is not None:
            cfg.finetune = copy.deepcopy(config)
        if steps is not None:
            cfg.finetune.steps = int(steps)
        if shots is not None and (not isinstance(shots, int) or shots < 1):
            raise ValueError(f"shots (T) must be a positive integer, got {shots!r}")
        size = cfg.model.image_size

        # --- the T frames ----------------------------------------------------------------------------------
        if images is not None:
            images = [images] if isinstance(images, str | os.PathLike) else list(images)
            if shots is not None and shots > len(images):
                raise ValueError(f"T={shots} frames wanted, but only {len(images)} photos given")
            chosen = images if shots is None else [images[i] for i in evenly_spaced(len(images), shots)]
            faces = faces_from_photos(chosen, size, detector, prepare_config)
        elif video is not None:
            count = shots or cfg.finetune.shots
            if is_dataset_video(video):
                faces = faces_from_dataset_video(video, size, count)
            else:
                faces = faces_from_video(video, size, count, detector, prepare_config)
        else:
            if landmarks is None:
                raise ValueError("frames need their landmarks (T, 68, 2)")
            frames = np.asarray(frames)
            if frames.ndim != 4 or frames.dtype != np.uint8 or frames.shape[-1] != 3:
                raise ValueError(f"frames must be (T, S, S, 3) uint8, got {frames.dtype} {frames.shape}")
            if len(landmarks) != len(frames):
                raise ValueError(f"{len(frames)} frames but {len(landmarks)} landmark sets")
            if shots is not None and shots > len(frames):
                raise ValueError(f"T={shots} frames wanted, but only {len(frames)} frames given")
            faces = FaceFrames(
                frames, _check_sequence(landmarks, "landmarks"), [f"frame {i}" for i in range(len(frames))]
            )
            if shots is not None:
                faces = faces.subset(evenly_spaced(len(faces), shots))
            faces.frames, faces.landmarks = resize_crops(faces.frames, faces.landmarks, size)
        data = FewShotDataset(faces.frames, faces.landmarks, image_size=size)
        few_shot = ft.FewShotFrames(data.images, data.landmark_images, data.landmarks)
        cfg.finetune.shots = len(faces)

        # --- FT: fine-tune G, ψ' and D on them; FF: ψ̂ = P ê_NEW ---------------------------------------------
        info: dict[str, Any] = {
            "model": model_path or "",
            "shots": len(faces),
            "sources": list(faces.sources),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "finetunable_model": bool(cfg.train.finetunable),
        }
        if finetune:
            if not cfg.train.finetunable:
                warnings.warn(
                    f"{model_path or 'model'}: was meta-trained as the FF model (no L_MCH), so w0 + ê_NEW is "
                    "not a meaningful start for D; fine-tuning anyway", InputWarning, stacklevel=2,
                )  # fmt: skip
            result = ft.finetune(
                embedder, generator, discriminator, few_shot, cfg,
                content_loss=content_loss, device=device, amp=amp, progress=progress,
                evaluate_every=10 if curve_path is not None else 0,  # the curve shows reconstruction too
            )  # fmt: skip
            out_generator, adain_params, embedding = (
                result.generator,
                result.adain_params,
                result.person_embedding,
            )
            info["finetune"] = {**dataclasses.asdict(cfg.finetune), **ft.summarise_history(result.history)}
            if curve_path is not None:
                curve = Path(curve_path)
                ft.save_loss_curve(result.history, curve, curve.with_suffix(".png"))
            mode = "ft"
        else:
            embedding = ft.person_embedding(embedder.to(device), few_shot.images.to(device),
                                            few_shot.landmark_images.to(device))  # fmt: skip
            generator = generator.to(device).eval()
            adain_params = ft.feed_forward_params(generator, embedding)
            out_generator, mode = generator, "ff"
        neutral = choose_neutral_frame(faces.landmarks).index
        return cls(
            cfg,
            out_generator,
            adain_params,
            neutral_landmarks=faces.landmarks[neutral],
            source_landmarks=faces.landmarks,
            source_frames=faces.frames,
            person_embedding=embedding,
            mode=mode,
            info=info,
            amp=amp,
        )

    # --- the file ---------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The avatar file's contents (module docstring), on the CPU."""
        size = self.image_size
        return {
            "format": AVATAR_FORMAT,
            "version": AVATAR_VERSION,
            "config": self.cfg.to_dict(),
            "mode": self.mode,
            "generator": {k: v.detach().cpu().clone() for k, v in self.generator.state_dict().items()},
            "adain_params": self.adain_params.detach().cpu().clone(),
            "person_embedding": None if self.person_embedding is None else self.person_embedding.clone(),
            "neutral_landmarks": torch.from_numpy(self.neutral_landmarks.copy()),
            "source_landmarks": torch.from_numpy(
                self.source_landmarks
                if self.source_landmarks is not None
                else np.zeros((0, NUM_LANDMARKS, 2), np.float32)
            ),
            "source_frames": torch.from_numpy(
                self.source_frames
                if self.source_frames is not None
                else np.zeros((0, size, size, 3), np.uint8)
            ),
            "info": _plain(self.info),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the avatar file atomically; returns its path."""
        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save(self.state(), tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu", amp: str = "none") -> Avatar:
        """Read an avatar file (weights only: no code runs). AvatarError naming the file if it is not an
        avatar, comes from a newer metahead, or its weights do not fit its config."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: avatar file not found")
        try:
            state = read_weights_file(path)
        except UnreadableFile as err:
            raise AvatarError(f"{path}: not a readable avatar file: {err}") from None
        if not isinstance(state, dict) or state.get("format") != AVATAR_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            hint = (
                " (a model file: make an avatar from it with `metahead avatar`)"
                if found == "metahead-model"
                else ""
            )
            raise AvatarError(f"{path}: format is {found!r}, expected {AVATAR_FORMAT!r}{hint}")
        version = state.get("version")
        if not isinstance(version, int) or version < 1:
            raise AvatarError(f"{path}: invalid avatar format version {version!r}")
        if version > AVATAR_VERSION:
            raise AvatarError(
                f"{path}: avatar format version {version} is newer than this metahead reads "
                f"({AVATAR_VERSION}); update metahead"
            )
        missing = [
            k for k in ("config", "mode", "generator", "adain_params", "neutral_landmarks") if k not in state
        ]
        if missing:
            raise AvatarError(f"{path}: avatar file lacks {missing}")
        try:
            cfg = ExperimentConfig.from_dict(state["config"])
        except (KeyError, TypeError, ValueError) as err:
            raise AvatarError(f"{path}: its model config does not fit this metahead: {err}") from err
        try:
            generator = _render_generator(cfg)
            generator.load_state_dict(state["generator"])
        except (RuntimeError, ValueError) as err:
            raise AvatarError(
                f"{path}: generator weights do not fit the networks its config describes: {err}"
            ) from err
        adain_params = state["adain_params"]
        if adain_params.ndim != 2 or adain_params.shape != (1, generator.num_adain_params):
            raise AvatarError(
                f"{path}: adain_params has shape {tuple(adain_params.shape)}, "
                f"G needs (1, {generator.num_adain_params})"
            )
        if state["mode"] not in MODES:
            raise AvatarError(f"{path}: unknown avatar mode {state['mode']!r}")
        source_landmarks = state.get("source_landmarks")
        source_frames = state.get("source_frames")
        avatar = cls(
            cfg,
            generator,
            adain_params,
            neutral_landmarks=state["neutral_landmarks"].numpy(),
            source_landmarks=None
            if source_landmarks is None or not len(source_landmarks)
            else source_landmarks.numpy(),
            source_frames=None if source_frames is None or not len(source_frames) else source_frames.numpy(),
            person_embedding=state.get("person_embedding"),
            mode=state["mode"],
            info=state.get("info") or {},
            amp=amp,
        )
        return avatar.to(device)


def _plain(value: Any) -> Any:
    """Only str/int/float/bool/None in (nested) dicts and lists: what weights_only loading accepts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


# =========================================================================================================
# Animation
# =========================================================================================================


@dataclass
class Animation:
    """An avatar driven by a sequence: iterate for uint8 frames (S, S, 3), or (S, 3S, 3) side by side
    (driver | landmark image | result). Rendering happens while iterating, `batch_size` frames at a time."""

    avatar: Avatar
    driving: DrivingSequence
    landmarks: np.ndarray  # (F, 68, 2) what is rendered (retargeted or the driver's own)
    retargeted: bool
    neutral_frame: int  # the driver's neutral frame
    shape_distance: float  # driver neutral vs avatar neutral, eye distances (retarget=None decides on it)
    batch_size: int = 8
    side_by_side: bool = False
    amp: str | None = None

    def __len__(self) -> int:
        return len(self.landmarks)

    @property
    def fps(self) -> float:
        return self.driving.fps

    @property
    def missing_faces(self) -> int:
        return self.driving.missing_faces

    def __iter__(self) -> Iterator[np.ndarray]:
        size = self.avatar.image_size
        driver_frames = None
        if self.side_by_side and self.driving.read_frames is not None:
            driver_frames = self.driving.read_frames()
        for start in range(0, len(self), self.batch_size):
            points = torch.from_numpy(self.landmarks[start : start + self.batch_size])
            drawn = draw_landmarks(points.to(self.avatar.device), size)  # [0, 1]
            rendered = to_uint8(self.avatar.render_images(drawn * 2.0 - 1.0, self.amp))
            if not self.side_by_side:
                yield from rendered
                continue
            drawn_u8 = to_uint8(drawn * 2.0 - 1.0)
            if driver_frames is not None:
                left = [
                    next(driver_frames, np.zeros((size, size, 3), np.uint8)) for _ in range(len(rendered))
                ]
            else:  # landmark drivers: the driver's own (not retargeted) landmarks
                own = torch.from_numpy(self.driving.landmarks[start : start + self.batch_size])
                left = list(to_uint8(draw_landmarks(own, size) * 2.0 - 1.0))
            for a, b, c in zip(left, drawn_u8, rendered):
                yield np.concatenate([a, b, c], axis=1)

    def to_array(self) -> np.ndarray:
        """All frames (F, S, W, 3) uint8."""
        return np.stack(list(self))

    def summary(self) -> dict[str, Any]:
        return {
            "frames": len(self),
            "fps": self.fps,
            "retargeted": self.retargeted,
            "neutral_frame": self.neutral_frame,
            "shape_distance": round(self.shape_distance, 4),
            "missing_faces": self.missing_faces,
            "source": self.driving.source,
        }
