"""`metahead <command>`: parses arguments into configs and calls the layers below. Nothing imports this."""

from __future__ import annotations

import argparse
import sys

from metahead.config import PRESETS


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="generate a synthetic talking-head corpus in the dataset format")
    p.add_argument("out", help="output dataset folder")
    p.add_argument("--identities", type=int, default=20)
    p.add_argument("--videos-per-identity", type=int, default=3)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=_run_synth)


def _run_synth(args) -> int:
    from metahead.config import SynthConfig
    from metahead.data.synthetic import generate_corpus

    cfg = SynthConfig(
        identities=args.identities,
        videos_per_identity=args.videos_per_identity,
        frames=args.frames,
        size=args.size,
        seed=args.seed,
        test_fraction=args.test_fraction,
    )
    generate_corpus(args.out, cfg, workers=args.workers)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metahead", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_synth(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"metahead {args.command}: error: {err}", file=sys.stderr)
        return 2


__all__ = ["main", "build_parser", "PRESETS"]
