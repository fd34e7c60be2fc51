"""`metahead evaluate`: the paper's protocol on unseen people."""

from __future__ import annotations

import sys

from metahead.cli.common import add_device_and_amp, add_overrides, resolve_device


def add_commands(sub) -> None:
    _add_evaluate(sub)


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="the paper's evaluation: avatars from T frames of unseen people, judged on held-out frames",
        description="For each test video: make avatars from T frames (FT and FF) and the baselines (nearest "
        "shot, from scratch), render held-out frames from their landmarks and score them (SSIM, PSNR, L1, "
        "CSIM, landmark error, identity FD; FID with --inception-weights). Jobs run in parallel and are kept "
        "in REPORT/results.jsonl: rerunning resumes, adding shots or methods reuses the rest. Writes "
        "REPORT/report.{json,csv,md,html} and grid_T<T>.png. See docs/metrics.md.",
    )
    p.add_argument("model", metavar="MODEL", help="model file of a training run (RUN/model.pt)")
    p.add_argument("--data", required=True, metavar="TEST", help="dataset folder with the test videos")
    p.add_argument("--out", required=True, metavar="REPORT", help="report folder (created; reused to resume)")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 8, 32], metavar="T", help="T values (1 8 32)")
    p.add_argument("--split", default="test", help="the dataset split to evaluate (test)")
    p.add_argument("--eval-frames", type=int, default=32, help="held-out frames per video (32)")
    p.add_argument(
        "--eval-source",
        choices=["same-video", "split-video", "other-videos", "auto"],
        default="same-video",
        help="held-out frames: random frames of the shots' video (paper), its second half (shots from the "
        "first), the person's other videos (takes), or auto (other videos where the person has some, else "
        "split)",
    )
    p.add_argument("--max-videos", type=int, default=50, help="test videos evaluated (50; 0 = all)")
    p.add_argument(
        "--max-videos-per-person", type=int, default=0, help="at most this many videos per person (0 = all)"
    )
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="NAME",
        help="ft ff nearest_shot from_scratch (default: all)",
    )
    p.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        metavar="NAME",
        help="metric names (default: all available; FID only with --inception-weights)",
    )
    p.add_argument("--steps", type=int, help="fine-tuning steps, exactly (default: the model's for T)")
    add_overrides(
        p,
        "change a fine-tuning setting or its loss for FT avatars, e.g. --set finetune.lr_generator=1e-4 or "
        "--set loss.identity_network=dlib (repeatable; recorded with the results)",
        metavar="finetune|loss.FIELD=VALUE",
    )
    p.add_argument(
        "--cross-identity",
        type=int,
        default=0,
        metavar="PAIRS",
        help="also drive PAIRS avatars with other people's frames, with and without retargeting",
    )
    p.add_argument("--cross-shots", type=int, metavar="T", help="T of cross-identity avatars (default: max)")
    p.add_argument(
        "--inception-weights",
        metavar="PATH",
        help="pt_inception-2015-12-05-6726825d.pth for FID (or $METAHEAD_INCEPTION_WEIGHTS)",
    )
    p.add_argument("--workers", default="1", help="parallel processes: a number or 'auto' (one per core)")
    p.add_argument("--grid-videos", type=int, default=4, help="videos shown in each T's image grid (4)")
    p.add_argument("--seed", type=int, default=0)
    add_device_and_amp(p, "bf16 autocast while fine-tuning", amp_choices=("none", "bf16"))
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args) -> int:
    from metahead.evaluation.protocol import METHODS, ProtocolConfig, evaluate

    if args.workers == "auto":
        workers = None
    elif args.workers.isdigit() and int(args.workers) >= 1:
        workers = int(args.workers)
    else:
        raise ValueError(f"--workers takes a positive number or 'auto', got {args.workers!r}")
    cfg = ProtocolConfig(
        model=args.model, data=args.data, out=args.out, shots=tuple(args.shots), eval_frames=args.eval_frames,
        max_videos=args.max_videos or None, max_videos_per_identity=args.max_videos_per_person or None,
        split=args.split, eval_source=args.eval_source,
        methods=tuple(args.methods or METHODS), metrics=tuple(args.metrics) if args.metrics else None,
        finetune_steps=args.steps, finetune_overrides=tuple(args.overrides),
        cross_identity_pairs=args.cross_identity, cross_identity_shots=args.cross_shots, seed=args.seed,
        device=resolve_device(args.device), amp=args.amp,
        inception_weights=args.inception_weights, workers=workers, grid_videos=args.grid_videos,
    )  # fmt: skip

    def progress(key: str, done: int, total: int) -> None:
        print(f"[{done}/{total}] {key}", flush=True)

    run = evaluate(cfg, progress=progress)
    summary = run.summary
    print(
        f"evaluated {len(run.plans)} videos: {len(summary.computed)} jobs run, {len(summary.skipped)} "
        f"reused, {len(summary.failed)} failed; report: {args.out}/report.md (and .html, .json, .csv)"
    )
    if summary.failed:
        print(f"failed jobs (rerun the same command to retry): {', '.join(list(summary.failed)[:5])}"
              + (" ..." if len(summary.failed) > 5 else ""), file=sys.stderr)  # fmt: skip
        return 1
    return 0
