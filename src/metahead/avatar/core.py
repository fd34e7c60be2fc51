"""Avatars: a person made from a few photos or a video with a meta-learned model, then rendered and animated.

This module holds the Avatar object (making, rendering, animating, saving) and Animation, what animating
returns. Making an avatar (paper Sec. 3.3): the T frames are cropped the way `metahead prepare` crops
photos and clips (faces.py), embedded by E (ê_NEW = mean over T), and then either
- fine-tuned (FT, `training.finetune`): G and ψ' = P ê_NEW trained on the T frames, or
- used feed-forward (FF): ψ̂ = P ê_NEW with the meta-learned G.
Either way the avatar keeps G's weights and the person's AdaIN parameters ψ as constants: rendering
never runs E or P again, and G's spectral normalisation is folded into its weights once (render.py), so
a frame costs one landmark drawing and one pass of G, batched. Rendering uses a copy of G prepared once
by `perf.prepare_generator_for_inference` (ψ a constant buffer, resampling kernels precomputed,
channels_last); `amp="auto"` renders in bf16 only where the hardware computes bf16 natively.
The file it saves to and loads from: fileformat.py.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metahead import perf
from metahead.avatar.driving import DrivingSequence, check_landmark_sequence, driving_sequence
from metahead.avatar.faces import (
    FaceFrames,
    InputWarning,
    evenly_spaced,
    faces_from_dataset_video,
    faces_from_photos,
    faces_from_video,
    is_dataset_video,
    resize_crops,
)
from metahead.avatar.fileformat import AVATAR_FORMAT, AVATAR_VERSION, MODES, plain_values, read_avatar_file
from metahead.avatar.render import as_points, fold_spectral_norm, to_uint8
from metahead.config import ExperimentConfig, FinetuneConfig, apply_section_overrides
from metahead.fileio import atomic_path
from metahead.landmarks.draw import draw_landmarks
from metahead.landmarks.parts import NUM_LANDMARKS
from metahead.landmarks.retarget import SAME_FACE_TOLERANCE, Retargeter, choose_neutral_frame, shape_distance


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
        points, _ = as_points(landmarks)
        return draw_landmarks(points.to(self.device), self.image_size).mul_(2.0).sub_(1.0)

    def render(
        self, landmarks: np.ndarray | torch.Tensor, batch_size: int = 8, amp: str | None = None
    ) -> np.ndarray:
        """Landmarks (68, 2) or (B, 68, 2) in the avatar's crop pixels -> uint8 (S, S, 3) or (B, S, S, 3),
        rendered `batch_size` frames at a time."""
        points, single = as_points(landmarks)
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
        finetune_overrides: Sequence[str] = (),
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
        config: fine-tuning settings (default: the model config's `finetune` section); `finetune_overrides`
        ("finetune.FIELD=VALUE") change single settings of those, and `steps` the step count (exactly: the
        config's finetune.min_passes does not raise it). curve_path: write the fine-tuning losses there as
        JSON, and as a PNG plot next to it (the same name with .png), with the T frames' reconstruction L1
        every 10 steps.
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
        cfg = apply_section_overrides(cfg, finetune_overrides, ("finetune",), "finetune_overrides")
        if steps is not None:  # exactly this many, whatever T
            cfg.finetune.steps, cfg.finetune.min_passes = int(steps), 0.0
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
                frames,
                check_landmark_sequence(landmarks, "landmarks"),
                [f"frame {i}" for i in range(len(frames))],
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
            started = time.perf_counter()
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
            info["finetune"] = {
                **dataclasses.asdict(cfg.finetune),
                **ft.summarise_history(result.history),
                "seconds": round(time.perf_counter() - started, 1),  # the fine-tuning alone
                "amp": perf.resolve_amp(amp, device),  # what "auto" became on this machine
            }
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
            "info": plain_values(self.info),
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
        avatar, comes from a newer metahead, or its weights do not fit its config (fileformat)."""
        return cls(**read_avatar_file(path), amp=amp).to(device)


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
