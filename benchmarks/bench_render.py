"""Avatar rendering speed: frames/s per config preset, batch size and precision; prints JSON.

An avatar renders a frame with one landmark drawing and one pass of G, with its AdaIN parameters ψ stored
as constants and G's spectral norm folded into its weights (metahead.avatar). Measured with random
weights (speed does not depend on training):

- "render": Avatar.render, landmarks (B, 68, 2) -> uint8 frames (drawing + G + conversion)
- "generator": G alone on ready landmark images
- "unfolded_per_frame_psi" (batch 1, fp32): the naive way, G with spectral norm and ψ = P ê recomputed
  on every call: what storing ψ and folding σ saves.

    python benchmarks/bench_render.py                       # paper-256, cpu-128, cpu-64
    python benchmarks/bench_render.py --presets cpu-64 --threads 2

The machine is shared: the JSON has the load average before and after; compare figures from one run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time

import numpy as np
import torch

from metahead.avatar import Avatar
from metahead.config import preset
from metahead.landmarks.mean_face import random_faces
from metahead.models.generator import Generator


def timed(fn, min_seconds: float, max_iterations: int) -> tuple[float, int]:
    """Seconds per call of fn (after one warm-up call), over at least min_seconds or max_iterations."""
    fn()
    count, started = 0, time.perf_counter()
    while True:
        fn()
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds or count >= max_iterations:
            return elapsed / count, count


def bench_preset(
    name: str, batches: list[int], precisions: list[str], min_seconds: float, max_iterations: int
) -> dict:
    cfg = preset(name)
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
        landmarks = random_faces(batch, size, seed=batch)
        landmark_images = avatar.landmark_images(landmarks)
        for precision in precisions:
            amp = "bf16" if precision == "bf16" else "none"
            render = functools.partial(avatar.render, landmarks, batch_size=batch, amp=amp)
            per_render, n_render = timed(render, min_seconds, max_iterations)
            generate = functools.partial(avatar.render_images, landmark_images, amp=amp)
            per_g, n_g = timed(generate, min_seconds, max_iterations)
            out["runs"].append({
                "batch": batch, "precision": precision,
                "render_frames_per_s": round(batch / per_render, 3), "render_iterations": n_render,
                "generator_frames_per_s": round(batch / per_g, 3), "generator_iterations": n_g,
                "drawing_and_conversion_ms_per_frame": round(1000 * (per_render - per_g) / batch, 2),
            })  # fmt: skip
    if 1 in batches and "fp32" in precisions:
        one = avatar.landmark_images(random_faces(1, size))

        def naive() -> None:
            with torch.inference_mode():
                generator(one, person_embedding=embedding)

        per_call, n = timed(naive, min_seconds, max_iterations)
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
        result["presets"][name] = bench_preset(name, args.batches, args.precisions, args.min_seconds,
                                               args.max_iterations)  # fmt: skip
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))


if __name__ == "__main__":
    main()
