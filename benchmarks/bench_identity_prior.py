"""What E's identity prior costs a meta-learning step, computed and from the per-frame cache; prints JSON.

The prior (model.identity_prior=dlib) runs dlib's face network on each of the K frames an episode embeds;
training/face_descriptors.py keeps each training frame's descriptor after its first use. This times both
for one episode of K frames at the preset's image size, in fp32 and (where the CPU computes it natively)
bf16 autocast.

    python benchmarks/bench_identity_prior.py [--preset real-64] [--threads 1] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from metahead import perf
from metahead.config import preset
from metahead.models.embedder import FaceDescriptorPrior
from metahead.training.face_descriptors import FrameDescriptorCache


def seconds_per_call(function, repeats: int) -> float:
    for _ in range(3):  # warm-up
        function()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="real-64")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = preset(args.preset)
    size, shots = cfg.model.image_size, cfg.train.shots
    prior = FaceDescriptorPrior(size, cfg.model.embedding_dim)
    images = torch.rand(1, shots, 3, size, size) * 2 - 1
    cache = FrameDescriptorCache(prior, [shots])
    video_index, frame_indices = torch.tensor([0]), torch.arange(shots)[None]
    device = torch.device("cpu")
    modes = ["none"] + (["bf16"] if perf.resolve_amp("auto", device) == "bf16" else [])
    results = {"preset": args.preset, "shots": shots, "image_size": size, "threads": args.threads}
    for amp in modes:
        with perf.autocast_context(amp, device):
            cache(images, video_index, frame_indices)  # every frame known from here on
            computed = seconds_per_call(lambda: prior.descriptors(images[0]), args.repeats)
            looked_up = seconds_per_call(lambda: cache(images, video_index, frame_indices), 10 * args.repeats)
        results[amp] = {"computed_ms": round(computed * 1e3, 2), "cached_ms": round(looked_up * 1e3, 3)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
