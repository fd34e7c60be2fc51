"""Regenerate docs/images/synthetic-grid.png:  .venv/bin/python docs/make_synthetic_grid.py [PNG]"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from metahead.data.synthetic.grid import render_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default = Path(__file__).resolve().parent / "images" / "synthetic-grid.png"
    parser.add_argument("out", nargs="?", default=str(default))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--identities", type=int, default=6)
    parser.add_argument("--columns", type=int, default=6)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    grid = render_grid(args.seed, args.identities, args.columns, args.size)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(args.out)
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]})")


if __name__ == "__main__":
    main()
