"""`metahead prepare | merge-shards | resplit | synth`: datasets from videos, photos or a synthetic corpus."""

from __future__ import annotations

from metahead.cli.common import add_split_choice, split_of
from metahead.data.format import SPLITS


def add_commands(sub) -> None:
    _add_prepare(sub)
    _add_merge_shards(sub)
    _add_resplit(sub)
    _add_synth(sub)


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
    add_split_choice(p)
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
    items = sources.assign_splits(items, split_of(args), args.test_fraction, args.seed)
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
    add_split_choice(p)
    p.add_argument(
        "--only-split",
        choices=SPLITS,
        help="keep only SOURCE's videos of this split (e.g. train: hold out some of its training people)",
    )
    p.set_defaults(func=_run_resplit)


def _run_resplit(args) -> int:
    from metahead.data.resplit import resplit_dataset

    counts = resplit_dataset(
        args.source, args.out, split_of(args), args.test_fraction, args.seed, only_split=args.only_split
    )
    for split, count in counts.items():
        print(f"{split}: {count['identities']} identities, {count['videos']} videos")
    print(f"dataset: {args.out} (videos linked to {args.source})")
    return 0


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
