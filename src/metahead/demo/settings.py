"""The demo's settings (DemoSettings: `full()` is `make demo`, `quick()` a short look), its result, and
the model config and fine-tuning steps they imply."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metahead.demo.records import plain_json


@dataclass
class DemoSettings:
    """What the demo makes. `full()` is `make demo` (~10 min on two quiet cores), `quick()` a ~4-minute
    look; tests use far smaller values."""

    preset: str = "demo"  # config preset of the model (config.PRESETS)
    overrides: tuple[str, ...] = ()  # `section.field=value` on top of the preset
    # the synthetic corpus (its image size is the model's)
    identities: int = 40
    videos_per_identity: int = 2
    frames: int = 40  # per corpus video
    test_fraction: float = 0.15
    driver_frames: int = 100  # the driving clips (4 s at 25 fps)
    seed: int = 0
    # meta-training: stops at whichever comes first
    train_minutes: float = 5.0
    train_steps: int = 5000  # a cap for fast machines (two quiet CPU cores do ~1,000 in 5 minutes)
    # avatars (T) and fine-tuning steps (None: the preset's finetune.steps)
    shots: int = 8
    finetune_steps: int | None = None
    # evaluation
    eval_shots: tuple[int, ...] = (8,)
    eval_videos: int = 3
    eval_frames: int = 8  # held-out frames per video
    # FF and the nearest shot need no fine-tuning (seconds a video), so they are also scored on this many
    # test videos (0: every one; None: not), a steadier FF figure than eval_videos give
    eval_feed_forward_videos: int | None = 0
    eval_metrics: tuple[str, ...] | None = None  # None: every metric available offline
    eval_cross_pairs: int = 0  # cross-identity pairs in the evaluation (retargeting on / off)
    eval_workers: int = 0  # processes; 0: one per thread the demo uses
    # machine
    threads: int = 0  # torch threads; 0: from the cores that are idle now (or $OMP_NUM_THREADS)
    video_scale: int = 0  # frames enlarged this many times in the videos; 0: to about 192 px
    progress: bool = True

    @classmethod
    def full(cls, **changes: Any) -> DemoSettings:
        return cls(**changes)

    @classmethod
    def quick(cls, **changes: Any) -> DemoSettings:
        quick = {
            "identities": 16,
            "frames": 32,
            "driver_frames": 50,
            "train_minutes": 1.5,
            "finetune_steps": 30,
            "eval_videos": 2,
        }
        return cls(**{**quick, **changes})

    def stage_settings(self, stage: str) -> dict[str, Any]:
        """The settings that decide a stage's result (a change redoes the stage)."""
        common = {"preset": self.preset, "overrides": list(self.overrides), "seed": self.seed}
        if stage == "corpus":
            keys = ("identities", "videos_per_identity", "frames", "test_fraction", "driver_frames")
        elif stage == "train":
            keys = ("train_minutes", "train_steps")
        elif stage == "avatar":
            keys = ("shots", "finetune_steps")
        elif stage == "animate":
            keys = ("video_scale",)
        elif stage == "evaluate":
            keys = (
                "eval_shots", "eval_videos", "eval_frames", "eval_feed_forward_videos", "eval_metrics",
                "eval_cross_pairs",
            )  # fmt: skip
            common["finetune_steps"] = self.finetune_steps
        else:
            keys = ()
        return plain_json({**common, **{k: getattr(self, k) for k in keys}})


@dataclass
class DemoResult:
    out: Path
    page: Path
    reused: list[str]  # stages taken from an earlier run
    ran: list[str]  # stages run this time
    seconds: dict[str, float]  # per stage, this run
    files: dict[str, Path] = field(default_factory=dict)  # what the page shows


def experiment_config(settings: DemoSettings) -> Any:
    """The model's ExperimentConfig: the preset with the overrides and the training budget applied."""
    from metahead.config import apply_overrides, preset

    cfg = apply_overrides(preset(settings.preset), list(settings.overrides))
    cfg.train.time_limit_minutes = settings.train_minutes
    cfg.train.steps = settings.train_steps
    return cfg
