"""Cost of W's start (train.video_embedding_init embedder/centred): E over K frames of every training video.

Per video and per preset, on one process: decoding the episode (K + 1 frames from the dataset's files,
landmark images drawn), E's forward pass over the K frames (batches of 8 videos, fp32, no gradient), and
the whole `embed_training_videos` pass as the trainer runs it (with --workers DataLoader workers). Prints
JSON lines; docs/training.md turns them into the projection for VoxCeleb2 on several GPUs.

    .venv/bin/python benchmarks/bench_video_embedding_start.py --data DATASET [--presets cpu-64 paper-256]
        [--videos 16] [--workers 0] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.data import Subset

from metahead.config import preset
from metahead.data.episodes import EpisodeDataset
from metahead.models import Embedder, embed_person
from metahead.training.distributed import DistributedContext, SeededEpisodes
from metahead.training.video_embeddings import embed_training_videos

BATCH = 8  # videos per E batch (embed_training_videos' default)


def measure(name: str, data: str, videos: int, workers: int) -> dict:
    cfg = preset(name)
    size = cfg.model.image_size
    episodes = EpisodeDataset(data, split="train", shots=cfg.train.shots, image_size=size, seed=0)
    count = min(videos, len(episodes))
    sample = Subset(episodes, range(count))
    seeded = SeededEpisodes(sample)
    torch.manual_seed(0)
    embedder = Embedder(cfg.model).eval()
    ctx = DistributedContext(0, 0, 1, torch.device("cpu"))
    embed_training_videos(embedder, Subset(sample, [0]), ctx, seed=0, progress=False)  # warm-up

    start = time.perf_counter()
    items = [seeded[(i, i)] for i in range(count)]
    decode = (time.perf_counter() - start) / count

    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, count, BATCH):
            batch = items[first : first + BATCH]
            images = torch.stack([item["images"][:-1] for item in batch])
            landmark_images = torch.stack([item["landmark_images"][:-1] for item in batch])
            embed_person(embedder, images, landmark_images)
    embed = (time.perf_counter() - start) / count

    start = time.perf_counter()
    embed_training_videos(embedder, sample, ctx, seed=0, num_workers=workers, progress=False)
    whole = (time.perf_counter() - start) / count
    return {
        "preset": name,
        "image_size": cfg.model.image_size,
        "frames_embedded": cfg.train.shots,
        "videos": count,
        "threads": torch.get_num_threads(),
        "workers": workers,
        "decode_s_per_video": round(decode, 4),
        "e_forward_s_per_video": round(embed, 4),
        "embed_training_videos_s_per_video": round(whole, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="a dataset folder (metahead prepare / synth)")
    parser.add_argument("--presets", nargs="+", default=["cpu-64", "paper-256"])
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.presets:
        print(json.dumps(measure(name, args.data, args.videos, args.workers)), flush=True)


if __name__ == "__main__":
    main()
