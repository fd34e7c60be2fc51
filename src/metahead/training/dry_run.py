"""`metahead train --dry-run`: what a researcher checks before booking GPUs.

Builds everything a run builds (dataset, networks, W, optimisers, content loss, process group), trains a
warm-up step and two more in a scratch folder that is deleted afterwards, and reports parameters, peak
memory, step time, images/s, W's size, and the projected time per epoch and for W's start (E over K frames
of every training video) on the dataset given. W's start is timed on a sample of videos and projected, not
run in full.
"""

from __future__ import annotations

import copy
import json
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Subset

from metahead.config import ExperimentConfig
from metahead.data.episodes import EpisodeDataset
from metahead.training import checkpoint, distributed
from metahead.training.logging import LOG_FILE
from metahead.training.video_embeddings import embed_training_videos

# The first step warms up (and is followed by the first sample grid, which the second step's time would
# include); the third is the one timed.
DRY_RUN_STEPS = 3
SAMPLE_VIDEOS = 16  # videos E embeds to time W's start (per process)


@dataclass
class DryRunReport:
    preset: str
    num_videos: int
    world_size: int
    device: str
    amp: str
    batch_size: int  # episodes per step per process
    frames_per_episode: int  # K + 1
    parameters: dict[str, int]  # E, G (P included), P, D without W
    video_embedding_shape: tuple[int, int]  # W: num_videos × N
    peak_memory_bytes: int
    memory_kind: str
    first_step_s: float
    step_s: float  # the last step's time (after warm-up, without samples or checkpoints)
    images_per_s: float  # all processes together
    steps_per_epoch: int
    video_embedding_init: str
    embed_seconds_per_video: float  # E over K frames of one video, on one process
    embed_sample_videos: int  # how many videos that was timed on
    is_main: bool  # rank 0, which alone has the figures from the run's log

    @property
    def epoch_s(self) -> float:
        return self.steps_per_epoch * self.step_s

    @property
    def video_embedding_start_s(self) -> float:
        """W's start over all processes (each embeds its share), or 0 where W starts at random."""
        if self.video_embedding_init == "random":
            return 0.0
        return self.embed_seconds_per_video * -(-self.num_videos // self.world_size)


def dry_run(cfg: ExperimentConfig, steps: int = DRY_RUN_STEPS) -> DryRunReport:
    """`steps` training steps of `cfg` on cfg.train.data, in a scratch folder (cfg.train.out is not
    touched)."""
    from metahead.training.meta import train

    ctx = distributed.setup(cfg.train.device)  # torchrun's rank and device; train() joins the group itself
    scratch = Path(tempfile.mkdtemp(prefix="metahead-dry-run-"))
    try:
        trial = copy.deepcopy(cfg)
        tc = trial.train
        tc.out, tc.steps, tc.log_every, tc.time_limit_minutes = str(scratch / "run"), steps, 1, 0.0
        tc.sample_every = tc.checkpoint_every = steps
        init_mode = tc.video_embedding_init if tc.finetunable else "random"
        tc.video_embedding_init = "random"  # W's start is timed on a sample below, not run in full
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ctx.device)
        train(trial)
        if ctx.device.type == "cuda":
            peak, memory_kind = torch.cuda.max_memory_allocated(ctx.device), f"{ctx.device} allocated"
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
            memory_kind = "this process's peak RSS"
        records = _log_records(Path(tc.out)) if ctx.is_main else []
        parameters = _parameter_counts(Path(tc.out) / checkpoint.MODEL_FILE) if ctx.is_main else {}
        episodes = EpisodeDataset(
            tc.data, split="train", shots=tc.shots, image_size=trial.model.image_size, seed=tc.seed
        )
        sample = min(SAMPLE_VIDEOS, len(episodes))
        seconds_per_video = _time_embedding(trial, episodes, sample, ctx) if init_mode != "random" else 0.0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    num_videos = episodes.num_videos
    return DryRunReport(
        preset=cfg.preset,
        num_videos=num_videos,
        world_size=ctx.world_size,
        device=str(ctx.device),
        amp=cfg.train.amp,
        batch_size=tc.batch_size,
        frames_per_episode=tc.shots + 1,
        parameters=parameters,
        video_embedding_shape=(num_videos, cfg.model.embedding_dim),
        peak_memory_bytes=peak,
        memory_kind=memory_kind,
        first_step_s=records[0]["throughput/step_time_s"] if records else 0.0,
        step_s=records[-1]["throughput/step_time_s"] if records else 0.0,
        images_per_s=records[-1]["throughput/images_per_s"] if records else 0.0,
        steps_per_epoch=distributed.episodes_per_rank(num_videos, ctx.world_size) // tc.batch_size,
        video_embedding_init=init_mode,
        embed_seconds_per_video=seconds_per_video,
        embed_sample_videos=sample,
        is_main=ctx.is_main,
    )


def _log_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / LOG_FILE).read_text().splitlines()]


def _parameter_counts(model_file: Path) -> dict[str, int]:
    embedder, generator, discriminator, _ = checkpoint.load_model(model_file)

    def count(module: torch.nn.Module, skip: str = "") -> int:
        return sum(p.numel() for name, p in module.named_parameters() if not (skip and name.startswith(skip)))

    return {
        "E": count(embedder),
        "G": count(generator),
        "P": count(generator.projection),
        "D": count(discriminator, skip=checkpoint.VIDEO_EMBEDDINGS_PREFIX),
    }


def _time_embedding(
    cfg: ExperimentConfig, episodes: EpisodeDataset, count: int, ctx: distributed.DistributedContext
) -> float:
    """Seconds per video of W's start on this process (a fresh E; the run's data loading workers)."""
    from metahead.models import Embedder

    embedder = Embedder(cfg.model).to(ctx.device)
    sample = Subset(episodes, range(count))
    alone = distributed.DistributedContext(0, ctx.local_rank, 1, ctx.device)
    embed_training_videos(embedder, Subset(sample, [0]), alone, seed=0, progress=False)  # warm-up
    start = time.perf_counter()
    embed_training_videos(embedder, sample, alone, seed=0, num_workers=cfg.train.num_workers, progress=False)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    return (time.perf_counter() - start) / len(sample)


def format_report(report: DryRunReport) -> str:
    """The report as a few lines of text."""
    millions = {name: f"{count / 1e6:.2f}M" for name, count in report.parameters.items()}
    rows, dim = report.video_embedding_shape
    w_bytes = rows * dim * 4
    lines = [
        f"metahead train --dry-run: preset {report.preset}, {report.num_videos:,} training videos, "
        f"{report.world_size} process(es) on {report.device}, amp {report.amp}, "
        f"batch {report.batch_size} per process",
        "parameters: "
        + ", ".join(f"{name} {value}" for name, value in millions.items())
        + " (G includes P; D without W)",
        f"W: {rows:,} x {dim} = {rows * dim / 1e6:.2f}M values, {_size(w_bytes)} "
        f"(+ {_size(w_bytes + rows * 8)} of its optimiser's state)",
        f"peak memory: {_size(report.peak_memory_bytes)} ({report.memory_kind})",
        f"step time: {report.step_s:.3g} s (first step {report.first_step_s:.3g} s, with warm-up); "
        f"{report.images_per_s:.3g} images/s over all processes "
        f"({report.frames_per_episode} frames per episode)",
        f"one epoch: {report.steps_per_epoch:,} steps of {report.batch_size} x {report.world_size} episodes: "
        f"{_duration(report.epoch_s)} projected",
    ]
    if report.video_embedding_init == "random":
        lines.append("W's start: random (train.video_embedding_init=random): no E pass")
    else:
        lines.append(
            f"W's start ({report.video_embedding_init}): E over K frames, "
            f"{report.embed_seconds_per_video:.3g} s per video on one process "
            f"(timed on {report.embed_sample_videos}): "
            f"{_duration(report.video_embedding_start_s)} projected for {report.num_videos:,} videos over "
            f"{report.world_size} process(es)"
        )
    return "\n".join(lines)


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return ""


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"
