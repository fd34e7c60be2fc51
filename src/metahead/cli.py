"""`metahead <command>`: parses arguments into configs and calls the layers below. Nothing imports this."""

from __future__ import annotations

import argparse
import sys

from metahead.config import PRESETS

# --- argument groups several commands share ----------------------------------------------------------------


def _add_overrides(p: argparse.ArgumentParser, help: str, metavar: str = "SECTION.FIELD=VALUE") -> None:
    """--set, repeatable, collected in args.overrides (config.apply_overrides)."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar=metavar, help=help)


def _add_device_and_amp(
    p: argparse.ArgumentParser,
    amp_help: str,
    amp_default: str = "none",
    amp_choices: tuple[str, ...] = ("none", "bf16", "auto"),
) -> None:
    """--device (resolved by _device) and --amp."""
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    p.add_argument("--amp", choices=list(amp_choices), default=amp_default, help=amp_help)


def _add_split_choice(p: argparse.ArgumentParser) -> None:
    """Which identities are test: --split-file, --test-identities or --test-fraction/--seed (_split_of)."""
    p.add_argument("--split-file", help="identity splits: vox1_meta.csv / vox2_meta.csv, or 'id split' lines")
    p.add_argument("--test-identities", help="file listing test identities (all others train)")
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.0,
        help="without a split file: hold out this fraction of identities as test (0)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the --test-fraction split")


def _split_of(args) -> dict[str, str] | None:
    """The named splits of _add_split_choice's files, or None for --test-fraction."""
    from metahead.data import sources

    if args.split_file and args.test_identities:
        raise ValueError("give --split-file or --test-identities, not both")
    if args.split_file:
        return sources.read_split_file(args.split_file)
    if args.test_identities:
        return {name: "test" for name in sources.read_identity_list(args.test_identities)}
    return None


# --- commands -----------------------------------------------------------------------------------------------


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="generate a synthetic talking-head corpus in the dataset format")
    p.add_argument("out", help="output dataset folder")
    p.add_argument("--identities", type=int, default=20)
    p.add_argument("--videos-per-identity", type=int, default=3)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=128, help="frame size in pixels (64..256 tested)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of identities in the test split")
    p.add_argument("--workers", type=int, default=1, help="processes (the corpus does not depend on it)")
    p.set_defaults(func=_run_synth)


def _run_synth(args) -> int:
    from metahead.config import SynthConfig
    from metahead.data.synthetic import generate_corpus

    cfg = SynthConfig(
        identities=args.identities,
        videos_per_identity=args.videos_per_identity,
        frames=args.frames,
        size=args.size,
        seed=args.seed,
        test_fraction=args.test_fraction,
    )
    records = generate_corpus(args.out, cfg, workers=args.workers)
    test = sum(r.split == "test" for r in records)
    print(f"{args.out}: {len(records)} videos ({len(records) - test} train, {test} test) at {cfg.size}px")
    return 0


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
    _add_overrides(p, "override a config value, e.g. --set train.steps=5000 (repeatable)")
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


def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="real videos and photo folders -> dataset (face tracking, 68 landmarks, stable crops)",
        description="Turn videos (mp4/avi/mkv/webm/mov) and folders of photos into the dataset format. "
        "Layouts: INPUT/id/video/utterance.mp4 (VoxCeleb2), INPUT/id/video/*.jpg (VoxCeleb1 frames), "
        "INPUT/person/clip.mp4, loose files (each its own identity). See docs/prepare.md.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, image files or folders")
    p.add_argument("--out", required=True, help="dataset folder (created; a rerun resumes it)")
    p.add_argument("--size", type=int, default=256, help="crop side in pixels (256)")
    p.add_argument("--fps", type=float, help="sample videos at this rate (VoxCeleb1: 1); default all frames")
    p.add_argument("--max-frames", type=int, help="at most this many sampled frames per video")
    p.add_argument("--min-frames", type=int, default=8, help="reject videos with fewer usable frames (8)")
    p.add_argument("--min-photos", type=int, default=1, help="the same for photo folders (1)")
    p.add_argument("--margin", type=float, default=2.2, help="crop side / face size (2.2; FFHQ: 2.0)")
    p.add_argument(
        "--crop-mode",
        choices=["auto", "clip", "smooth", "frame"],
        default="auto",
        help="auto: one box per clip unless the head leaves it, then a smoothed trajectory",
    )
    p.add_argument("--smooth-seconds", type=float, default=1.0, help="trajectory smoothing sigma (1.0 s)")
    p.add_argument(
        "--crop-overflow",
        choices=["shift", "pad"],
        default="shift",
        help="a crop past the frame edge: shift it inside, or pad with black",
    )
    p.add_argument(
        "--faces",
        choices=["largest", "central", "reject"],
        default="largest",
        help="with several faces: follow the largest or most central, or reject the video",
    )
    p.add_argument("--min-face-size", type=float, default=64.0, help="smallest face, source pixels (64)")
    p.add_argument(
        "--max-landmark-jump",
        type=float,
        default=0.25,
        help="largest non-rigid landmark change between frames, in eye distances (0.25)",
    )
    p.add_argument(
        "--max-jump-fraction",
        type=float,
        default=0.2,
        help="reject videos where more frames than this jump (0.2)",
    )
    p.add_argument(
        "--detector",
        choices=["dlib", "fan"],
        default="dlib",
        help="landmarks: dlib (offline, default) or FAN (needs face-alignment and its weights)",
    )
    p.add_argument("--redetect-every", type=int, default=10, help="frames between detector checks (10)")
    p.add_argument("--codec", choices=["jpeg", "png"], default="jpeg")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (95)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--shard", default="0/1", help="i/n: do share i of n (0-based), then merge-shards")
    p.add_argument("--retry-rejects", action="store_true", help="try sources rejected before again")
    p.add_argument("--identity", help="put every input under this one identity")
    p.add_argument("--identity-map", help="CSV/TSV naming each source's identity (--identity-map-columns)")
    p.add_argument(
        "--identity-map-columns",
        default="path,identity",
        help="KEY,IDENTITY columns, e.g. file,person_id_guess for real-dev's MANIFEST.tsv",
    )
    _add_split_choice(p)
    p.add_argument("--contact-sheet", help="also write a sheet of landmark overlays, e.g. out/sheet.jpg")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_prepare)


def _run_prepare(args) -> int:
    from metahead.data import sources
    from metahead.data.prepare import PrepareConfig, format_summary, prepare_dataset

    cfg = PrepareConfig(
        size=args.size, fps=args.fps, max_frames=args.max_frames, min_frames=args.min_frames,
        min_photos=args.min_photos, codec=args.codec, quality=args.quality, margin=args.margin,
        crop_mode=args.crop_mode, smooth_seconds=args.smooth_seconds, overflow=args.crop_overflow,
        select=args.faces, min_face_size=args.min_face_size, max_landmark_jump=args.max_landmark_jump,
        max_jump_fraction=args.max_jump_fraction, detector=args.detector, redetect_every=args.redetect_every,
    )  # fmt: skip
    shard = sources.parse_shard(args.shard)
    items = sources.discover(args.inputs)
    if not items:
        raise ValueError(f"no videos or images found in {' '.join(args.inputs)}")
    identity_map = None
    if args.identity_map:
        key, _, ident = args.identity_map_columns.partition(",")
        identity_map = sources.read_identity_map(args.identity_map, key, ident or "identity")
    items = sources.apply_identities(items, args.identity, identity_map)
    items = sources.assign_splits(items, _split_of(args), args.test_fraction, args.seed)
    summary = prepare_dataset(
        items, args.out, cfg, workers=args.workers, shard=shard, retry_rejects=args.retry_rejects,
        progress=not args.no_progress,
    )  # fmt: skip
    print(format_summary(summary))
    if summary["skipped_as_done"]:
        print(f"({summary['skipped_as_done']} sources were already done and skipped)")
    if shard[1] > 1:
        print(f"shard {args.shard} done; when all are, run: metahead merge-shards {args.out}")
    else:
        print(f"dataset: {args.out} (manifest.csv, rejects.csv, prepare-summary.json)")
        if args.contact_sheet:
            from metahead.data.contact_sheet import make_contact_sheet

            print(f"contact sheet: {make_contact_sheet(args.out, args.contact_sheet)}")
    return 0


def _add_merge_shards(sub) -> None:
    p = sub.add_parser("merge-shards", help="write the manifest of a `prepare --shard i/n` run")
    p.add_argument("out", help="dataset folder (where the shards wrote, or where to gather them)")
    p.add_argument("shards", nargs="*", help="shard folders to gather into OUT (if they wrote elsewhere)")
    p.add_argument("--contact-sheet", help="also write a contact sheet here, e.g. out/sheet.jpg")
    p.set_defaults(func=_run_merge_shards)


def _run_merge_shards(args) -> int:
    from metahead.data.prepare import format_summary, merge_shards

    summary = merge_shards(args.out, args.shards)
    print(format_summary(summary))
    if args.contact_sheet:
        from metahead.data.contact_sheet import make_contact_sheet

        print(f"contact sheet: {make_contact_sheet(args.out, args.contact_sheet)}")
    return 0


def _add_resplit(sub) -> None:
    p = sub.add_parser(
        "resplit",
        help="a dataset with its identities split again (e.g. hold out training people), videos linked",
        description="Write a new dataset folder whose manifest splits SOURCE's identities again and whose "
        "videos/ links to SOURCE's: a validation set of unseen people to choose training settings on, "
        "without preparing the videos again. See docs/training.md.",
    )
    p.add_argument("source", help="a dataset folder (made by prepare or synth)")
    p.add_argument("--out", required=True, help="the new dataset folder (must not exist, or be empty)")
    _add_split_choice(p)
    p.add_argument(
        "--only-split",
        choices=["train", "test", "dev"],
        help="keep only SOURCE's videos of this split (e.g. train: hold out some of its training people)",
    )
    p.set_defaults(func=_run_resplit)


def _run_resplit(args) -> int:
    from metahead.data.resplit import resplit_dataset

    counts = resplit_dataset(
        args.source, args.out, _split_of(args), args.test_fraction, args.seed, only_split=args.only_split
    )
    for split, count in counts.items():
        print(f"{split}: {count['identities']} identities, {count['videos']} videos")
    print(f"dataset: {args.out} (videos linked to {args.source})")
    return 0


def _add_avatar(sub) -> None:
    p = sub.add_parser(
        "avatar",
        help="make an avatar of a new person from a model file and T photos or a video (FT or FF)",
        description="Embed T frames of a person with E, then fine-tune G and D on them (FT, the paper's "
        "Sec. 3.3) or use P ê directly (--feed-forward). Photos and videos are cropped like `metahead "
        "prepare`. Writes AVATAR and, when fine-tuning, AVATAR.finetune.json/.png (the loss curve). "
        "See docs/avatars.md.",
    )
    p.add_argument("model", metavar="MODEL", help="model file of a training run (RUN/model.pt)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", nargs="+", metavar="PATH", help="photos of the person (each one face)")
    source.add_argument("--video", metavar="PATH", help="a video of the person, or a dataset video folder")
    p.add_argument("--shots", type=int, help="T, frames used (default: all photos given; 8 from a video)")
    p.add_argument("--out", required=True, metavar="AVATAR", help="avatar file to write")
    p.add_argument("--feed-forward", action="store_true", help="FF avatar: no fine-tuning (ψ = P ê)")
    p.add_argument("--steps", type=int, help="fine-tuning steps, exactly (default: the model config's for T)")
    _add_overrides(
        p,
        "override a fine-tuning setting, e.g. --set finetune.lr_generator=1e-4 (repeatable)",
        metavar="finetune.FIELD=VALUE",
    )
    p.add_argument("--margin", type=float, help="crop side / face size, as given to `metahead prepare` (2.2)")
    _add_device_and_amp(p, "bf16 autocast while fine-tuning (auto: where the hardware has bf16)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_avatar)


def _device(name: str) -> str:
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _run_avatar(args) -> int:
    import warnings

    from metahead.avatar import Avatar, InputWarning
    from metahead.data.prepare import PrepareConfig
    from metahead.training.finetune import loss_curve_paths

    prepare_config = PrepareConfig(margin=args.margin) if args.margin else None
    curve_json, _ = loss_curve_paths(args.out)
    with warnings.catch_warnings():
        warnings.simplefilter("always", InputWarning)
        avatar = Avatar.create(
            args.model, images=args.images, video=args.video, shots=args.shots,
            finetune=not args.feed_forward, finetune_overrides=args.overrides, steps=args.steps,
            device=_device(args.device),
            amp=args.amp, prepare_config=prepare_config, progress=not args.no_progress,
            curve_path=None if args.feed_forward else curve_json,
        )  # fmt: skip
    avatar.save(args.out)
    print(f"avatar: {args.out} ({avatar.mode.upper()}, T={avatar.info['shots']}, {avatar.image_size}px)")
    if avatar.mode == "ft":
        summary = avatar.info["finetune"]
        first, last = summary.get("content_first", float("nan")), summary.get("content_last", float("nan"))
        print(f"fine-tuning: {summary['steps']} steps, content loss {first:.4g} -> {last:.4g}")
        print(f"loss curve: {curve_json} and {curve_json.with_suffix('.png')}")
    return 0


def _add_animate(sub) -> None:
    p = sub.add_parser(
        "animate",
        help="render an avatar driven by a video or landmarks (retargeted onto the avatar's face by default)",
        description="Drive AVATAR with a video (its face is tracked and cropped like `metahead prepare`), a "
        "dataset video folder, or a .npy of landmarks (F, 68, 2). The driver's pose and expression are moved "
        "onto the avatar's own face shape unless the driver has the avatar's shape or --no-retarget is "
        "given. The driver's audio track is kept. See docs/avatars.md.",
    )
    p.add_argument("avatar", metavar="AVATAR", help="avatar file (`metahead avatar`)")
    p.add_argument(
        "--driving",
        required=True,
        metavar="VIDEO|LANDMARKS",
        help="video file, dataset video folder (DATA/videos/<path>) or landmarks .npy (F, 68, 2)",
    )
    p.add_argument("--out", required=True, metavar="OUT.mp4", help="video to write (.mp4, .mov or .mkv)")
    p.add_argument("--side-by-side", action="store_true", help="driver | landmark image | result")
    retarget = p.add_mutually_exclusive_group()
    retarget.add_argument("--no-retarget", action="store_true", help="use the driver's landmarks as they are")
    retarget.add_argument("--retarget", action="store_true", help="retarget even when the shapes match")
    p.add_argument(
        "--neutral-frame", type=int, metavar="I", help="the driver's neutral frame (default: automatic)"
    )
    p.add_argument(
        "--anchor",
        choices=["driver", "avatar"],
        default="driver",
        help="retargeted face placed where the driver's is (default) or where the avatar's photos have it",
    )
    p.add_argument(
        "--landmark-size",
        type=int,
        help="a .npy driver's landmarks are in pixels of a crop this size (default: the avatar's)",
    )
    p.add_argument(
        "--fps", type=float, help="frame rate of the output (default: the driver's, 25 for landmarks)"
    )
    p.add_argument("--max-frames", type=int, help="only the first N frames of the driver")
    p.add_argument("--batch-size", type=int, default=8, help="frames rendered per batch (8)")
    _add_device_and_amp(
        p,
        "bf16 autocast while rendering (auto, the default: only where the hardware has bf16)",
        amp_default="auto",
    )
    p.set_defaults(func=_run_animate)


def _run_animate(args) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from metahead.avatar import Avatar
    from metahead.data.video_io import write_video_file

    avatar = Avatar.load(args.avatar, device=_device(args.device), amp=args.amp)
    retarget = False if args.no_retarget else (True if args.retarget else None)
    driver_options = {"fps": args.fps, "max_frames": args.max_frames}
    if Path(args.driving).suffix.lower() == ".npy":
        driver_options["landmark_size"] = args.landmark_size
    animation = avatar.animate(
        args.driving, retarget=retarget, neutral_frame=args.neutral_frame, anchor=args.anchor,
        batch_size=args.batch_size, side_by_side=args.side_by_side, **driver_options,
    )  # fmt: skip
    frames = tqdm(animation, total=len(animation), unit="frame", desc="rendering", dynamic_ncols=True)
    count = write_video_file(args.out, frames, animation.fps, audio_from=animation.driving.audio_source)
    summary = animation.summary()
    audio = ", with the driver's audio" if animation.driving.audio_source else ""
    print(f"video: {args.out} ({count} frames at {animation.fps:g} fps{audio})")
    retargeted = "yes" if summary["retargeted"] else "no"
    print(
        f"retargeted: {retargeted} (driver neutral frame {summary['neutral_frame']}, "
        f"shape distance to the avatar {summary['shape_distance']:.3f} eye distances)"
    )
    if animation.missing_faces:
        missing = animation.missing_faces
        print(f"no face found in {missing} of {len(animation)} driver frames: held the last pose")
    return 0


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
    _add_overrides(
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
    _add_device_and_amp(p, "bf16 autocast while fine-tuning", amp_choices=("none", "bf16"))
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
        cross_identity_pairs=args.cross_identity,
        cross_identity_shots=args.cross_shots, seed=args.seed, device=_device(args.device), amp=args.amp,
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
    _add_overrides(p, "override a model config value, e.g. --set model.base_channels=32 (repeatable)")
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


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="export an avatar's generator (ψ baked in) with torch.export (.pt2) and/or as ONNX"
    )
    p.add_argument("avatar", help="avatar file (made by `metahead avatar`)")
    p.add_argument("--out", required=True, help="output .pt2 file (torch.export.load(path).module())")
    p.add_argument("--onnx", help="also write an ONNX file here (needs the onnx and onnxscript packages)")
    p.set_defaults(func=_run_export)


def _run_export(args) -> int:
    from metahead import export
    from metahead.avatar import Avatar

    avatar = Avatar.load(args.avatar)
    export.save_program(export.export_generator(avatar.generator, avatar.adain_params), args.out)
    print(f"wrote {args.out}: landmark images (B, 3, {avatar.image_size}, {avatar.image_size}) -> frames")
    if args.onnx:
        export.export_onnx(avatar.generator, avatar.adain_params, args.onnx)
        print(f"wrote {args.onnx}: input 'landmark_images', output 'images'")
    return 0


def _add_live(sub) -> None:
    p = sub.add_parser(
        "live",
        help="drive an avatar live from a camera (or a video replayed in real time); MJPEG page, recording",
        description="Track the face in each camera frame, move its pose and expression onto AVATAR and "
        "render it, in real time: frames the machine cannot keep up with are dropped, never queued. The "
        "output (driver | landmarks | avatar) is served as a local web page with an MJPEG stream (no window "
        "needed) and can be recorded. Prints frames/s and latency (frame in -> avatar frame out). See "
        "docs/app.md.",
    )
    p.add_argument("avatar", metavar="AVATAR", help="avatar file (`metahead avatar` or the app)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--camera",
        metavar="N|URL",
        help="camera index (0: the first camera; needs the camera extra: pip install 'metahead[camera]') "
        "or a stream URL",
    )
    source.add_argument("--driving", metavar="VIDEO", help="a video file, replayed at its own frame rate")
    p.add_argument("--loop", action="store_true", help="replay --driving over and over")
    p.add_argument("--record", metavar="OUT.mp4", help="also write the stream to this video (.mp4/.mov/.mkv)")
    p.add_argument("--host", default="127.0.0.1", help="address of the MJPEG page (127.0.0.1)")
    p.add_argument("--port", type=int, default=8090, help="port of the MJPEG page (8090; 0: any free port)")
    p.add_argument("--no-page", action="store_true", help="serve no page (with --record: a file only)")
    p.add_argument(
        "--retarget",
        choices=["auto", "on", "off"],
        default="auto",
        help="move the driver's expression onto the avatar's face shape (auto: unless the same shape)",
    )
    p.add_argument(
        "--seconds", type=float, help="stop after this long (default: the end of --driving, or Ctrl+C)"
    )
    p.add_argument("--camera-fps", type=float, default=25.0, help="frame rate asked of the camera (25)")
    p.add_argument("--camera-size", metavar="WxH", help="frame size asked of the camera, e.g. 640x480")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: the cores idle now)")
    p.add_argument(
        "--pipeline",
        action="store_true",
        help="track the next frame in a second thread while rendering this one (two cores)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--stats-json", metavar="PATH", help="write the figures and per-frame latencies here")
    p.set_defaults(func=_run_live)


def _run_live(args) -> int:
    import json
    import time
    from pathlib import Path

    import torch

    from metahead.avatar import Avatar
    from metahead.demo import choose_threads
    from metahead.fileio import atomic_write_text
    from metahead.live import (
        LiveConfig,
        LiveRecorder,
        LiveSession,
        MjpegServer,
        run_live,
    )
    from metahead.live_sources import VideoFileSource, camera_source, parse_frame_size

    if args.no_page and not args.record:
        raise ValueError("--no-page needs --record (else the stream goes nowhere)")
    if args.driving:
        source = VideoFileSource(args.driving, loop=args.loop)
    else:  # nothing is opened yet: the loop opens the camera (and opens it again when it fails)
        size = parse_frame_size(args.camera_size) if args.camera_size else None
        source = camera_source(args.camera, fps=args.camera_fps, size=size)
    torch.set_num_threads(choose_threads(args.threads))
    avatar = Avatar.load(args.avatar, device=_device(args.device))
    session = LiveSession(avatar, LiveConfig(retarget=args.retarget))
    page = None if args.no_page else MjpegServer(args.host, args.port)
    recorder = LiveRecorder(args.record, source.fps) if args.record else None
    if page is not None:
        print(f"live: {page.url} (driver | landmarks | avatar); Ctrl+C stops", flush=True)
    last_report = [time.monotonic()]

    def on_frame(result, frame, message) -> None:
        figures = session.stats.describe()
        if page is not None:
            page.publish(result.panel if result.fresh or frame is None else None, message, figures)
        if recorder is not None and frame is not None and result.panel is not None:
            recorder.add(result.panel, frame.index)
        now = time.monotonic()
        if now - last_report[0] >= 5.0:
            last_report[0] = now
            print(f"live: {figures}" + (f" | {message}" if message else ""), flush=True)

    run = None
    try:
        run = run_live(session, source, on_frame, seconds=args.seconds, pipeline=args.pipeline)
    except KeyboardInterrupt:
        pass
    finally:
        if page is not None:
            page.close()
        source_frames = None if run is None else run.summary["source_frames"]
        written = recorder.close(source_frames) if recorder is not None else 0
    summary = session.summary() if run is None else run.summary
    print(f"live: {session.stats.describe()}; tracker {summary['tracker']}")
    if run is not None and run.messages:
        print("live: reported: " + "; ".join(run.messages[:5]))
    if recorder is not None:
        print(f"recorded: {args.record} ({written} frames at {source.fps:g} fps)" if written
              else f"recorded nothing: no frame came from {source.name}")  # fmt: skip
    if args.stats_json:
        data = {**summary, "latencies": [] if run is None else run.latencies}
        atomic_write_text(Path(args.stats_json), json.dumps(data, indent=1, default=str))
    return 0


def _add_app(sub) -> None:
    p = sub.add_parser(
        "app",
        help="a local web page to make avatars from photos or a video and drive them (Gradio, offline)",
        description="Serve a web app on this machine: upload photos or a short video of a person to make "
        "an avatar (FT or FF), drive it with a synthetic or uploaded video (side by side, retargeting on or "
        "off), see CSIM to the photos, download the avatar and the video. Without --model it uses the model "
        "`make demo` trains: demo-output/work/run/model.pt under the current folder, else under the source "
        "checkout metahead runs from; the page and the terminal say which. Needs the `app` extra "
        "(pip install -e '.[app]'). See docs/app.md.",
    )
    p.add_argument("--model", metavar="MODEL", help="model file (default: the one `make demo` trains)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (7860)")
    p.add_argument("--work-dir", metavar="DIR", help="keep avatars and videos here (default: a temp folder)")
    p.add_argument("--max-photos", type=int, default=32, help="photos accepted per avatar (32)")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="size limit of one uploaded file (50)")
    p.add_argument("--max-video-seconds", type=float, default=20.0, help="length limit of videos (20)")
    p.add_argument(
        "--max-steps", type=int, default=1600, help="most fine-tuning steps the page allows (1600)"
    )
    p.add_argument("--concurrency", type=int, default=2, help="long requests served at once (2)")
    p.add_argument(
        "--live-fps", type=float, default=30.0, help="most camera frames a second the Live tab sends (30)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: the cores idle now)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    p.set_defaults(func=_run_app)


def _app_config(args):
    """`metahead app`'s flags as an AppConfig."""
    from pathlib import Path

    from metahead.app import AppConfig

    if args.live_fps <= 0:
        raise ValueError(f"--live-fps must be positive, got {args.live_fps}")
    return AppConfig(
        model=Path(args.model) if args.model else None, host=args.host, port=args.port,
        work_dir=Path(args.work_dir) if args.work_dir else None, device=args.device, threads=args.threads,
        concurrency=args.concurrency, max_photos=args.max_photos, max_upload_mb=args.max_upload_mb,
        max_video_seconds=args.max_video_seconds, max_finetune_steps=args.max_steps,
        live_stream_every=1.0 / args.live_fps,
    )  # fmt: skip


def _run_app(args) -> int:
    from metahead.app import launch

    cfg = _app_config(args)
    try:
        import gradio  # noqa: F401
    except ImportError as err:
        raise ValueError(f"the app needs gradio: pip install -e '.[app]' ({err})") from err
    launch(cfg)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metahead", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prepare(sub)
    _add_merge_shards(sub)
    _add_resplit(sub)
    _add_synth(sub)
    _add_train(sub)
    _add_avatar(sub)
    _add_animate(sub)
    _add_evaluate(sub)
    _add_demo(sub)
    _add_export(sub)
    _add_app(sub)
    _add_live(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"metahead {args.command}: error: {err}", file=sys.stderr)
        return 2


__all__ = ["main", "build_parser", "PRESETS"]
