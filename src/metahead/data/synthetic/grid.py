"""A contact sheet of the corpus: identities x frames, and a row with the landmarks drawn over the faces."""

from __future__ import annotations

import numpy as np

from metahead.data.synthetic.corpus import make_video
from metahead.landmarks.draw import draw_landmarks_uint8


def render_grid(
    seed: int = 0, identities: int = 6, columns: int = 6, size: int = 128, frames_per_video: int = 24
) -> np.ndarray:
    """(rows * size, columns * size, 3) uint8.

    Row i shows identity i: its columns walk through its videos (one video per `columns // 3` frames, so
    background, clothing and lighting change along the row). The last row overlays the 68 landmarks on
    each identity's first frame.
    """
    per_video = max(columns // 3, 1)
    rows, overlays = [], []
    for identity in range(identities):
        tiles = []
        for col in range(columns):
            video, k = divmod(col, per_video)
            renderer, motion = make_video(seed, identity, video, frames_per_video, size)
            index = (k * frames_per_video) // per_video + (7 * identity) % (frames_per_video // per_video)
            frame = next(renderer.render(motion.frame(index)))
            tiles.append(frame.image)
            if col == 0:
                lines = draw_landmarks_uint8(frame.landmarks, size)
                drawn = lines.max(axis=-1, keepdims=True) > 0
                overlays.append(np.where(drawn, lines, frame.image // 2 + 20))
        rows.append(np.concatenate(tiles, axis=1))
    last = overlays[:columns] + [np.zeros_like(overlays[0])] * max(columns - len(overlays), 0)
    rows.append(np.concatenate(last, axis=1))
    return np.concatenate(rows, axis=0)
