"""`metahead app | live`: the local web app, and an avatar driven live from a camera."""

from __future__ import annotations

from metahead.cli.common import add_amp, resolve_device


def add_commands(sub) -> None:
    _add_app(sub)
    _add_live(sub)


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
    add_amp(p, "bf16 autocast while fine-tuning (auto: only where the hardware has bf16)", default="auto")
    p.set_defaults(func=_run_app)


def app_config(args):
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
        live_stream_every=1.0 / args.live_fps, finetune_amp=args.amp,
    )  # fmt: skip


def _run_app(args) -> int:
    from metahead.app import launch

    cfg = app_config(args)
    try:
        import gradio  # noqa: F401
    except ImportError as err:
        raise ValueError(f"the app needs gradio: pip install -e '.[app]' ({err})") from err
    launch(cfg)
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
    add_amp(
        p,
        "bf16 autocast while rendering (none, the default: on AVX-512-BF16 CPUs without AMX bf16 rendered "
        "one small frame slower; auto: bf16 where the hardware has it, 0.8x the latency of the wide real-64 "
        "on an AMX CPU, docs/app.md)",
    )
    p.add_argument("--stats-json", metavar="PATH", help="write the figures and per-frame latencies here")
    p.set_defaults(func=_run_live)


def _run_live(args) -> int:
    import json
    import time
    from pathlib import Path

    import torch

    from metahead import perf
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
    device = resolve_device(args.device)
    avatar = Avatar.load(args.avatar, device=device, amp=args.amp)
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
        data = {**summary, "amp": perf.resolve_amp(avatar.amp, device),
                "latencies": [] if run is None else run.latencies}  # fmt: skip
        atomic_write_text(Path(args.stats_json), json.dumps(data, indent=1, default=str))
    return 0
