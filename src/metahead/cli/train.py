"""`metahead train | demo`: meta-learning, and the whole pipeline on a synthetic corpus."""

from __future__ import annotations

import sys

from metahead.cli.common import add_overrides
from metahead.config import PRESETS


def add_commands(sub) -> None:
    _add_train(sub)
    _add_demo(sub)


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="meta-learn E, G, P and D on a dataset (several GPUs/nodes: torchrun ... -m metahead train ...)",
    )
    p.add_argument("--config", choices=sorted(PRESETS), help="config preset (with --resume: RUN/config.json)")
    p.add_argument("--data", help="dataset folder (made by `metahead synth` or `metahead prepare`)")
    p.add_argument("--out", help="run folder: config.json, checkpoints/, model.pt, logs, samples/")
    p.add_argument("--resume", action="store_true", help="continue from RUN's newest checkpoint (if any)")
    p.add_argument(
        "--change-loss",
        action="store_true",
        help="with --resume: accept a content loss other than the checkpoint was trained with (e.g. --set "
        "loss.identity_network=dlib on a trained model); the log says what changed",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="build everything, train three steps in a scratch folder, and report parameters, memory, step "
        "time, images/s, W's size and the projected time per epoch on --data (nothing is kept)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (RUN/log.jsonl is written)")
    add_overrides(p, "override a config value, e.g. --set train.steps=5000 (repeatable)")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from pathlib import Path

    from metahead.config import ExperimentConfig, apply_overrides, preset
    from metahead.training.meta import CONFIG_FILE, TrainingDiverged, train

    if not args.out and not args.dry_run:
        raise ValueError("give --out RUN (the run folder)")
    if args.dry_run and args.resume:
        raise ValueError("--dry-run starts a scratch run: it cannot --resume")
    if args.change_loss and not args.resume:
        raise ValueError("--change-loss goes with --resume (a new run has no earlier loss to change)")
    saved = Path(args.out or "") / CONFIG_FILE
    if args.resume and saved.exists():
        # The run's own config (with the overrides it was started with); --set may still change it.
        cfg = ExperimentConfig.load(saved)
        if args.config and args.config != cfg.preset:
            raise ValueError(f"{saved}: the run was started with --config {cfg.preset}, not {args.config}")
    elif args.config:
        cfg = preset(args.config)
    else:
        raise ValueError("give --config PRESET (or --resume on a run folder that has config.json)")
    cfg = apply_overrides(cfg, args.overrides)
    if args.data:
        cfg.train.data = args.data
    cfg.train.out = args.out or ""
    if not cfg.train.data:
        raise ValueError("give --data DIR")
    if args.dry_run:
        from metahead.training.dry_run import dry_run, format_report

        report = dry_run(cfg)
        if report.is_main:
            print(format_report(report))
        return 0
    try:
        train(cfg, resume=args.resume, progress=not args.no_progress, change_loss=args.change_loss)
    except TrainingDiverged as err:
        print(f"metahead train: {err}", file=sys.stderr)
        return 3
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole pipeline on a synthetic corpus, on the CPU, into one HTML page (make demo)",
        description="Generate a synthetic corpus, meta-train a small model (time-bounded), make an avatar of "
        "an unseen person from 8 frames, animate it with its own new motion and with another person's "
        "(retargeted), evaluate FT/FF against the nearest-shot and from-scratch baselines, and write "
        "OUT/index.html showing it all. A rerun reuses every finished stage whose settings did not change.",
    )
    p.add_argument("--out", default="demo-output", help="output folder (demo-output)")
    p.add_argument("--quick", action="store_true", help="smaller corpus, 1.5 min of training: ~4 min in all")
    p.add_argument("--train-minutes", type=float, help="meta-training time (full: 5, quick: 1.5)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: the cores idle now)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="model config preset (demo)")
    add_overrides(p, "override a model config value, e.g. --set model.base_channels=32 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from metahead.demo import main_for_cli

    changes = {"threads": args.threads, "overrides": tuple(args.overrides), "progress": not args.no_progress}
    if args.train_minutes is not None:
        changes["train_minutes"] = args.train_minutes
    if args.preset:
        changes["preset"] = args.preset
    return main_for_cli(args.out, args.quick, changes)
