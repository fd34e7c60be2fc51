"""A contact sheet of a dataset: a few frames per video with their landmark images drawn over them.

For looking at crops and landmarks by eye. Sheets of real people belong in ignored folders (out/),
never in the repository or its docs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from metahead.data.format import Dataset
from metahead.fileio import atomic_path


def overlay_landmarks(image: np.ndarray, landmarks: np.ndarray, opacity: float = 0.85) -> np.ndarray:
    """The frame with its landmark image (landmarks.draw, the generator's input) blended on top."""
    from metahead.landmarks.draw import draw_landmarks

    size = image.shape[0]
    drawn = draw_landmarks(landmarks, size).numpy().transpose(1, 2, 0)  # (S, S, 3) in [0, 1]
    alpha = drawn.max(axis=2, keepdims=True) * opacity
    blended = image.astype(np.float32) / 255 * (1 - alpha) + drawn * alpha
    return (blended * 255 + 0.5).clip(0, 255).astype(np.uint8)


def make_contact_sheet(
    data_root: str | os.PathLike,
    out_path: str | os.PathLike,
    frames_per_video: int = 6,
    max_videos: int | None = 40,
    tile: int = 128,
    paths: Sequence[str] | None = None,
) -> Path:
    """One row per video (evenly spaced frames with landmark overlays), labelled; written as JPEG/PNG.
    paths: only these stored videos (default: the first max_videos of the manifest)."""
    dataset = Dataset(data_root)
    records = dataset.records if paths is None else [r for r in dataset.records if r.path in set(paths)]
    records = records[:max_videos] if max_videos else records
    label_height = 14
    sheet = Image.new("RGB", (frames_per_video * tile, len(records) * (tile + label_height)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for row, record in enumerate(records):
        reader = dataset.reader(record)
        picks = np.unique(np.linspace(0, len(reader) - 1, frames_per_video).round().astype(int))
        top = row * (tile + label_height)
        draw.text(
            (2, top + 1), f"{record.path}  ({record.num_frames} frames, {record.split})", fill=(230, 230, 230)
        )
        for col, index in enumerate(picks):
            frame = overlay_landmarks(reader.read_frame(int(index)), reader.read_landmarks([int(index)])[0])
            sheet.paste(
                Image.fromarray(frame).resize((tile, tile), Image.Resampling.BILINEAR),
                (col * tile, top + label_height),
            )
    out_path = Path(out_path)
    fmt = "PNG" if out_path.suffix.lower() == ".png" else "JPEG"
    with atomic_path(out_path) as tmp:
        sheet.save(tmp, format=fmt, quality=90)
    return out_path
