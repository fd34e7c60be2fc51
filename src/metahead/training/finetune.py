"""Few-shot fine-tuning (paper Sec. 3.3): adapt the meta-learned G and D to one new person from T frames.

    ê_NEW = mean_t E(x(t), y(t))                     the person's embedding from the T frames
    ψ'    = P ê_NEW                                   G's AdaIN parameters, from here on a free tensor
    w'    = w0 + ê_NEW,  b' = b                       D's person vector, a free tensor too
    G (its person-generic weights ψ as well, at finetune.generic_rate_scale x ψ's rate) and ψ' step on
          L_CNT + L_ADV (no L_MCH: no W any more)
    D (V, b') and w' step on the hinge loss L_DSC

Every step draws `batch_size` of the T frames (each frame once per pass, in a fresh order); the two
updates have separate backward passes, and D is frozen while G steps, as in meta-learning
(training/meta.py). The networks given are not changed: G and D are copied.

The feed-forward (FF) avatar skips all this: ψ̂ = P ê_NEW with the meta-learned G (`feed_forward_params`).

Defaults (config.FinetuneConfig): the paper only says fine-tuning converges "after a few steps" and gives
no step count or learning rates. We keep the meta-learning rates (5e-5 for G and ψ', 2e-4 for D) and
choose the step count by measurement on the synthetic corpus (docs/avatars.md has the numbers).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from metahead import perf
from metahead.config import ExperimentConfig
from metahead.fileio import atomic_path, atomic_write_text
from metahead.losses import ContentLoss, adversarial_loss, discriminator_loss

AMP_MODES = perf.AMP_MODES
SCHEDULES = ("constant", "cosine")


@dataclass
class FewShotFrames:
    """The T frames of one person: images, landmark images (T, 3, S, S) in [-1, 1]; landmarks (T, 68, 2)."""

    images: torch.Tensor
    landmark_images: torch.Tensor
    landmarks: torch.Tensor

    def __post_init__(self) -> None:
        t = len(self.images)
        if t == 0:
            raise ValueError("fine-tuning needs at least one frame")
        if (
            self.images.shape != self.landmark_images.shape
            or self.images.ndim != 4
            or self.images.shape[1] != 3
        ):
            raise ValueError(
                f"images and landmark images must both be (T, 3, S, S), got {tuple(self.images.shape)} "
                f"and {tuple(self.landmark_images.shape)}"
            )
        if self.landmarks.shape != (t, 68, 2):
            raise ValueError(f"landmarks must be ({t}, 68, 2), got {tuple(self.landmarks.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device | str) -> FewShotFrames:
        return FewShotFrames(
            self.images.to(device), self.landmark_images.to(device), self.landmarks.to(device)
        )


@dataclass
class FinetuneResult:
    """A fine-tuned person: G (eval mode) with its AdaIN parameters ψ', D with w', the loss history."""

    generator: nn.Module
    adain_params: torch.Tensor  # ψ' (1, num_adain_params)
    person_embedding: torch.Tensor  # ê_NEW (1, N)
    discriminator: nn.Module
    person_vector: torch.Tensor  # w' (1, N)
    history: list[dict[str, float]] = field(default_factory=list)  # one record per step


@torch.no_grad()
def person_embedding(
    embedder: nn.Module, images: torch.Tensor, landmark_images: torch.Tensor, batch_size: int = 8
) -> torch.Tensor:
    """ê_NEW = mean over the T frames of E(x(t), y(t)): (1, N). E runs in eval mode, `batch_size` frames at
    a time, so any T fits in memory."""
    was_training = embedder.training
    embedder.eval()
    try:
        parts = [
            embedder(images[i : i + batch_size], landmark_images[i : i + batch_size]).float()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        embedder.train(was_training)
    return torch.cat(parts).mean(0, keepdim=True)


@torch.no_grad()
def feed_forward_params(generator: nn.Module, embedding: torch.Tensor) -> torch.Tensor:
    """The FF avatar's AdaIN parameters ψ̂ = P ê_NEW: (1, num_adain_params)."""
    return generator.project(embedding).detach().clone()


@torch.no_grad()
def reconstruction_l1(
    generator: nn.Module, adain_params: torch.Tensor, frames: FewShotFrames, batch_size: int = 8
) -> float:
    """Mean |G(y, ψ) − x| over the frames, G in eval mode: how well ψ and G reproduce them."""
    was_training = generator.training
    generator.eval()
    try:
        total = 0.0
        for i in range(0, len(frames), batch_size):
            fake = generator(frames.landmark_images[i : i + batch_size], adain_params=adain_params)
            total += float((fake.float() - frames.images[i : i + batch_size].float()).abs().mean()) * len(
                fake
            )
    finally:
        generator.train(was_training)
    return total / len(frames)


def _half_cosine(progress: float) -> float:
    """The cosine schedule's factor on the rates: 1 at progress 0, falling to 0 at progress 1."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def _batches(count: int, batch_size: int, steps: int, generator: torch.Generator) -> list[torch.Tensor]:
    """`steps` index batches over `count` frames: each frame once per pass, every pass in a fresh order."""
    batch_size = min(batch_size, count)
    order: list[int] = []
    out = []
    for _ in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(count, generator=generator).tolist()
        out.append(torch.tensor(order[:batch_size]))
        order = order[batch_size:]
    return out


def finetune(
    embedder: nn.Module,
    generator: nn.Module,
    discriminator: nn.Module,
    frames: FewShotFrames,
    cfg: ExperimentConfig,
    *,
    content_loss: nn.Module | None = None,
    device: torch.device | str = "cpu",
    amp: str = "none",
    progress: bool = True,
    evaluate_every: int = 0,
    held_out: FewShotFrames | None = None,
) -> FinetuneResult:
    """Fine-tune copies of G and D on the T frames (cfg.finetune: steps, batch_size, learning rates, seed;
    cfg.loss: the loss weights).

    content_loss: L_CNT module (default ContentLoss(cfg.loss), built here). evaluate_every > 0 adds the
    reconstruction L1 of all T frames (G in eval mode) to the history every that many steps (and at the
    first and last step); with `held_out` frames of the same person (never trained on), their L1 as well
    ("held_out_l1"): the curve that shows when more steps stop helping. Returns the fine-tuned G and D,
    ψ', ê_NEW, w' and the per-step loss history.
    """
    fc = cfg.finetune
    if fc.steps < 0 or fc.batch_size < 1 or fc.min_passes < 0:
        raise ValueError(
            "finetune.steps and finetune.min_passes must be >= 0 and finetune.batch_size >= 1, got "
            f"{fc.steps}, {fc.min_passes} and {fc.batch_size}"
        )
    if fc.schedule not in SCHEDULES:
        raise ValueError(f"finetune.schedule={fc.schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if fc.minutes < 0:
        raise ValueError(f"finetune.minutes must not be negative, got {fc.minutes}")
    if fc.generic_rate_scale < 0:
        raise ValueError(f"finetune.generic_rate_scale must not be negative, got {fc.generic_rate_scale}")
    total_steps = fc.steps_for(len(frames))  # finetune.steps, more for many shots (finetune.min_passes)
    device = torch.device(device)
    frames = frames.to(device)
    held_out = held_out.to(device) if held_out is not None else None
    embedder = embedder.to(device)
    embedding = person_embedding(embedder, frames.images, frames.landmark_images)  # ê_NEW
    generator = copy.deepcopy(generator).to(device).train()
    discriminator = copy.deepcopy(discriminator).to(device).train()
    adain_params = nn.Parameter(feed_forward_params(generator, embedding))  # ψ' = P ê_NEW, now free
    person_vector = nn.Parameter(
        (discriminator.w0.detach() + embedding[0]).unsqueeze(0).clone()
    )  # w' = w0 + ê
    if content_loss is None:
        content_loss = ContentLoss(cfg.loss)
    content_loss = content_loss.to(device)

    # P is not used any more (ψ' replaces P ê), nor are D's W rows and w0 (w' replaces W_i + w0).
    generic_params = [p for name, p in generator.named_parameters() if not name.startswith("projection.")]
    discriminator_params = [
        p for name, p in discriminator.named_parameters() if not name.startswith(("video_embeddings.", "w0"))
    ]
    betas = tuple(fc.adam_betas)
    # ψ' first: the history's lr_generator is its rate. The person-generic weights ψ move at
    # generic_rate_scale times that rate (0: not at all, and without their weight gradients).
    generator_groups = [{"params": [adain_params], "lr": fc.lr_generator}]
    if fc.generic_rate_scale > 0:
        generator_groups.append({"params": generic_params, "lr": fc.lr_generator * fc.generic_rate_scale})
    else:
        for parameter in generic_params:
            parameter.requires_grad_(False)
    optimizer_generator = torch.optim.Adam(generator_groups, betas=betas)
    optimizer_discriminator = torch.optim.Adam(
        [*discriminator_params, person_vector], lr=fc.lr_discriminator, betas=betas
    )
    for optimizer in (optimizer_generator, optimizer_discriminator):
        for group in optimizer.param_groups:
            group["base_lr"] = group["lr"]  # the schedule's starting rate, per group
    budget_seconds = 60 * fc.minutes
    deadline = time.monotonic() + budget_seconds if budget_seconds > 0 else None
    rng = torch.Generator().manual_seed(fc.seed)
    autocast = perf.autocast_context(amp, device)  # raises ValueError for an unknown mode
    history: list[dict[str, float]] = []
    bar = None
    if progress and total_steps > 0:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, unit="step", desc="fine-tuning", dynamic_ncols=True)
    try:
        for step, index in enumerate(_batches(len(frames), fc.batch_size, total_steps, rng), start=1):
            if fc.schedule == "cosine":
                # Along whichever runs out first, the steps or the time budget: a fine-tuning cut short by
                # finetune.minutes still ends at a rate near 0 instead of stopping at full rate.
                progress = (step - 1) / total_steps
                if deadline is not None:
                    progress = max(progress, 1.0 - (deadline - time.monotonic()) / budget_seconds)
                for optimizer in (optimizer_generator, optimizer_discriminator):
                    for group in optimizer.param_groups:
                        group["lr"] = group["base_lr"] * _half_cosine(progress)
            index = index.to(device)
            real, landmark_image = frames.images[index], frames.landmark_images[index]
            landmarks = frames.landmarks[index]

            # --- G and ψ' step: L_CNT + L_ADV ----------------------------------------------------------
            # D's pass over the real frames serves both steps: its activations are feature matching's
            # target here, its realism L_DSC's real half below (D does not change in between; spectral
            # norm clones its power-iteration vectors, so the graph survives the passes in between).
            # One D pass fewer per step than a separate pass for each (~8% of a demo step).
            discriminator.requires_grad_(True)
            with autocast:
                real_realism, real_features = discriminator.forward_with_embedding(
                    real, landmark_image, person_vector
                )
            discriminator.requires_grad_(False)
            with autocast:
                fake = generator(landmark_image, adain_params=adain_params)
                fake_realism, fake_features = discriminator.forward_with_embedding(
                    fake, landmark_image, person_vector
                )
                loss_content, content_terms = content_loss(
                    fake, real, fake_landmarks=landmarks, real_landmarks=landmarks
                )
            loss_adversarial, adversarial_terms = adversarial_loss(
                fake_realism.float(),
                [f.detach().float() for f in real_features],
                [f.float() for f in fake_features],
                cfg.loss.feature_matching_weight,
                cfg.loss.adversarial_weight,
            )
            loss_generator = loss_content.float() + loss_adversarial
            if not torch.isfinite(loss_generator):
                raise FloatingPointError(
                    f"fine-tuning step {step}: the generator loss is not finite ({float(loss_generator)}); "
                    "try a lower finetune.lr_generator or amp='none'"
                )
            optimizer_generator.zero_grad(set_to_none=True)
            loss_generator.backward()
            optimizer_generator.step()

            # --- D and w' step: L_DSC --------------------------------------------------------------------
            discriminator.requires_grad_(True)
            with autocast:
                fake_realism_d, _ = discriminator.forward_with_embedding(
                    fake.detach(), landmark_image, person_vector
                )
            real_realism, fake_realism_d = real_realism.float(), fake_realism_d.float()
            loss_dsc, _ = discriminator_loss(real_realism, fake_realism_d)
            optimizer_discriminator.zero_grad(set_to_none=True)
            loss_dsc.backward()
            optimizer_discriminator.step()
            out_of_time = deadline is not None and time.monotonic() > deadline

            record = {
                "step": step,
                "generator_total": loss_generator.detach().item(),
                "content": loss_content.detach().item(),
                "adversarial": loss_adversarial.detach().item(),
                "discriminator": loss_dsc.detach().item(),
                "score_real": real_realism.detach().mean().item(),
                "score_fake": fake_realism_d.detach().mean().item(),
                "lr_generator": optimizer_generator.param_groups[0]["lr"],  # the rate this step was taken at
                **{f"content_{k}": v.detach().item() for k, v in content_terms.items()},
                **{f"adversarial_{k}": v.detach().item() for k, v in adversarial_terms.items()},
            }
            last = step == total_steps or out_of_time
            if evaluate_every > 0 and (step == 1 or step % evaluate_every == 0 or last):
                record["reconstruction_l1"] = reconstruction_l1(generator, adain_params.detach(), frames)
                if held_out is not None:
                    record["held_out_l1"] = reconstruction_l1(generator, adain_params.detach(), held_out)
            history.append(record)
            if bar is not None:
                bar.set_postfix(
                    content=f"{record['content']:.3g}", dsc=f"{record['discriminator']:.3g}", refresh=False
                )
                bar.update(1)
            if out_of_time:
                break
    finally:
        if bar is not None:
            bar.close()
    generator.eval().requires_grad_(False)
    discriminator.eval().requires_grad_(False)
    return FinetuneResult(
        generator=generator,
        adain_params=adain_params.detach(),
        person_embedding=embedding,
        discriminator=discriminator,
        person_vector=person_vector.detach(),
        history=history,
    )


# --- The loss curve: JSON + PNG --------------------------------------------------------------------------

CURVE_SERIES = (
    "generator_total",
    "content",
    "adversarial",
    "discriminator",
    "reconstruction_l1",
    "held_out_l1",
)


def save_loss_curve(
    history: Sequence[dict[str, float]],
    json_path: str | os.PathLike,
    png_path: str | os.PathLike | None = None,
    title: str = "fine-tuning",
) -> None:
    """Write the per-step history as JSON ({"steps": [...], "<series>": [...]}) and, if png_path is given,
    a PNG with one panel per loss series, both atomically."""
    series: dict[str, list[float | None]] = {"step": [int(r["step"]) for r in history]}
    names = sorted({k for r in history for k in r if k != "step"})
    for name in names:
        series[name] = [(r[name] if name in r and math.isfinite(r[name]) else None) for r in history]
    atomic_write_text(json_path, json.dumps({"title": title, "series": series}, indent=1) + "\n")
    if png_path is not None:
        shown = [n for n in CURVE_SERIES if n in series and any(v is not None for v in series[n])]
        _plot_panels(series["step"], {n: series[n] for n in shown}, png_path, title)


def _plot_panels(steps: list[int], series: dict[str, list[float | None]], path: str | os.PathLike,
                 title: str, width: int = 640, panel_height: int = 150) -> None:  # fmt: skip
    """A dependency-free line plot (Pillow): one panel per series, its own y range, labelled min/max."""
    from PIL import Image, ImageDraw

    margin_left, margin_right, margin_top, gap = 70, 15, 24, 22
    height = margin_top + max(1, len(series)) * (panel_height + gap)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin_left, 6), f"{title} ({len(steps)} steps)", fill="black")
    plot_w = width - margin_left - margin_right
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    last_step = max(steps[-1], 1) if steps else 1
    for row, (name, values) in enumerate(series.items()):
        top = margin_top + row * (panel_height + gap) + gap
        draw.rectangle([margin_left, top, margin_left + plot_w, top + panel_height], outline="#888888")
        pts = [(s, v) for s, v in zip(steps, values) if v is not None]
        if not pts:
            continue
        low, high = min(v for _, v in pts), max(v for _, v in pts)
        span = high - low if high > low else max(abs(high), 1e-12)
        xy = [
            (margin_left + plot_w * (s / last_step), top + panel_height - panel_height * (v - low) / span)
            for s, v in pts
        ]
        if len(xy) == 1:
            x, y = xy[0]
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colours[row % len(colours)])
        else:
            draw.line(xy, fill=colours[row % len(colours)], width=2)
        draw.text((4, top - 2), f"{high:.4g}", fill="black")
        draw.text((4, top + panel_height - 10), f"{low:.4g}", fill="black")
        draw.text((margin_left + 4, top - gap + 6), name, fill=colours[row % len(colours)])
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def loss_curve_paths(avatar_path: str | os.PathLike) -> tuple[Path, Path]:
    """Where `metahead avatar` writes the fine-tuning curve of AVATAR: AVATAR.finetune.json / .png."""
    path = Path(avatar_path)
    return path.with_name(path.name + ".finetune.json"), path.with_name(path.name + ".finetune.png")


def summarise_history(history: Sequence[dict[str, float]]) -> dict[str, float]:
    """First and last values of the main series (what the avatar file records)."""
    out: dict[str, float] = {"steps": len(history)}
    for name in CURVE_SERIES:
        values = [r[name] for r in history if name in r]
        if values:
            out[f"{name}_first"] = float(values[0])
            out[f"{name}_last"] = float(np.mean(values[-min(5, len(values)) :]))
    return out
