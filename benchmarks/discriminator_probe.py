"""Can D tell real frames from fakes when nothing else moves? D alone trained on a run's training episodes.

G (and E) stay frozen at a run's newest checkpoint; D starts from that checkpoint's D or fresh, and trains
on L_DSC alone against one kind of fake: G's renderings (`generator`), the real frame blurred (a 4x4 box
blur: `blur`) or a black frame (`black`). Every 50 steps it prints D's real − fake score gap and L_DSC over
those steps, and what D's feature vector V(x, y) sees of the difference: |V(real)|, |V(real) − V(fake)| and
the cosine of that difference with the projection vector W_i + w0 (the realism score is V·(W_i + w0) + b).
docs/training.md ("Why D's gap stays small") has the figures for the demo.

    python benchmarks/discriminator_probe.py --run demo-output/work/run --steps 200 --fake generator
    python benchmarks/discriminator_probe.py --run demo-output/work/run --steps 200 --fake blur --fresh
"""

from __future__ import annotations

import argparse
import contextlib
import json

import torch
import torch.nn.functional as F

from metahead.config import ExperimentConfig
from metahead.data.episodes import EpisodeDataset
from metahead.models import Discriminator, Embedder, Generator, embed_person
from metahead.training import checkpoint
from metahead.training.meta import CONFIG_FILE, Episode, discriminator_losses

FAKES = ("generator", "blur", "black")


def probe(run: str, steps: int, fake_kind: str, fresh: bool, lr: float, batch_size: int, seed: int) -> list:
    cfg = ExperimentConfig.load(f"{run}/{CONFIG_FILE}")
    state_file = checkpoint.latest_state(run)
    if state_file is None:
        raise SystemExit(f"{run}: no checkpoint (state-*.pt) to probe")
    state = checkpoint.load_state(state_file)
    embedder, generator = Embedder(cfg.model), Generator(cfg.model)
    embedder.load_state_dict(state["networks"]["embedder"])
    generator.load_state_dict(state["networks"]["generator"])
    torch.manual_seed(seed)
    discriminator = Discriminator(cfg.model, state["num_videos"])
    if not fresh:
        discriminator.load_state_dict(state["networks"]["discriminator"])
    # W's rows stay as they are (each is visited once per pass over the videos); V, w0 and b learn.
    trained = [p for p in discriminator.parameters() if p is not discriminator.video_embeddings.weight]
    optimizer = torch.optim.Adam(trained, lr=lr, betas=tuple(cfg.train.adam_betas))
    dataset = EpisodeDataset(
        cfg.train.data, split="train", shots=cfg.train.shots, image_size=cfg.model.image_size, seed=seed
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
    batches = iter(loader)
    rows, gaps, losses = [], [], []
    for step in range(1, steps + 1):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        episode = Episode.from_batch(batch)
        with torch.no_grad():
            fake = make_fake(fake_kind, episode, embedder, generator)
        out = discriminator_losses(discriminator, episode, fake, contextlib.nullcontext())
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        optimizer.step()
        gaps.append(float((out.real_realism - out.fake_realism).mean().detach()))
        losses.append(float(out.total.detach()))
        if step % 50 == 0 or step == steps:
            with torch.no_grad():
                real_vector, _ = discriminator.features_and_vector(
                    episode.target_image, episode.target_landmark_image
                )
                fake_vector, _ = discriminator.features_and_vector(fake, episode.target_landmark_image)
                projection = discriminator.video_embeddings(episode.video_index) + discriminator.w0
            difference = real_vector - fake_vector
            recent = slice(-min(50, len(gaps)), None)
            rows.append(
                {
                    "step": step,
                    "gap": sum(gaps[recent]) / len(gaps[recent]),
                    "L_DSC": sum(losses[recent]) / len(losses[recent]),
                    "V_real_norm": float(real_vector.norm(dim=1).mean()),
                    "V_difference_norm": float(difference.norm(dim=1).mean()),
                    "projection_norm": float(projection.norm(dim=1).mean()),
                    "cos_difference_projection": float(F.cosine_similarity(difference, projection).mean()),
                }
            )
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}))
    return rows


def make_fake(kind: str, episode: Episode, embedder, generator) -> torch.Tensor:
    real = episode.target_image
    if kind == "generator":
        person_embedding, _ = embed_person(embedder, episode.shot_images, episode.shot_landmark_images)
        return generator(episode.target_landmark_image, person_embedding=person_embedding)
    if kind == "blur":
        return F.interpolate(F.avg_pool2d(real, 4), scale_factor=4, mode="bilinear")
    return torch.full_like(real, -1.0)  # black in [-1, 1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="a training run folder (config.json, checkpoints/)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--fake", choices=FAKES, default="generator")
    parser.add_argument("--fresh", action="store_true", help="a freshly initialised D instead of the run's")
    parser.add_argument("--lr", type=float, default=2e-4, help="D's learning rate (2e-4, the paper's)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    probe(args.run, args.steps, args.fake, args.fresh, args.lr, args.batch_size, args.seed)


if __name__ == "__main__":
    main()
