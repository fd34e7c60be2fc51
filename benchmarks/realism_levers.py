"""One lever at a time: short controlled meta-training runs that differ in a few config values, each judged
the same way. Prints a table (and JSON) and writes OUT/curves.png.

Every variant trains the same preset from the same seed on the same corpus for the same wall-clock minutes
(or steps), then the protocol makes FT and FF avatars of the corpus' test videos (T shots) and scores them
on held-out frames beside the nearest shot. From RUN/log.jsonl: D's real − fake score gap and L_DSC over
the last fifth of training. The baseline is the preset as it is (variant "base").

    python benchmarks/realism_levers.py --corpus demo-output/work/corpus --out /tmp/levers --minutes 3 \\
        --variant base --variant centred:train.video_embedding_init=centred \\
        --variant ema:train.ema_decay=0.99,train.video_embedding_init=centred

A variant is NAME or NAME:section.field=value[,section.field=value...]. Runs and reports already in OUT are
reused (delete a variant's folder to redo it).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from metahead.config import apply_overrides, preset
from metahead.evaluation.protocol import ProtocolConfig, evaluate
from metahead.training.logging import discriminator_balance, read_log
from metahead.training.meta import train

CURVE_SERIES = ("score_gap", "loss/discriminator", "loss/content")


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition(":")
    return name, [item for item in rest.split(",") if item]


def last_fifth(records: list[dict], key: str) -> float:
    values = [r[key] for r in records if key in r]
    tail = values[len(values) - max(1, len(values) // 5) :]
    return float(np.mean(tail)) if tail else math.nan


def run_variant(args: argparse.Namespace, name: str, overrides: list[str]) -> dict:
    folder = Path(args.out) / name
    run, report = folder / "run", folder / "eval"
    cfg = apply_overrides(preset(args.preset), overrides)
    cfg.train.data, cfg.train.out, cfg.train.seed = str(args.corpus), str(run), args.seed
    cfg.train.steps = args.steps
    cfg.train.time_limit_minutes = args.minutes
    started = time.monotonic()
    if not (run / "model.pt").is_file():
        train(cfg, resume=True)
    train_seconds = time.monotonic() - started
    records = read_log(run / "log.jsonl")
    balance = discriminator_balance(records)
    for record in records:
        if "score/real" in record:
            record["score_gap"] = record["score/real"] - record["score/fake"]
    protocol = ProtocolConfig(
        model=str(run / "model.pt"), data=str(args.corpus), out=str(report), shots=(args.shots,),
        eval_frames=args.eval_frames, max_videos=args.eval_videos, methods=("ft", "ff", "nearest_shot"),
        metrics=("ssim", "l1", "sharpness"), finetune_steps=args.finetune_steps, seed=args.seed,
        workers=1,
    )  # fmt: skip
    started = time.monotonic()
    result = evaluate(protocol)
    eval_seconds = time.monotonic() - started
    table = json.loads((report / "report.json").read_text())
    row = {
        "variant": name,
        "overrides": overrides,
        "steps": records[-1]["step"],
        "train_s": round(train_seconds, 1),
        "eval_s": round(eval_seconds, 1),
        "score_gap_last_fifth": balance["score_gap"],
        "dsc_last_fifth": balance["discriminator_loss"],
        "content_last_fifth": last_fifth(records, "loss/content"),
        "metrics": _method_means(table, args.shots),
        "failed": len(result.summary.failed),
    }
    return {"row": row, "records": records}


def _method_means(table: dict, shots: int) -> dict:
    """{method: {metric: mean}} at T = shots from report.json."""
    out: dict = {}
    for entry in table.get("self_reenactment", []):
        if int(entry.get("shots", -1)) != shots:
            continue
        out[entry["method"]] = {k: v["value"] for k, v in entry.get("metrics", {}).items()}
    return out


def plot(results: list[dict], path: Path) -> None:
    from PIL import Image, ImageDraw

    width, panel, margin, gap = 760, 170, 60, 26
    image = Image.new("RGB", (width, 30 + len(CURVE_SERIES) * (panel + gap)), "white")
    draw = ImageDraw.Draw(image)
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"]
    for i, result in enumerate(results):
        draw.text((margin + 110 * i, 6), result["row"]["variant"], fill=colours[i % len(colours)])
    for row, key in enumerate(CURVE_SERIES):
        top = 30 + row * (panel + gap) + gap
        series = []
        for result in results:
            points = [(r["step"], r[key]) for r in result["records"] if key in r and math.isfinite(r[key])]
            # a moving average over 10 logged points: the raw hinge losses are too noisy to compare by eye
            if points:
                values = np.convolve([v for _, v in points], np.ones(10) / 10, mode="valid")
                series.append([(s, v) for (s, _), v in zip(points[9:], values)])
        flat = [v for s in series for _, v in s]
        if not flat:
            continue
        low, high = float(np.percentile(flat, 1)), float(np.percentile(flat, 99))
        span = max(high - low, 1e-9)
        last = max(s for points in series for s, _ in points)
        draw.rectangle([margin, top, width - 10, top + panel], outline="#888888")
        draw.text((margin + 4, top - gap + 8), key + " (moving average of 10 logs)", fill="black")
        draw.text((4, top), f"{high:.3g}", fill="black")
        draw.text((4, top + panel - 10), f"{low:.3g}", fill="black")
        for i, points in enumerate(series):
            xy = [
                (
                    margin + (width - 10 - margin) * s / last,
                    top + panel * (1 - (min(max(v, low), high) - low) / span),
                )
                for s, v in points
            ]
            if len(xy) > 1:
                draw.line(xy, fill=colours[i % len(colours)], width=2)
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", required=True, help="dataset folder with train and test splits")
    parser.add_argument("--out", required=True)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--variant", action="append", default=[], help="NAME[:section.field=value,...]")
    parser.add_argument("--minutes", type=float, default=3.0, help="meta-training wall time per variant")
    parser.add_argument("--steps", type=int, default=100_000, help="meta-training step cap per variant")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--eval-videos", type=int, default=3)
    parser.add_argument("--eval-frames", type=int, default=8)
    parser.add_argument("--finetune-steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    results = [run_variant(args, *parse_variant(v)) for v in (args.variant or ["base"])]
    plot(results, Path(args.out) / "curves.png")
    print(f"{'variant':<14}{'steps':>6}{'gap':>7}{'L_DSC':>7}{'cnt':>7}  " + "  ".join(
        f"{m}:{k}" for m in ("ft", "ff", "nearest_shot") for k in ("ssim", "sharpness")
    ))  # fmt: skip
    for result in results:
        row = result["row"]
        cells = [
            f"{row['metrics'].get(m, {}).get(k, math.nan):.3f}"
            for m in ("ft", "ff", "nearest_shot")
            for k in ("ssim", "sharpness")
        ]
        print(
            f"{row['variant']:<14}{row['steps']:>6}{row['score_gap_last_fifth']:>7.2f}"
            f"{row['dsc_last_fifth']:>7.2f}{row['content_last_fifth']:>7.3f}  " + "  ".join(cells)
        )
    print(json.dumps([r["row"] for r in results]))


if __name__ == "__main__":
    main()
