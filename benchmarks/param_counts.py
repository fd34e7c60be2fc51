"""Parameter counts per network and preset (E, G with P, D without W, W per video, ψ̂ size). Prints JSON lines;
with --layout PRESET, one JSON line per stage of every network (output shape and parameters).

    .venv/bin/python benchmarks/param_counts.py [--layout paper-256]
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from metahead.config import PRESETS, preset
from metahead.models import Discriminator, Embedder, Generator


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def layout(name: str) -> None:
    """Run each network once on a zero batch and report every top-level stage's output shape."""
    cfg = preset(name).model
    size = cfg.image_size
    networks = {"E": Embedder(cfg), "G": Generator(cfg), "D": Discriminator(cfg, num_videos=1)}
    for label, net in networks.items():
        rows = []
        for stage_name, module in net.named_modules():
            depth = stage_name.count(".")
            top = stage_name.split(".")[0] in ("down", "bottleneck", "up", "up_attention")
            if (
                (top and depth == 2 and stage_name.split(".")[1] in ("blocks", "attention"))
                or (stage_name.startswith(("bottleneck.", "up.", "up_attention.")) and depth == 1)
                or stage_name in ("final_block", "out_norm", "out_conv", "projection")
            ):
                module.register_forward_hook(
                    lambda m, i, o, n=stage_name, rows=rows: rows.append(
                        (n, type(m).__name__, tuple(o.shape[1:]), count(m))
                    )
                )
        x = torch.zeros(1, 3, size, size)
        with torch.no_grad():
            if label == "E":
                net(x, x)
            elif label == "G":
                net(x, torch.zeros(1, cfg.embedding_dim))
            else:
                net(x, x, torch.zeros(1, dtype=torch.long))
        for stage, kind, shape, params in rows:
            print(
                json.dumps(
                    {"network": label, "stage": stage, "kind": kind, "output": shape, "params": params}
                )
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", metavar="PRESET", help="per-stage table of one preset instead of totals")
    args = parser.parse_args()
    if args.layout:
        layout(args.layout)
        return
    for name in PRESETS:
        cfg = preset(name).model
        embedder, generator, discriminator = Embedder(cfg), Generator(cfg), Discriminator(cfg, num_videos=1)
        projection = count(generator.projection)
        w_row = discriminator.video_embeddings.weight.shape[1]
        print(json.dumps({
            "preset": name,
            "image_size": cfg.image_size,
            "embedder_E": count(embedder),
            "generator_G_without_P": count(generator) - projection,
            "projection_P": projection,
            "adain_params_psi": generator.num_adain_params,
            "adain_layers": len(generator.adain_layers()),
            "discriminator_D_without_W": count(discriminator) - w_row,
            "W_per_video": w_row,
            "W_at_150k_videos": 150_000 * w_row,
            "total_E_G_P_D": count(embedder) + count(generator) + count(discriminator) - w_row,
        }))  # fmt: skip


if __name__ == "__main__":
    main()
