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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
from metahead import perf  # noqa: E402
from metahead.config import preset  # noqa: E402
from metahead.models.embedder import FaceDescriptorPrior  # noqa: E402
from metahead.training.face_descriptors import FrameDescriptorCache  # noqa: E402


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
    results = {
        "machine": common.machine_info(),
        "preset": args.preset,
        "shots": shots,
        "image_size": size,
        "threads": args.threads,
    }
    for amp in modes:
        with perf.autocast_context(amp, device):
            cache(images, video_index, frame_indices)  # every frame known from here on
            computed = common.time_call(lambda: prior.descriptors(images[0]), warmup=3, repeats=args.repeats)
            looked_up = common.time_call(
                lambda: cache(images, video_index, frame_indices), warmup=3, repeats=10 * args.repeats
            )
        results[amp] = {
            "computed_median_ms": round(computed["median_s"] * 1e3, 2),
            "cached_median_ms": round(looked_up["median_s"] * 1e3, 3),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
