"""Synthetic corpus speed on ONE core: frames/s of the renderer at 64², 128², 256² (a fresh person and
setting every `--video-frames` frames, as in a corpus), frames/s of the whole corpus writer (render +
JPEG + files), and peak memory. Prints JSON.

    .venv/bin/python benchmarks/bench_synth.py [--frames 1000] [--sizes 64 128 256] [--out results.json]

The issue's target: 1,000 frames at 128² in under 30 s on one core. Wall-clock time counts waiting for a
busy machine; CPU time (process_time) does not, so both are reported.
"""

from __future__ import annotations

import os

# One core: set before numpy (and any BLAS) is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from metahead.config import SynthConfig  # noqa: E402
from metahead.data.synthetic import generate_corpus, make_video  # noqa: E402
from metahead.fileio import atomic_write_text  # noqa: E402


def render_speed(size: int, frames: int, video_frames: int, seed: int) -> dict:
    """Render `frames` frames in videos of `video_frames` (set-up of each video included)."""
    wall = time.perf_counter()
    cpu = time.process_time()
    done = 0
    video = 0
    while done < frames:
        count = min(video_frames, frames - done)
        renderer, motion = make_video(seed, video, 0, count, size)
        for _ in renderer.render(motion):
            done += 1
        video += 1
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    return {
        "size": size,
        "frames": frames,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "frames_per_s_wall": round(frames / wall, 1),
        "frames_per_s_cpu": round(frames / cpu, 1),
    }


def corpus_speed(size: int, identities: int, frames: int) -> dict:
    cfg = SynthConfig(identities=identities, videos_per_identity=1, frames=frames, size=size, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        wall = time.perf_counter()
        cpu = time.process_time()
        generate_corpus(os.path.join(tmp, "corpus"), cfg, workers=1, progress=False)
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
    total = identities * frames
    return {
        "size": size,
        "frames": total,
        "wall_s": round(wall, 2),
        "frames_per_s_wall": round(total / wall, 1),
        "frames_per_s_cpu": round(total / cpu, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000, help="frames per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--video-frames", type=int, default=32, help="frames per video (a new person each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    render = [render_speed(size, args.frames, args.video_frames, args.seed) for size in args.sizes]
    corpus = corpus_speed(128, max(args.frames // (4 * args.video_frames), 1), args.video_frames)
    result = {
        "benchmark": "synthetic corpus, one core",
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "render": render,
        "corpus_writer_128": corpus,
        "target_128": "1000 frames in < 30 s",
        "seconds_per_1000_frames_128_wall": next(
            (round(1000 / r["frames_per_s_wall"], 1) for r in render if r["size"] == 128), None
        ),
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
