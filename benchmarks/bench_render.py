"""Avatar rendering speed: frames/s per config preset, batch size and precision; prints JSON.

An avatar renders a frame with one landmark drawing and one pass of G, with its AdaIN parameters ψ stored
as constants and G's spectral norm folded into its weights (metahead.avatar). Measured with random
weights (speed does not depend on training):

- "generator": G alone on ready landmark images (ψ constant, spectral norm folded)
- "drawing_and_conversion": the rest of Avatar.render (landmark images, uint8 frames), timed apart
- "render" = batch / (generator + drawing_and_conversion time): Avatar.render's frames/s
- "unfolded_per_frame_psi" (batch 1, fp32): the naive way, G with spectral norm and ψ = P ê recomputed
  on every call: what storing ψ and folding σ saves.

    python benchmarks/bench_render.py                       # paper-256, cpu-128, cpu-64
    python benchmarks/bench_render.py --presets cpu-64 --threads 2
    python benchmarks/bench_render.py --presets demo demo:model.generator_upsampling=nearest  # PRESET:SET,SET

The machine is shared: the JSON has the load average before and after; compare figures from one run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time

import numpy as np
import torch

from metahead.avatar import Avatar, to_uint8
from metahead.config import preset_with_overrides
from metahead.landmarks.mean_face import random_faces
from metahead.models.generator import Generator


def _draw_and_convert(avatar: Avatar, landmarks: torch.Tensor, fake: torch.Tensor) -> None:
    """What Avatar.render adds to G: drawing the landmark images and converting frames to uint8."""
    avatar.landmark_images(landmarks)
    to_uint8(fake)


def timed(fn, min_seconds: float, max_iterations: int, warmup: bool = True) -> tuple[float, int]:
    """Seconds per call of fn (after one warm-up call), over at least min_seconds or max_iterations."""
    if warmup:
        fn()
    count, started = 0, time.perf_counter()
    while True:
        fn()
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds or count >= max_iterations:
            return elapsed / count, count


def bench_preset(
    name: str,
    batches: list[int],
    precisions: list[str],
    min_seconds: float,
    max_iterations: int,
    warmup: bool = True,
    naive: bool = True,
) -> dict:
    cfg = preset_with_overrides(name)
    torch.manual_seed(0)
    generator = Generator(cfg.model).eval()
    embedding = torch.randn(1, cfg.model.embedding_dim)
    with torch.no_grad():
        psi = generator.project(embedding)
    size = cfg.model.image_size
    neutral = random_faces(1, size)[0]
    avatar = Avatar(cfg, generator, psi, neutral_landmarks=neutral, person_embedding=embedding, mode="ff")
    out: dict = {
        "image_size": size,
        "parameters_generator": sum(p.numel() for p in generator.parameters()),
        "runs": [],
    }
    for batch in batches:
        landmarks = torch.from_numpy(random_faces(batch, size, seed=batch))
        landmark_images = avatar.landmark_images(landmarks)
        # Drawing and conversion to uint8 do not depend on precision: timed once per batch size.
        draw = functools.partial(_draw_and_convert, avatar, landmarks, landmark_images)
        per_draw, _ = timed(draw, min_seconds, max_iterations, warmup)
        for precision in precisions:
            amp = "bf16" if precision == "bf16" else "none"
            generate = functools.partial(avatar.render_images, landmark_images, amp=amp)
            per_g, n_g = timed(generate, min_seconds, max_iterations, warmup)
            run = {
                "batch": batch, "precision": precision,
                "render_frames_per_s": round(batch / (per_g + per_draw), 3),
                "generator_frames_per_s": round(batch / per_g, 3), "generator_iterations": n_g,
                "drawing_and_conversion_ms_per_frame": round(1000 * per_draw / batch, 2),
            }  # fmt: skip
            print(name, json.dumps(run), file=sys.stderr, flush=True)
            out["runs"].append(run)
    if naive and 1 in batches and "fp32" in precisions:
        one = avatar.landmark_images(random_faces(1, size))

        def naive() -> None:
            with torch.inference_mode():
                generator(one, person_embedding=embedding)

        per_call, n = timed(naive, min_seconds, max_iterations, warmup)
        print(name, "unfolded", round(1 / per_call, 3), file=sys.stderr, flush=True)
        out["unfolded_per_frame_psi"] = {
            "batch": 1, "precision": "fp32", "frames_per_s": round(1 / per_call, 3), "iterations": n,
        }  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["paper-256", "cpu-128", "cpu-64"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="time each case at least this long")
    parser.add_argument("--max-iterations", type=int, default=20)
    parser.add_argument("--no-warmup", action="store_true", help="time the first call too (very slow cases)")
    parser.add_argument("--no-naive", action="store_true", help="skip the unfolded per-frame-ψ baseline")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {
        "benchmark": "avatar rendering, random weights",
        "device": "cpu",
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "presets": {},
    }
    for name in args.presets:
        result["presets"][name] = bench_preset(
            name, args.batches, args.precisions, args.min_seconds, args.max_iterations,
            warmup=not args.no_warmup, naive=not args.no_naive,
        )  # fmt: skip
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))


if __name__ == "__main__":
    main()
