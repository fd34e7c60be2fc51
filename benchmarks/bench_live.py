"""Live puppeteering end to end: frames/s and latency (camera frame in → avatar frame out); prints JSON.

For each preset and thread count, a webcam-like clip (a synthetic person talking, a ~240 px face in a
640×480 frame, 25 fps or --fps, looped) is replayed in real time through metahead.live for --seconds: face
tracking, retargeting, rendering, and the JPEG the `metahead live` page sends. A frame the loop cannot
keep up with is dropped, never queued. Latency: the moment the frame is delivered → the avatar frame's
JPEG is ready. The JSON has the latency median per 10 s window (it must not grow: frames are dropped,
not queued), the CPU time per frame (load-independent), the tracker's counts and the load average before
and after.

Weights are untrained (E, G and P randomly initialised; a feed-forward avatar of a synthetic person):
speed does not depend on training.

    python benchmarks/bench_live.py                                  # demo (64²) and cpu-128, 1 and 2 threads
    python benchmarks/bench_live.py --presets demo --threads 2 --seconds 60
    python benchmarks/bench_live.py --clip ../shared/data/real-dev/video/liveportrait_d11.mp4   # a real face
    python benchmarks/bench_live.py --pipeline      # tracking in its own thread (metahead live --pipeline)
    python benchmarks/bench_live.py --fps 30        # a 30 fps camera: does the loop keep up with 30?
    python benchmarks/bench_live.py --presets real-64 --threads 1 --amp none bf16   # rendering in bf16 too

HOG finds the synthetic faces only from about 190 px, so with the synthetic clip the tracker's checks in a
small window near the face often fall back on full-frame detections; a real face is found from ~80 px.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from metahead.avatar import Avatar
from metahead.config import preset_with_overrides
from metahead.data.synthetic import render_video
from metahead.live import (
    LiveConfig,
    LiveSession,
    VideoFileSource,
    encode_jpeg,
    run_live,
    synthetic_camera_clip,
)
from metahead.models import Discriminator, Embedder, Generator

WINDOW_SECONDS = 10.0


def untrained_avatar(name: str, amp: str = "none") -> Avatar:
    """A feed-forward avatar of a synthetic person, from 4 frames, with the preset's networks untrained."""
    cfg = preset_with_overrides(name)  # "demo" or "demo:model.generator_upsampling=nearest"
    torch.manual_seed(0)
    networks = (Embedder(cfg.model), Generator(cfg.model), Discriminator(cfg.model, num_videos=1), cfg)
    frames, marks = render_video(11, 0, 0, 4, cfg.model.image_size)
    return Avatar.create(networks, frames=frames, landmarks=marks, finetune=False, progress=False, amp=amp)


def run(
    name: str, threads: int, clip: Path, seconds: float, pipeline: bool = False, amp: str = "none"
) -> dict:
    torch.set_num_threads(threads)
    avatar = untrained_avatar(name, amp)  # renders with this autocast (the avatar's own setting)
    session = LiveSession(avatar, LiveConfig())
    out_latency: list[tuple[float, float]] = []  # (seconds since start, frame in → JPEG out)
    started = time.monotonic()

    def on_frame(result, frame, message) -> None:
        if frame is not None and result.fresh:
            encode_jpeg(result.panel)
            out_latency.append((frame.captured_at - started, time.monotonic() - frame.captured_at))

    load_before = os.getloadavg()
    cpu_before = time.process_time()
    live = run_live(session, VideoFileSource(clip, loop=True), on_frame, seconds=seconds, pipeline=pipeline)
    cpu_seconds = time.process_time() - cpu_before
    times = np.array([t for t, _ in out_latency])
    latency = np.array([latency for _, latency in out_latency]) * 1000
    windows = []
    for start in np.arange(0.0, seconds, WINDOW_SECONDS):
        inside = latency[(times >= start) & (times < start + WINDOW_SECONDS)]
        if len(inside):
            windows.append({"from_s": float(start), "frames": int(len(inside)),
                            "latency_median_ms": round(float(np.median(inside)), 1)})  # fmt: skip
    elapsed = float(times[-1] - times[0]) if len(times) > 1 else 0.0
    return {
        "preset": name,
        "amp": amp,
        "image_size": avatar.image_size,
        "threads": threads,
        "pipeline": pipeline,
        "seconds": round(live.summary["seconds"], 1),
        "source_frames": live.summary["source_frames"],
        "frames_out": int(len(latency)),
        "fps": round((len(times) - 1) / elapsed, 2) if elapsed else 0.0,
        "dropped": live.summary["dropped"],
        "latency_median_ms": round(float(np.median(latency)), 1),
        "latency_p95_ms": round(float(np.percentile(latency, 95)), 1),
        "latency_windows": windows,
        # CPU time of the whole process (decoding every camera frame included) per frame out: what the
        # frames cost whatever the load; 1000 / it is the frame rate one idle core would give.
        "cpu_ms_per_frame_out": round(1000 * cpu_seconds / max(1, len(latency)), 1),
        "tracker": live.summary["tracker"],
        "messages": live.messages,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["demo", "cpu-128"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--pipeline", action="store_true", help="track and render in two threads")
    parser.add_argument("--fps", type=float, default=25.0, help="the synthetic camera's frame rate")
    parser.add_argument(
        "--amp", nargs="+", default=["none"], choices=["none", "bf16", "auto"], help="rendering autocast(s)"
    )
    parser.add_argument(
        "--clip", type=Path, help="drive with this video (a real face), not the synthetic one"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        clip = args.clip or synthetic_camera_clip(
            Path(folder) / "camera.mp4", seconds=8.0, fps=args.fps, width=640, height=480, face=240
        )
        results = [
            run(name, threads, clip, args.seconds, args.pipeline, amp)
            for name in args.presets
            for threads in args.threads
            for amp in args.amp
        ]
    clip_name = str(args.clip or f"synthetic 640x480 at {args.fps:g} fps")
    summary = {"live": results, "clip": clip_name, "cpu_count": os.cpu_count()}
    json.dump(summary, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
