"""`metahead avatar | animate | export`: make an avatar of a new person, drive it, export it."""

from __future__ import annotations

from metahead.cli.common import add_device_and_amp, add_overrides, resolve_device


def add_commands(sub) -> None:
    _add_avatar(sub)
    _add_animate(sub)
    _add_export(sub)


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
    add_overrides(
        p,
        "override a fine-tuning setting, e.g. --set finetune.lr_generator=1e-4 (repeatable)",
        metavar="finetune.FIELD=VALUE",
    )
    p.add_argument("--margin", type=float, help="crop side / face size, as given to `metahead prepare` (2.2)")
    add_device_and_amp(
        p,
        "bf16 autocast while fine-tuning (auto, the default: only where the hardware has bf16; there the "
        "real-64 avatar is ~1.26x faster at the same quality, docs/avatars.md)",
        amp_default="auto",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_avatar)


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
            device=resolve_device(args.device),
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
    add_device_and_amp(
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

    avatar = Avatar.load(args.avatar, device=resolve_device(args.device), amp=args.amp)
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
