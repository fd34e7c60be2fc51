"""Speed of the landmark rasteriser (metahead.landmarks.draw.draw_landmarks): images per second.

Realistic landmark sets: the mean-face template with a random scale (face 50-70% of the image width),
in-plane rotation (±15°) and shift, as in face crops. Batch 1 is one image at a time (e.g. a demo), batch 9
is one meta-learning episode (K+1 frames, drawn in a DataLoader worker), batch 32 a large batch. Best of
`--repeats` timings (the machine may be shared). Prints one JSON object.

    .venv/bin/python benchmarks/bench_landmarks.py [--threads 1] [--seconds 0.5] [--repeats 5]

Run through `make bench` (or with the Makefile's allocator settings): with glibc's default malloc, a fresh
output canvas is page-faulted in on every call, which dominates at batch 32 and 256².
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from metahead.landmarks.draw import draw_landmarks
from metahead.landmarks.mean_face import random_faces


def images_per_second(points: torch.Tensor, size: int, seconds: float, repeats: int) -> float:
    draw_landmarks(points, size)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            draw_landmarks(points, size)
            calls += 1
        best = min(best, elapsed / calls)
    return points.shape[0] / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (DataLoader workers use 1)")
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one timing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 9, 32])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for size in args.sizes:
        for batch in args.batches:
            points = torch.from_numpy(random_faces(batch, size, seed=size * 100 + batch))
            results[f"{size}px_batch{batch}"] = round(
                images_per_second(points, size, args.seconds, args.repeats), 1
            )
    print(
        json.dumps(
            {
                "benchmark": "landmark rasteriser, images/s",
                "torch": torch.__version__,
                "threads": args.threads,
                "machine": platform.machine(),
                "images_per_second": results,
            }
        )
    )


if __name__ == "__main__":
    main()
