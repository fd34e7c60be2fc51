"""Inputs for the web app's tests (test_app.py, test_app_browser.py): a tiny randomly initialised model
saved with the project's own model writer, and synthetic photos and videos (never real frames)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metahead.config import apply_overrides, preset
from metahead.data.synthetic import render_video
from metahead.data.video_io import write_video_file
from metahead.models import Discriminator, Embedder, Generator
from metahead.training import checkpoint

PHOTO_SIZE = 192  # dlib's HOG detector finds the synthetic faces from about this size on
PHOTO_SEED = 11  # synthetic people of their own seed


def tiny_model(path: Path, finetune_steps: int = 2, overrides: tuple[str, ...] = ()) -> Path:
    """The `tiny` preset (32²) with random weights, written by training.checkpoint.save_model; `overrides`:
    more `section.field=value` settings."""
    torch.manual_seed(0)
    cfg = apply_overrides(
        preset("tiny"),
        [
            "loss.identity_network=none",
            f"finetune.steps={finetune_steps}",
            "finetune.batch_size=2",
            *overrides,
        ],
    )
    return checkpoint.save_model(
        path,
        cfg,
        Embedder(cfg.model),
        Generator(cfg.model),
        Discriminator(cfg.model, num_videos=2),
        2,
        step=5,
    )


def tiny_avatar(folder: Path):
    """An FF avatar (no fine-tuning) of a synthetic person made with `tiny_model`: the smallest there is."""
    from metahead.avatar import Avatar

    frames, marks = render_video(PHOTO_SEED, 0, 0, 4, PHOTO_SIZE)
    return Avatar.create(tiny_model(folder / "model.pt"), frames=frames, landmarks=marks, finetune=False,
                         progress=False)  # fmt: skip


def person_frames(count: int, person: int = 0, video: int = 0, size: int = PHOTO_SIZE) -> np.ndarray:
    frames, _ = render_video(PHOTO_SEED, person, video, count, size)
    return frames


def photos(folder: Path, count: int = 3, person: int = 0) -> list[Path]:
    """`count` PNG photos of one synthetic person."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(person_frames(count, person)):
        path = folder / f"person{person}_{i}.png"
        Image.fromarray(frame).save(path)
        paths.append(path)
    return paths


def two_people_photo(path: Path) -> Path:
    """Two synthetic people side by side in one photo."""
    Image.fromarray(np.concatenate([person_frames(1, 0)[0], person_frames(1, 1)[0]], axis=1)).save(path)
    return path


def blank_photo(path: Path) -> Path:
    """A photo without a face: a plain grey-blue picture."""
    Image.fromarray(np.full((PHOTO_SIZE, PHOTO_SIZE, 3), (90, 110, 140), np.uint8)).save(path)
    return path


def text_file(path: Path) -> Path:
    """Not an image, whatever its name says."""
    path.write_text("these are notes, not a photo\n")
    return path


def person_video(path: Path, frames: int = 12, person: int = 0, fps: float = 25.0) -> Path:
    """An mp4 of one synthetic person talking."""
    write_video_file(path, person_frames(frames, person, video=1), fps)
    return path
