"""Does meta-training converge the same under bf16 autocast as in fp32? Prints JSON.

Trains the same preset twice from the same seed on the same episodes, once with `train.amp=none` and once
with `train.amp=bf16` (fp32 master weights, optimiser state and loss sums; convs and matmuls in bf16), and
compares the content-loss curves window by window. On CPUs without native bf16 the bf16 run is slow
(emulated), so the default is the `tiny` preset; the curves, not the times, are the point here.

    python benchmarks/bf16_convergence.py --data DATA [--preset tiny] [--steps 300] [--window 50]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from metahead.config import apply_overrides, preset
from metahead.training.meta import train


def content_curve(run: Path, window: int) -> list[float]:
    """Mean content loss per window of logged steps."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    windows: dict[int, list[float]] = {}
    for record in records:
        if "loss/content" in record:
            windows.setdefault((record["step"] - 1) // window, []).append(record["loss/content"])
    return [float(np.mean(windows[k])) for k in sorted(windows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a dataset folder with a train split")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--window", type=int, default=50, help="steps per averaged point of the curves")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = parser.parse_args()

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for amp in ("none", "bf16"):
            cfg = apply_overrides(
                preset(args.preset),
                [
                    f"train.data={args.data}",
                    f"train.out={Path(tmp) / amp}",
                    f"train.steps={args.steps}",
                    f"train.amp={amp}",
                    "train.device=cpu",
                    "train.log_every=1",
                    f"train.sample_every={args.steps}",
                    f"train.checkpoint_every={args.steps}",
                    *args.set,
                ],
            )
            started = time.perf_counter()
            train(cfg)
            seconds = time.perf_counter() - started
            curve = content_curve(Path(tmp) / amp, args.window)
            results[amp] = {
                "seconds": round(seconds, 1),
                "content_loss_per_window": [round(v, 4) for v in curve],
            }
    fp32, bf16 = results["none"]["content_loss_per_window"], results["bf16"]["content_loss_per_window"]
    print(
        json.dumps(
            {
                "preset": args.preset,
                "steps": args.steps,
                "window": args.window,
                "fp32": results["none"],
                "bf16": results["bf16"],
                "fp32_drop": round(fp32[0] - fp32[-1], 4),
                "bf16_drop": round(bf16[0] - bf16[-1], 4),
                "last_window_bf16_over_fp32": round(bf16[-1] / fp32[-1], 4),
                "max_abs_window_difference": round(
                    max(abs(a - b) for a, b in zip(fp32, bf16, strict=True)), 4
                ),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
