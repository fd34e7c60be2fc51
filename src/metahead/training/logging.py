"""Watching a run learn: TensorBoard scalars and images, a JSONL log, PNG sample grids, a progress bar.

    RUN/log.jsonl              one JSON object per logged step: {"step": ..., "time": ..., "<tag>": value}
    RUN/tensorboard/           the same scalars, and the sample grids    (tensorboard --logdir RUN)
    RUN/samples/step-00000500.png
    RUN/curves.png             the loss curves, redrawn at every checkpoint (write_curves)

A sample grid has one row per sample episode: landmark image | K-shot inputs | generated | ground truth.
Only rank 0 makes a RunLogger with enabled=True; on the other ranks every method does nothing.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from metahead.fileio import atomic_path

LOG_FILE = "log.jsonl"
TENSORBOARD_DIR = "tensorboard"
SAMPLES_DIR = "samples"
CURVES_FILE = "curves.png"


def sample_grid(
    landmark_images: torch.Tensor,
    shot_images: torch.Tensor,
    generated: torch.Tensor,
    ground_truth: torch.Tensor,
    padding: int = 2,
) -> torch.Tensor:
    """Tile B episodes into a (3, H, W) float grid in [0, 1], one row per episode.

    landmark_images, generated, ground_truth: (B, 3, S, S); shot_images: (B, K, 3, S, S); all in [-1, 1].
    """
    batch, shots = shot_images.shape[:2]
    size = ground_truth.shape[-1]
    columns = [landmark_images[:, None], shot_images, generated[:, None], ground_truth[:, None]]
    tiles = torch.cat([c.detach().float().cpu() for c in columns], dim=1)  # (B, K + 3, 3, S, S)
    tiles = (tiles.clamp(-1, 1) + 1) / 2
    num_cols = shots + 3
    cell = size + padding
    grid = torch.ones(3, batch * cell + padding, num_cols * cell + padding)
    for row in range(batch):
        for col in range(num_cols):
            top, left = padding + row * cell, padding + col * cell
            grid[:, top : top + size, left : left + size] = tiles[row, col]
    return grid


def save_png(image: torch.Tensor, path: str | os.PathLike) -> None:
    """Write a (3, H, W) float [0, 1] image as PNG, atomically."""
    array = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


# Panels of RUN/curves.png: title -> the tags drawn in it (each tag its own colour).
CURVE_PANELS: dict[str, tuple[str, ...]] = {
    "E/G total loss": ("loss/generator_total",),
    "L_CNT": ("loss/content",),
    "L_ADV": ("loss/adversarial",),
    "L_MCH": ("loss/match",),
    "L_DSC": ("loss/discriminator",),
    "D realism: real (blue), fake (red)": ("score/real", "score/fake"),
    "grad norm: E (blue), G (red), D (green)": (
        "grad_norm/embedder",
        "grad_norm/generator",
        "grad_norm/discriminator",
    ),
    "images/s": ("throughput/images_per_s",),
}
_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44))


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a RUN/log.jsonl (a torn last line, from a crash mid-write, is ignored)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def discriminator_balance(records: list[dict[str, Any]], fraction: float = 0.2) -> dict[str, float]:
    """Is D playing? Over the last `fraction` of the logged steps: the mean real − fake realism score gap
    ("score_gap"; 0 when D scores real and fake alike) and the mean L_DSC ("discriminator_loss"; ~2 then).
    NaN where nothing was logged."""
    logged = [r for r in records if "score/real" in r and "score/fake" in r]
    tail = logged[len(logged) - max(1, int(len(logged) * fraction)) :] if logged else []
    if not tail:
        return {"score_gap": math.nan, "discriminator_loss": math.nan, "from_step": math.nan}
    return {
        "score_gap": float(np.mean([r["score/real"] - r["score/fake"] for r in tail])),
        "discriminator_loss": float(np.mean([r.get("loss/discriminator", math.nan) for r in tail])),
        "from_step": float(tail[0]["step"]),
    }


def _smooth(values: list[float], weight: float) -> list[float]:
    out, avg = [], None
    for v in values:
        avg = v if avg is None else weight * avg + (1 - weight) * v
        out.append(avg)
    return out


def write_curves(log_path: str | os.PathLike, out_path: str | os.PathLike) -> Path | None:
    """Draw the training curves of a log.jsonl as one PNG (a panel per CURVE_PANELS entry; faint: raw,
    solid: exponentially smoothed over ~1/20 of the run; gradient norms on a log scale). Returns None
    when the log has no records."""
    from PIL import ImageDraw, ImageFont

    records = read_log(log_path)
    panels = [(t, tags) for t, tags in CURVE_PANELS.items() if any(tag in r for r in records for tag in tags)]
    if not panels:
        return None
    width, height, margin, columns = 420, 220, 48, 2
    rows = -(-len(panels) // columns)
    image = Image.new("RGB", (columns * width, rows * height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for n, (title, tags) in enumerate(panels):
        x0, y0 = (n % columns) * width, (n // columns) * height
        box = (x0 + margin, y0 + 22, x0 + width - 12, y0 + height - 24)
        series = []
        for tag in tags:
            points = [
                (r["step"], r[tag])
                for r in records
                if isinstance(r.get(tag), int | float) and math.isfinite(r[tag])
            ]
            if points:
                series.append((tag, [p[0] for p in points], [p[1] for p in points]))
        if not series:
            continue
        log_scale = title.startswith("grad norm")
        if log_scale:
            series = [(tag, xs, [math.log10(max(y, 1e-12)) for y in ys]) for tag, xs, ys in series]
            title += " (log10)"
        steps = [s for _, xs, _ in series for s in xs]
        values = [v for _, _, ys in series for v in ys]
        s_lo, s_hi = min(steps), max(max(steps), min(steps) + 1)
        v_lo, v_hi = min(values), max(values)
        if v_hi - v_lo < 1e-12:
            v_lo, v_hi = v_lo - 1, v_hi + 1

        def to_xy(
            step: float, value: float, box=box, s_lo=s_lo, s_hi=s_hi, v_lo=v_lo, v_hi=v_hi
        ) -> tuple[float, float]:
            fx = (step - s_lo) / (s_hi - s_lo)
            fy = (value - v_lo) / (v_hi - v_lo)
            return box[0] + fx * (box[2] - box[0]), box[3] - fy * (box[3] - box[1])

        draw.rectangle(box, outline=(160, 160, 160))
        draw.text((x0 + margin, y0 + 6), title, fill="black", font=font)
        draw.text((x0 + 2, box[1]), f"{v_hi:.3g}", fill="black", font=font)
        draw.text((x0 + 2, box[3] - 10), f"{v_lo:.3g}", fill="black", font=font)
        draw.text((box[0], box[3] + 6), f"{s_lo}", fill="black", font=font)
        draw.text((box[2] - 40, box[3] + 6), f"{s_hi}", fill="black", font=font)
        for (_, xs, ys), colour in zip(series, _COLOURS):
            faint = tuple(c + (255 - c) * 2 // 3 for c in colour)
            smoothing = min(0.98, max(0.0, 1.0 - 20.0 / len(ys)))
            for line, fill in ((ys, faint), (_smooth(ys, smoothing), colour)):
                xy = [to_xy(x, y) for x, y in zip(xs, line)]
                if len(xy) > 1:
                    draw.line(xy, fill=fill, width=1 if fill is faint else 2)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        image.save(tmp, format="PNG")
    return out_path


class RunLogger:
    def __init__(
        self,
        run_dir: str | os.PathLike,
        enabled: bool,
        total_steps: int,
        start_step: int = 0,
        progress: bool = True,
    ):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._writer = None
        self._log_file = None
        self._bar = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter  # imported lazily: slow, and rank 0 only
        from tqdm import tqdm

        (self.run_dir / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR), purge_step=start_step)
        self._log_file = open(self.run_dir / LOG_FILE, "a", buffering=1)
        if progress:
            self._bar = tqdm(
                total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, smoothing=0.05
            )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Log named scalars ("loss/content", "score/real", ...) to TensorBoard and the JSONL log."""
        if not self.enabled:
            return
        for tag, value in values.items():
            self._writer.add_scalar(tag, value, step)
        record: dict[str, Any] = {"step": step, "time": round(time.time(), 3)}
        record.update({k: (v if math.isfinite(v) else str(v)) for k, v in values.items()})
        self._log_file.write(json.dumps(record) + "\n")
        if self._bar is not None:
            shown = {k.split("/")[-1]: f"{v:.3g}" for k, v in values.items() if k.startswith("loss/")}
            self._bar.set_postfix(shown, refresh=False)

    def text(self, tag: str, text: str) -> None:
        if self.enabled:
            self._writer.add_text(tag, text, 0)

    def sample(self, step: int, grid: torch.Tensor) -> Path | None:
        """Save a sample grid ((3, H, W) in [0, 1]) as RUN/samples/step-STEP.png and to TensorBoard."""
        if not self.enabled:
            return None
        path = self.run_dir / SAMPLES_DIR / f"step-{step:08d}.png"
        save_png(grid, path)
        self._writer.add_image("samples", grid, step)
        return path

    def curves(self) -> Path | None:
        """Redraw RUN/curves.png from the JSONL log."""
        if not self.enabled:
            return None
        self._log_file.flush()
        return write_curves(self.run_dir / LOG_FILE, self.run_dir / CURVES_FILE)

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def message(self, text: str) -> None:
        """A line for the person watching (through tqdm so it does not break the bar)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
        if self._log_file is not None:
            self._log_file.close()
        self._writer = self._log_file = self._bar = None
