"""Activation scale at initialisation per preset and weight init: E's ê, G's output, D's V and r, and the
RMS of every stage of the down paths. Prints JSON. Used to choose ModelConfig.weight_init (docs/networks.md).

    .venv/bin/python benchmarks/init_stats.py [--presets tiny cpu-64 paper-256] [--inits orthogonal xavier]
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from metahead.config import preset
from metahead.models import Discriminator, Embedder, Generator


def rms(t: torch.Tensor) -> float:
    return round(float(t.float().pow(2).mean().sqrt()), 4)


def stats(preset_name: str, weight_init: str, batch: int, seed: int) -> dict:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(preset(preset_name).model, weight_init=weight_init)
    embedder, generator, discriminator = Embedder(cfg), Generator(cfg), Discriminator(cfg, 8)
    size = cfg.image_size
    images = torch.rand(batch, 3, size, size) * 2 - 1
    landmarks = (torch.rand(batch, 3, size, size) > 0.97).float() * 2 - 1  # sparse lines on black
    with torch.no_grad():
        embed_stages = embedder.down(torch.cat([images, landmarks], 1))
        person = embedder(images, landmarks)
        psi = generator.project(person)
        fake = generator(landmarks, person)
        vector, d_features = discriminator.features_and_vector(images, landmarks)
        realism, _ = discriminator(images, landmarks, torch.zeros(batch, dtype=torch.long))
    return {
        "preset": preset_name,
        "weight_init": weight_init,
        "embedder_stage_rms": [rms(t) for t in embed_stages],
        "embedding_rms": rms(person),
        "psi_minus_identity_rms": rms(psi - generator.identity_adain_params()),
        "generator_output_rms": rms(fake),
        "generator_output_saturated_fraction": round(float((fake.abs() > 0.99).float().mean()), 4),
        "discriminator_stage_rms": [rms(t) for t in d_features],
        "discriminator_vector_rms": rms(vector),
        "realism": [round(float(r), 3) for r in realism],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "cpu-64", "cpu-128", "paper-256"])
    parser.add_argument("--inits", nargs="+", default=["orthogonal", "xavier"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in args.presets:
        for init in args.inits:
            print(json.dumps(stats(name, init, args.batch, args.seed)), flush=True)


if __name__ == "__main__":
    main()
