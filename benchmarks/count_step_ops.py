"""Operator calls per meta-training step: what a GPU step pays in launches, counted on the CPU.

On one H200 (session 18, docs/performance.md "GPU") a real-64 step took ~155 ms whatever the batch (1 to 32)
and the width: the GPU waits for Python and the dispatcher, which issue one call per operator. This
counts those calls (torch.profiler, CPU activity; nested calls included, so an `aten::to` and the `copy_`
it makes both count) for one step of a preset: the difference between a run of `--steps-a` and one of
`--steps-b` steps, divided by the step difference, so that set-up (W's start, the first batch) cancels.

    python benchmarks/count_step_ops.py --data /work/data/synth64 --preset real-64
    python benchmarks/count_step_ops.py --data DATA --preset real-64 --set train.amp=none --top 20

Prints one JSON object: operator calls per step (all, and `aten::` alone), and the most frequent operators.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile

from torch.profiler import ProfilerActivity, profile

from metahead.config import apply_overrides, preset
from metahead.training.meta import train


def calls_in_run(preset_name: str, data: str, steps: int, overrides: list[str]) -> collections.Counter:
    with tempfile.TemporaryDirectory() as out:
        settings = [
            f"train.data={data}",
            f"train.out={out}",
            f"train.steps={steps}",
            "train.num_workers=0",  # the loader's decoding stays out of the count's process
            "train.sample_every=1000000",
            "train.checkpoint_every=1000000",
            "train.log_every=1000000",  # the last step logs in both runs alike
            "train.device=cpu",
            *overrides,
        ]
        cfg = apply_overrides(preset(preset_name), settings)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train(cfg, progress=False)
    calls: collections.Counter = collections.Counter()
    for event in prof.key_averages():
        calls[event.key] += event.count
    return calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a metahead dataset (metahead synth or prepare)")
    parser.add_argument("--preset", default="real-64")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--steps-a", type=int, default=2)
    parser.add_argument("--steps-b", type=int, default=6)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    if args.steps_b <= args.steps_a:
        parser.error("--steps-b must exceed --steps-a")
    short = calls_in_run(args.preset, args.data, args.steps_a, args.set)
    long = calls_in_run(args.preset, args.data, args.steps_b, args.set)
    steps = args.steps_b - args.steps_a
    per_step = {k: (long[k] - short[k]) / steps for k in long if long[k] > short[k]}
    top = sorted(per_step.items(), key=lambda kv: -kv[1])[: args.top]
    print(
        json.dumps(
            {
                "preset": args.preset,
                "overrides": args.set,
                "calls_per_step": round(sum(per_step.values())),
                "aten_calls_per_step": round(sum(v for k, v in per_step.items() if k.startswith("aten::"))),
                "top": {k: round(v, 1) for k, v in top},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
