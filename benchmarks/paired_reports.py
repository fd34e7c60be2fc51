"""Two evaluation reports (or two methods of one) compared avatar source by avatar source; prints a table.

Each side is REPORT:METHOD, REPORT a `metahead evaluate` folder (its results.jsonl). For every avatar source
(person, video) and T that both sides scored, the per-source value is the mean of the metric over its
held-out frames; the table gives, per T and metric, the mean and standard deviation of A − B over the
sources, in how many A is ahead (higher is better, or lower for the metrics that say so), and the paired t
(mean / (std / √n)). This is how docs/results.md compares a real-data model with the synthetic-only one,
and FT with the nearest shot, on the same shots and frames.

    python benchmarks/paired_reports.py /work/eval/realdev-both:ft /work/eval/realdev-synthonly:ft
    python benchmarks/paired_reports.py /work/eval/realdev-both:ft /work/eval/realdev-both:nearest_shot \
        --metrics ssim csim landmark_error sharpness
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from metahead.evaluation.metrics import get_metrics
from metahead.evaluation.protocol import RESULTS_FILE
from metahead.evaluation.runner import ResultsFileError, read_results


def per_source(report: str, method: str, metric: str) -> dict[tuple[str, str, int], float]:
    """{(person, video, T): mean of the metric over that source's held-out frames} for one method."""
    path = Path(report) / RESULTS_FILE
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (run `metahead evaluate ... --out {report}` first)")
    try:
        results = read_results(path)
    except ResultsFileError as err:
        raise SystemExit(str(err)) from None
    values = {}
    for record in results.values():  # the jobs that finished ("ok"), by key
        if record.get("kind") != "self" or record.get("method") != method:
            continue
        frames = [v for v in record.get("per_frame", {}).get(metric, []) if v is not None]
        frames = [v for v in frames if not math.isnan(v)]
        if frames:
            values[(record["identity"], record["video"], int(record["shots"]))] = float(np.mean(frames))
    return values


def compare(side_a: str, side_b: str, metrics: list[str]) -> list[dict]:
    (report_a, method_a), (report_b, method_b) = (_side(side_a), _side(side_b))
    rows = []
    for spec in get_metrics(metrics):
        metric, sign = spec.name, (1.0 if spec.higher_is_better else -1.0)
        a, b = per_source(report_a, method_a, metric), per_source(report_b, method_b, metric)
        for shots in sorted({key[2] for key in a.keys() & b.keys()}):
            keys = sorted(key for key in a.keys() & b.keys() if key[2] == shots)
            differences = np.array([a[key] - b[key] for key in keys])
            std = float(differences.std(ddof=1)) if len(keys) > 1 else math.nan
            rows.append({
                "metric": metric, "T": shots, "sources": len(keys),
                "mean_difference": float(differences.mean()), "std": std,
                "a_ahead": int((sign * differences > 0).sum()),
                "paired_t": float(differences.mean() / (std / math.sqrt(len(keys)))) if std > 0 else math.nan,
                "mean_a": float(np.mean([a[k] for k in keys])),
                "mean_b": float(np.mean([b[k] for k in keys])),
            })  # fmt: skip
    return rows


def _side(text: str) -> tuple[str, str]:
    report, _, method = text.rpartition(":")
    if not report or not method:
        raise SystemExit(f"{text!r}: give a side as REPORT:METHOD, e.g. /work/eval/realdev:ft")
    return report, method


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a", metavar="REPORT:METHOD")
    parser.add_argument("b", metavar="REPORT:METHOD")
    parser.add_argument("--metrics", nargs="+", default=["ssim", "csim"])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    args = parser.parse_args()
    rows = compare(args.a, args.b, args.metrics)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"A = {args.a}, B = {args.b}; per avatar source, A − B\n")
    print("| metric | T | A | B | A − B (mean ± std) | A ahead | paired t |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['metric']} | {r['T']} | {r['mean_a']:.3f} | {r['mean_b']:.3f} | "
            f"{r['mean_difference']:+.3f} ± {r['std']:.3f} | {r['a_ahead']}/{r['sources']} | "
            f"{r['paired_t']:.1f} |"
        )


if __name__ == "__main__":
    main()
