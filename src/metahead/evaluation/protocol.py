"""The paper's evaluation protocol (Sec. 4, Table 1), on top of avatars, metrics and the job runner.

Self-reenactment: for each test video (a person unseen in meta-training), hold out `eval_frames` frames
(32 in the paper), make an avatar from T other frames of the same video (T = 1, 8, 32; the shots for a
smaller T are a subset of those for a larger one) and render the held-out frames from their landmarks;
compare with the real frames. Methods: "ft" (fine-tuned avatar), "ff" (feed-forward avatar), and the
baselines "nearest_shot" and "from_scratch" (evaluation.baselines). Where the held-out frames come from
(eval_source): "same-video", random frames of the shots' video (the paper); "split-video", the shots from
the first half of the video and the held-out frames from the second (real clips: neighbouring frames are
near copies, so random hold-out lets a shot stand in for its neighbour); "other-videos", the person's
other videos (separate takes of one speaker: the avatar is made from one take and judged on the others);
"auto", other-videos for people with several videos and split-video for the rest.

Cross-identity reenactment (no ground truth): an avatar of person A driven by person B's frames, with
and without retargeting B's landmarks onto A's face shape; CSIM of the results to A's own photos (the T
shots) and the landmark error to B's frames, next to the CSIM of B's real frames to A's photos (what a
result that copied the driver would score).

Every (video, T, method) is one job of `evaluation.runner`: run in parallel, appended to
OUT/results.jsonl and skipped when the evaluation is run again (adding a T or a method later reuses the
rest). Set-level metrics (FID, identity FD) keep each job's features in OUT/features/; the report
(evaluation.report) pools them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metahead.config import ExperimentConfig, apply_section_overrides
from metahead.data.format import DataError, Dataset, VideoReader
from metahead.evaluation.methods import METHODS, MODEL_METHODS, SAMPLE_FRAMES
from metahead.evaluation.metrics import FramePairs, MetricResources, available_metric_names, get_metrics
from metahead.evaluation.report import build_report, write_report_files
from metahead.evaluation.runner import Job, RunSummary, run_jobs
from metahead.fileio import atomic_path, atomic_write_text

EVAL_SOURCES = ("same-video", "split-video", "other-videos", "auto")
RESULTS_FILE = "results.jsonl"
PLAN_FILE = "plan.json"


# What --set may change for FT avatars: the fine-tuning settings and the loss they minimise.
FINETUNE_SECTIONS = ("finetune", "loss")


@dataclass
class ProtocolConfig:
    model: str  # model file (training.checkpoint.save_model)
    data: str  # dataset folder
    out: str  # report folder
    shots: tuple[int, ...] = (1, 8, 32)  # T (paper: 1, 8, 32)
    eval_frames: int = 32  # held-out frames per video (paper: 32)
    max_videos: int | None = 50  # test videos (paper: 50); None = all
    # At most this many videos (avatars) per person, drawn with the seed; None = all. Keeps a person with
    # many takes from outweighing everyone else (and the run short).
    max_videos_per_identity: int | None = None
    split: str = "test"
    eval_source: str = "same-video"  # one of EVAL_SOURCES
    methods: tuple[str, ...] = tuple(METHODS)
    metrics: tuple[str, ...] | None = None  # None: all available (FID only with the Inception weights)
    finetune_steps: int | None = None  # None: the model config's for T (finetune.steps_for); else exactly
    # "finetune.FIELD=VALUE" / "loss.FIELD=VALUE" applied to the model's config for FT avatars
    finetune_overrides: tuple[str, ...] = ()
    cross_identity_pairs: int = 0  # (avatar, driver) pairs of different people; 0 = none
    cross_identity_shots: int | None = None  # T for cross-identity avatars (default: the largest T that fits)
    seed: int = 0
    device: str = "cpu"
    amp: str = "none"
    inception_weights: str | None = None
    workers: int | None = 1  # None: as many as the machine allows
    grid_videos: int = 4  # videos shown in each T's image grid

    def __post_init__(self) -> None:
        self.shots = tuple(sorted({int(t) for t in self.shots}))
        if not self.shots or self.shots[0] < 1:
            raise ValueError(f"shots (T) must be positive integers, got {self.shots}")
        if self.eval_frames < 1:
            raise ValueError(f"eval_frames must be >= 1, got {self.eval_frames}")
        if self.eval_source not in EVAL_SOURCES:
            raise ValueError(f"eval_source must be one of {EVAL_SOURCES}, got {self.eval_source!r}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
        if self.metrics is not None:
            get_metrics(self.metrics)  # unknown names fail here, before any work
        self.finetune_overrides = tuple(self.finetune_overrides)
        apply_section_overrides(ExperimentConfig(), self.finetune_overrides, FINETUNE_SECTIONS, "--set")

    def signature(self) -> dict[str, Any]:
        """What makes two runs' results comparable (shots and methods may grow between runs)."""
        model = Path(self.model)
        stat = model.stat()
        return {
            "model": str(model.resolve()),
            "model_size": stat.st_size,
            "model_mtime": int(stat.st_mtime),
            "data": str(Path(self.data).resolve()),
            "split": self.split,
            "eval_frames": self.eval_frames,
            "eval_source": self.eval_source,
            "max_videos": self.max_videos,
            "max_videos_per_identity": self.max_videos_per_identity,
            "metrics": list(self.metrics or []),
            "finetune_steps": self.finetune_steps,
            **({"finetune_overrides": list(self.finetune_overrides)} if self.finetune_overrides else {}),
            "seed": self.seed,
        }


# ----------------------------------------------------------------------------------------------
# Which frames: the plan


@dataclass(frozen=True)
class VideoPlan:
    """One test video: where its shots come from and which frames it is judged on."""

    identity: str
    video: str
    path: str  # the shots' video, relative to DATA/videos
    shot_pool: tuple[int, ...]  # the shots for T are shot_pool[:T] (so 1 ⊂ 8 ⊂ 32)
    targets: tuple[tuple[str, int], ...]  # held-out frames: (video path, frame index)

    @property
    def name(self) -> str:
        return f"{self.identity}/{self.video}"

    def shots(self, count: int) -> list[tuple[str, int]]:
        return [(self.path, i) for i in self.shot_pool[:count]]


def _rng(seed: int, *names: str) -> np.random.Generator:
    """A generator that depends only on the seed and the names (stable across runs and processes)."""
    digest = hashlib.sha256("\0".join([str(seed), *names]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def plan_evaluation(dataset: Dataset, cfg: ProtocolConfig) -> tuple[list[VideoPlan], list[str]]:
    """The test videos with their shot pools and held-out frames, and notes on what was left out."""
    records = sorted(dataset.split(cfg.split), key=lambda r: (r.identity, r.video))
    if not records:
        raise DataError(f"{dataset.root}: no videos in split {cfg.split!r}")
    notes: list[str] = []
    plans: list[VideoPlan] = []
    videos_of: dict[str, list] = {}
    for record in records:
        videos_of.setdefault(record.identity, []).append(record)
    for record in records:
        rng = _rng(cfg.seed, record.identity, record.video)
        order = [int(i) for i in rng.permutation(record.num_frames)]
        source = cfg.eval_source
        others = [r for r in videos_of[record.identity] if r.video != record.video]
        if source == "auto":
            source = "other-videos" if others else "split-video"
        if source == "other-videos":
            frames = [(r.path, f) for r in others for f in range(r.num_frames)]
            if not frames:
                notes.append(f"{record.identity}/{record.video}: the person has no other video; skipped")
                continue
            picked = rng.choice(len(frames), size=min(cfg.eval_frames, len(frames)), replace=False)
            targets = tuple(frames[i] for i in sorted(picked))
            pool = tuple(order)
        elif source == "split-video":
            first_part = record.num_frames // 2
            if first_part < 1:
                notes.append(
                    f"{record.identity}/{record.video}: {record.num_frames} frame(s), too few to split"
                )
                continue
            pool = tuple(i for i in order if i < first_part)
            rest = [i for i in order if i >= first_part]
            targets = tuple((record.path, i) for i in sorted(rest[: cfg.eval_frames]))
            if len(targets) < cfg.eval_frames:
                notes.append(
                    f"{record.identity}/{record.video}: {len(targets)} held-out frames in the second half "
                    f"(fewer than {cfg.eval_frames})"
                )
        else:
            if record.num_frames <= cfg.eval_frames:
                notes.append(
                    f"{record.identity}/{record.video}: {record.num_frames} frames, not more than the "
                    f"{cfg.eval_frames} held out; skipped"
                )
                continue
            targets = tuple((record.path, i) for i in sorted(order[: cfg.eval_frames]))
            pool = tuple(order[cfg.eval_frames :])
        plans.append(VideoPlan(record.identity, record.video, record.path, pool, targets))
    if cfg.max_videos_per_identity is not None:
        kept: list[VideoPlan] = []
        for identity, group in itertools.groupby(plans, key=lambda p: p.identity):  # plans are by identity
            own = list(group)
            if len(own) > cfg.max_videos_per_identity:
                chosen = sorted(
                    _rng(cfg.seed, "per-identity", identity).choice(
                        len(own), cfg.max_videos_per_identity, False
                    )
                )
                notes.append(f"{identity}: {len(chosen)} of its {len(own)} videos evaluated (max per person)")
                own = [own[i] for i in chosen]
            kept += own
        plans = kept
    if cfg.max_videos is not None and len(plans) > cfg.max_videos:
        chosen = sorted(_rng(cfg.seed, "videos").choice(len(plans), size=cfg.max_videos, replace=False))
        plans = [plans[i] for i in chosen]
    for plan in plans:
        for t in cfg.shots:
            if t > len(plan.shot_pool):
                notes.append(f"{plan.name}: only {len(plan.shot_pool)} frames for shots, so no T={t}")
    return plans, notes


def cross_identity_pairs(plans: Sequence[VideoPlan], count: int) -> list[tuple[VideoPlan, VideoPlan]]:
    """Up to `count` (avatar, driver) pairs of different people: each video drives the avatar of the
    next video (in plan order) that shows someone else."""
    pairs = []
    for i, avatar in enumerate(plans):
        if len(pairs) >= count:
            break
        for offset in range(1, len(plans)):
            driver = plans[(i + offset) % len(plans)]
            if driver.identity != avatar.identity:
                pairs.append((avatar, driver))
                break
    return pairs


# ----------------------------------------------------------------------------------------------
# Jobs


@dataclass(frozen=True)
class SelfJob:
    plan: VideoPlan
    shots: int
    method: str
    keep_samples: bool


@dataclass(frozen=True)
class CrossJob:
    avatar: VideoPlan
    driver: VideoPlan
    shots: int
    method: str
    keep_samples: bool


def safe_name(key: str) -> str:
    """A file name for a job key."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", key.replace("/", "__").replace("->", "--"))


def build_jobs(cfg: ProtocolConfig, plans: Sequence[VideoPlan]) -> list[Job]:
    jobs = []
    shown = {plan.name for plan in plans[: cfg.grid_videos]}
    for plan in plans:
        for t in cfg.shots:
            if t > len(plan.shot_pool):
                continue
            for method in cfg.methods:
                key = f"{plan.name}/T{t}/{method}"
                jobs.append(Job(key, SelfJob(plan, t, method, plan.name in shown)))
    pairs = cross_identity_pairs(plans, cfg.cross_identity_pairs)
    for n, (avatar, driver) in enumerate(pairs):
        t = cfg.cross_identity_shots or max([s for s in cfg.shots if s <= len(avatar.shot_pool)], default=0)
        if t < 1 or t > len(avatar.shot_pool):
            continue
        for method in (m for m in cfg.methods if m in MODEL_METHODS):
            key = f"cross/{avatar.name}->{driver.name}/T{t}/{method}"
            jobs.append(Job(key, CrossJob(avatar, driver, t, method, n < cfg.grid_videos)))
    return jobs


@dataclass
class WorkerState:
    """What a worker process loads once: the model, the fine-tuning loss, the metric networks."""

    cfg: ProtocolConfig
    model: tuple  # (E, G, D-lite, ExperimentConfig)
    resources: MetricResources
    metric_names: list[str]
    content_loss: Any = None
    readers: dict[str, VideoReader] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return self.model[3].model.image_size

    def get_content_loss(self) -> Any:
        if self.content_loss is None:
            from metahead.losses import ContentLoss

            self.content_loss = ContentLoss(self.model[3].loss)
        return self.content_loss

    def read(self, frames: Sequence[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray]:
        """uint8 frames (N, H, W, 3) and landmarks (N, 68, 2) at the dataset's size, in the order given."""
        images, points = [], []
        for path, index in frames:
            if path not in self.readers:
                self.readers[path] = VideoReader(self.cfg.data, path)
            reader = self.readers[path]
            images.append(reader.read_frames([index])[0])
            points.append(reader.read_landmarks([index])[0])
        return np.stack(images), np.stack(points)

    def read_tensors(self, frames: Sequence[tuple[str, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (N, 3, S, S) in [-1, 1] and landmarks (N, 68, 2) at the model's size S."""
        return self.as_tensors(*self.read(frames))

    def as_tensors(self, images: np.ndarray, points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """`read`'s uint8 frames and landmarks as read_tensors gives them (without decoding them again)."""
        from metahead.data.episodes import frames_to_tensor, resize_frames

        return resize_frames(frames_to_tensor(images), torch.from_numpy(points), self.image_size)


def build_worker_state(cfg: ProtocolConfig, metric_names: Sequence[str]) -> WorkerState:
    from metahead.training.checkpoint import load_model

    embedder, generator, discriminator, model_cfg = load_model(cfg.model, map_location=cfg.device)
    model_cfg = apply_section_overrides(model_cfg, cfg.finetune_overrides, FINETUNE_SECTIONS, "--set")
    model = (embedder, generator, discriminator, model_cfg)
    resources = MetricResources(device=cfg.device, inception_weights=cfg.inception_weights)
    return WorkerState(cfg, model, resources, list(metric_names))


def _make_avatar(state: WorkerState, method: str, shot_frames: np.ndarray, shot_landmarks: np.ndarray):
    from metahead.avatar import Avatar
    from metahead.evaluation.baselines import from_scratch_networks

    cfg = state.cfg
    model = from_scratch_networks(state.model[3], cfg.seed) if method == "from_scratch" else state.model
    finetune = method in ("ft", "from_scratch")
    return Avatar.create(
        model,
        frames=shot_frames,
        landmarks=shot_landmarks,
        finetune=finetune,
        steps=cfg.finetune_steps,
        device=cfg.device,
        amp=cfg.amp,
        content_loss=state.get_content_loss() if finetune else None,
        progress=False,
    )


def _render(avatar, landmarks: torch.Tensor | np.ndarray, batch_size: int = 8) -> torch.Tensor:
    points = torch.as_tensor(np.asarray(landmarks), dtype=torch.float32)
    return torch.cat(
        [
            avatar.render_images(avatar.landmark_images(points[i : i + batch_size])).float().cpu()
            for i in range(0, len(points), batch_size)
        ]
    )


def _save_strip(path: Path, images: torch.Tensor) -> None:
    """Frames (N, 3, S, S) in [-1, 1] side by side as one PNG."""
    from PIL import Image

    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    strip = np.concatenate(list(pixels), axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(strip).save(tmp, format="PNG")


def _save_features(out: Path, key: str, features: dict[str, tuple[np.ndarray, np.ndarray]]) -> str | None:
    if not features:
        return None
    relative = f"features/{safe_name(key)}.npz"
    path = out / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        f"{name}.{side}": array
        for name, pair in features.items()
        for side, array in zip(("real", "fake"), pair)
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return relative


def _self_reenactment(state: WorkerState, job: SelfJob, key: str) -> dict[str, Any]:
    from metahead.evaluation.baselines import nearest_shot
    from metahead.evaluation.metrics import evaluate_frames, ssim

    out = Path(state.cfg.out)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    real, target_landmarks = state.read_tensors(job.plan.targets)
    shot_frames, shot_points = state.read(job.plan.shots(job.shots))
    shot_images, shot_landmarks = state.as_tensors(shot_frames, shot_points)
    shot_ssim = None  # how closely the avatar re-renders its own T shots (none for the nearest shot: 1)
    if job.method == "nearest_shot":
        fake = nearest_shot(shot_images, shot_landmarks, target_landmarks)
        timings["avatar"] = 0.0
    else:
        avatar = _make_avatar(state, job.method, shot_frames, shot_points)
        timings["avatar"] = time.perf_counter() - started
        started = time.perf_counter()
        fake = _render(avatar, target_landmarks)
        shot_ssim = float(ssim((_render(avatar, shot_landmarks) + 1) / 2, (shot_images + 1) / 2).mean())
    timings["render"] = time.perf_counter() - started
    started = time.perf_counter()
    results = evaluate_frames(
        state.metric_names, FramePairs(fake=fake, real=real, real_landmarks=target_landmarks), state.resources
    )
    timings["metrics"] = time.perf_counter() - started
    sample = None
    if job.keep_samples:
        sample = f"samples/{safe_name(key)}.png"
        _save_strip(out / sample, fake[:SAMPLE_FRAMES])
    return {
        "kind": "self",
        "identity": job.plan.identity,
        "video": job.plan.video,
        "shots": job.shots,
        "method": job.method,
        "frames": int(real.shape[0]),
        "per_frame": results.per_frame,
        "shot_ssim": shot_ssim,
        "features": _save_features(out, key, results.features),
        "sample": sample,
        "seconds": timings,
    }


def _cross_identity(state: WorkerState, job: CrossJob, key: str) -> dict[str, Any]:
    from metahead.evaluation.csim import face_descriptors, mean_csim_to
    from metahead.evaluation.metrics import get_metric

    out = Path(state.cfg.out)
    shot_frames, shot_points = state.read(job.avatar.shots(job.shots))
    shot_images, shot_landmarks = state.as_tensors(shot_frames, shot_points)
    driver_images, driver_landmarks = state.read_tensors(job.driver.targets)
    started = time.perf_counter()
    avatar = _make_avatar(state, job.method, shot_frames, shot_points)
    avatar_seconds = time.perf_counter() - started
    net = state.resources.get_identity_net()
    source = face_descriptors(net, shot_images, shot_landmarks)

    def csim_to_source(images: torch.Tensor, landmarks: torch.Tensor) -> list[float]:
        return [float(v) for v in mean_csim_to(face_descriptors(net, images, landmarks), source)]

    landmark_error = get_metric("landmark_error")
    per_frame: dict[str, dict[str, list[float]]] = {
        "driver": {"csim_to_source": csim_to_source(driver_images, driver_landmarks)}
    }
    samples = {}
    for retarget in (False, True):
        animation = avatar.animate(driver_landmarks.numpy(), retarget=retarget)
        drawn = torch.from_numpy(animation.landmarks)
        fake = _render(avatar, drawn)
        name = "retarget" if retarget else "no_retarget"
        error = landmark_error.compute(FramePairs(fake=fake, real=driver_images), state.resources)
        per_frame[name] = {
            "csim_to_source": csim_to_source(fake, drawn),
            "landmark_error_to_driver": [float(v) for v in error],
        }
        if job.keep_samples:
            samples[name] = f"samples/{safe_name(key)}.{name}.png"
            _save_strip(out / samples[name], fake[:SAMPLE_FRAMES])
    return {
        "kind": "cross",
        "avatar": job.avatar.name,
        "driver": job.driver.name,
        "shots": job.shots,
        "method": job.method,
        "frames": int(driver_images.shape[0]),
        "per_frame": per_frame,
        "samples": samples,
        "seconds": {"avatar": avatar_seconds},
    }


def run_job(state: WorkerState, payload: tuple[str, SelfJob | CrossJob]) -> dict[str, Any]:
    key, job = payload
    torch.manual_seed(state.cfg.seed)
    if isinstance(job, SelfJob):
        return _self_reenactment(state, job, key)
    return _cross_identity(state, job, key)


# ----------------------------------------------------------------------------------------------
# The whole evaluation


@dataclass
class EvaluationRun:
    cfg: ProtocolConfig
    plans: list[VideoPlan]
    notes: list[str]
    metric_names: list[str]
    summary: RunSummary
    report: dict[str, Any] | None = None


def resolve_metrics(cfg: ProtocolConfig) -> list[str]:
    names = (
        list(cfg.metrics)
        if cfg.metrics
        else available_metric_names(MetricResources(inception_weights=cfg.inception_weights))
    )
    MetricResources(device=cfg.device, inception_weights=cfg.inception_weights).check(get_metrics(names))
    return names


def evaluate(
    cfg: ProtocolConfig, progress: Callable[[str, int, int], None] | None = None, write_report: bool = True
) -> EvaluationRun:
    """Run (or resume) the protocol and write the report into cfg.out."""

    if not Path(cfg.model).is_file():
        raise FileNotFoundError(f"{cfg.model}: model file not found")
    metric_names = resolve_metrics(cfg)
    cfg = dataclasses.replace(cfg, metrics=tuple(metric_names))
    dataset = Dataset(cfg.data)
    plans, notes = plan_evaluation(dataset, cfg)
    if not plans:
        raise DataError(
            f"{cfg.data}: no video of split {cfg.split!r} can be evaluated: " + "; ".join(notes[:5])
        )
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out / PLAN_FILE,
        json.dumps({"plans": [dataclasses.asdict(p) for p in plans], "notes": notes}, indent=1) + "\n",
    )
    jobs = [Job(job.key, (job.key, job.payload)) for job in build_jobs(cfg, plans)]
    summary = run_jobs(
        run_job,
        jobs,
        out / RESULTS_FILE,
        setup=functools.partial(build_worker_state, cfg, metric_names),
        workers=cfg.workers,
        signature=cfg.signature(),
        progress=progress,
    )
    run = EvaluationRun(cfg, plans, notes, metric_names, summary)
    if write_report:
        run.report = build_report(cfg, plans, notes, metric_names, summary.results, failed=summary.failed)
        write_report_files(cfg, plans, run.report)
    return run
