"""The evaluation report: numbers pooled over test videos, written as JSON, CSV, Markdown and HTML.

The main table is laid out like the paper's Table 1: one row per method and T, the paper's columns
first (FID↓ — or, without the Inception weights, the identity Fréchet distance under its own name —
SSIM↑, CSIM↑; the user study is not reproduced), then the other metrics. Per-frame metrics show the mean
over videos of each video's mean, ± the standard deviation across videos; set metrics (FID, identity
FD) are one Fréchet distance over the pooled frames of all videos. Each T gets an image grid: a row
per shown video and frame with some of the T shots, the real frame, and every method's result.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metahead.evaluation.methods import METHODS, SAMPLE_FRAMES
from metahead.evaluation.metrics import distribution_score, get_metric, summarize
from metahead.fileio import atomic_path, atomic_write_text

# Table 1's FID, SSIM, CSIM (identity FD stands apart), and sharpness beside them: blur shows in numbers
PAPER_COLUMNS = ("fid", "identity_fd", "ssim", "csim", "sharpness", "blockiness")
CELL = 128  # pixels per image in the grids
SHOTS_SHOWN = 3


EVAL_SOURCE_TEXT = {
    "same-video": "the same video",
    "split-video": "the second half of the video (shots from the first)",
    "other-videos": "the same person’s other videos",
    "auto": "the person’s other videos where there are some, else the video's second half",
}


def _stats(values: Sequence[float]) -> dict[str, Any]:
    summary = summarize(values)
    return summary.as_dict()


def _self_row(cfg, method: str, shots: int, group: list[dict], metric_names: Sequence[str]) -> dict[str, Any]:

    row: dict[str, Any] = {
        "method": method,
        "label": METHODS[method],
        "shots": shots,
        "videos": len(group),
        "frames": sum(r["frames"] for r in group),
        "metrics": {},
        "seconds_per_video": {
            k: float(np.mean([r["seconds"].get(k, 0.0) for r in group]))
            for k in ("avatar", "render", "metrics")
        },
    }
    out = Path(cfg.out)
    for name in metric_names:
        metric = get_metric(name)
        if metric.kind == "paired":
            video_means, missing = [], 0
            for r in group:
                values = [math.nan if v is None else v for v in r["per_frame"].get(name, [])]
                summary = summarize(values)
                missing += summary.missing
                video_means.append(summary.mean)
            stats = _stats(video_means)
            row["metrics"][name] = {
                "value": stats["mean"],
                "std": stats["std"],
                "videos": stats["count"],
                "missing_frames": missing,
            }
        else:
            reals, fakes = [], []
            for r in group:
                if r.get("features"):
                    with np.load(out / r["features"]) as arrays:
                        if f"{name}.real" in arrays:
                            reals.append(arrays[f"{name}.real"])
                            fakes.append(arrays[f"{name}.fake"])
            count = sum(len(a) for a in reals)
            value = distribution_score(reals, fakes) if count >= 2 else math.nan
            row["metrics"][name] = {"value": value, "std": None, "frames": count}
    shot_ssims = [r["shot_ssim"] for r in group if r.get("shot_ssim") is not None]
    if shot_ssims:
        stats = _stats(shot_ssims)
        row["shot_ssim"] = {"value": stats["mean"], "std": stats["std"], "videos": stats["count"]}
    return row


def _cross_rows(results: list[dict]) -> list[dict[str, Any]]:

    rows = []
    keys = sorted(
        {(r["method"], r["shots"]) for r in results}, key=lambda k: (list(METHODS).index(k[0]), k[1])
    )
    for method, shots in keys:
        group = [r for r in results if r["method"] == method and r["shots"] == shots]
        for variant in ("no_retarget", "retarget"):
            row: dict[str, Any] = {
                "method": method,
                "label": METHODS[method],
                "shots": shots,
                "retarget": variant == "retarget",
                "pairs": len(group),
                "metrics": {},
            }
            for name, source in (
                ("csim_to_source", variant),
                ("landmark_error_to_driver", variant),
                ("driver_csim_to_source", "driver"),
            ):
                field = "csim_to_source" if name.startswith("driver") else name
                means = [
                    summarize([math.nan if v is None else v for v in r["per_frame"][source][field]]).mean
                    for r in group
                ]
                stats = _stats(means)
                row["metrics"][name] = {"value": stats["mean"], "std": stats["std"], "pairs": stats["count"]}
            rows.append(row)
    return rows


def build_report(
    cfg,
    plans: Sequence[Any],
    notes: Sequence[str],
    metric_names: Sequence[str],
    results: dict[str, Any],
    failed: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The report's numbers from the runner's results (key -> job result)."""
    from dataclasses import asdict

    self_results = [r for r in results.values() if r and r.get("kind") == "self"]
    rows = []
    for shots in cfg.shots:
        for method in cfg.methods:
            group = [r for r in self_results if r["method"] == method and r["shots"] == shots]
            if group:
                rows.append(_self_row(cfg, method, shots, group, metric_names))
    cross = [r for r in results.values() if r and r.get("kind") == "cross"]
    return {
        "config": {k: v for k, v in asdict(cfg).items()},
        "videos": [p.name for p in plans],
        "metrics": [
            {
                "name": n,
                "arrow": get_metric(n).arrow,
                "kind": get_metric(n).kind,
                "description": get_metric(n).description,
                "unit": get_metric(n).unit,
            }
            for n in metric_names
        ],
        "self_reenactment": rows,
        "cross_identity": _cross_rows(cross),
        "samples": {key: r.get("sample") or r.get("samples") for key, r in results.items() if r},
        "notes": list(notes),
        "failed": dict(failed or {}),
    }


# ----------------------------------------------------------------------------------------------
# Writing


def _format(value: float | None, std: float | None = None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.{digits}f}"
    if std is not None and not math.isnan(std):
        text += f" ± {std:.{digits}f}"
    return text


def _column_order(metric_names: Sequence[str]) -> list[str]:
    first = [n for n in PAPER_COLUMNS if n in metric_names]
    return first + [n for n in metric_names if n not in first]


def _header(name: str) -> str:
    metric = get_metric(name)
    label = {
        "fid": "FID",
        "identity_fd": "identity FD",
        "ssim": "SSIM",
        "csim": "CSIM",
        "psnr": "PSNR",
        "l1": "L1",
        "landmark_error": "landmark error",
    }.get(name, name)
    return f"{label}{metric.arrow}" + (f" ({metric.unit})" if metric.unit else "")


def main_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    names = _column_order([m["name"] for m in report["metrics"]])
    # The avatar's own T shots re-rendered: does fine-tuning reproduce what it was given?
    with_shots = any("shot_ssim" in row for row in report["self_reenactment"])
    header = ["Method (T)", *[_header(n) for n in names], *(["shots' SSIM↑"] if with_shots else []), "videos"]
    rows = []
    for row in report["self_reenactment"]:
        cells = [f"{row['label']} ({row['shots']})"]
        for n in names:
            entry = row["metrics"][n]
            digits = 2 if n in ("fid", "identity_fd", "psnr") else 3
            cells.append(_format(entry["value"], entry.get("std"), digits))
        if with_shots:
            shots = row.get("shot_ssim")
            cells.append(_format(shots["value"], shots["std"], 3) if shots else "—")
        rows.append([*cells, str(row["videos"])])
    return header, rows


def cross_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = [
        "Method (T)",
        "retargeting",
        "CSIM to the avatar's photos↑",
        "landmark error to the driver↓",
        "driver's own CSIM to the photos",
        "pairs",
    ]
    rows = []
    for row in report["cross_identity"]:
        m = row["metrics"]
        rows.append(
            [
                f"{row['label']} ({row['shots']})",
                "yes" if row["retarget"] else "no",
                _format(m["csim_to_source"]["value"], m["csim_to_source"]["std"]),
                _format(m["landmark_error_to_driver"]["value"], m["landmark_error_to_driver"]["std"]),
                _format(m["driver_csim_to_source"]["value"], m["driver_csim_to_source"]["std"]),
                str(row["pairs"]),
            ]
        )
    return header, rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _csv_text(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["section", "method", "shots", "retarget", "metric", "value", "std", "count"])
    for row in report["self_reenactment"]:
        entries = {**row["metrics"], **({"shot_ssim": row["shot_ssim"]} if "shot_ssim" in row else {})}
        for name, entry in entries.items():
            count = entry.get("videos", entry.get("frames"))
            writer.writerow(
                ["self", row["method"], row["shots"], "", name, entry["value"], entry.get("std"), count]
            )
    for row in report["cross_identity"]:
        for name, entry in row["metrics"].items():
            writer.writerow(
                [
                    "cross",
                    row["method"],
                    row["shots"],
                    row["retarget"],
                    name,
                    entry["value"],
                    entry["std"],
                    entry["pairs"],
                ]
            )
    return buffer.getvalue()


def _image_grid(cfg, plans: Sequence[Any], report: dict[str, Any], shots: int) -> Any:
    """Rows: shown videos × sample frames; columns: up to 3 shots, the real frame, each method's result."""
    from PIL import Image, ImageDraw

    from metahead.data.format import VideoReader

    out = Path(cfg.out)
    samples = report["samples"]
    candidates = plans[: cfg.grid_videos]
    methods = [m for m in cfg.methods if any(samples.get(f"{p.name}/T{shots}/{m}") for p in candidates)]
    shown = [p for p in candidates if any(samples.get(f"{p.name}/T{shots}/{m}") for m in methods)]
    if not shown or not methods:
        return None
    shot_columns = min(shots, SHOTS_SHOWN)
    labels = [f"shot {i + 1}" for i in range(shot_columns)] + ["real", *[METHODS[m] for m in methods]]
    label_height = 16
    rows = [(p, f) for p in shown for f in range(min(SAMPLE_FRAMES, len(p.targets)))]
    grid = Image.new("RGB", (CELL * len(labels), label_height + CELL * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for c, label in enumerate(labels):
        draw.text((c * CELL + 4, 2), label, fill="black")
    readers: dict[str, VideoReader] = {}

    def frame(path: str, index: int) -> Image.Image:
        if path not in readers:
            readers[path] = VideoReader(cfg.data, path)
        return Image.fromarray(readers[path].read_frame(index)).resize((CELL, CELL), Image.Resampling.BICUBIC)

    for r, (plan, f) in enumerate(rows):
        top = label_height + r * CELL
        for c, (path, index) in enumerate(plan.shots(shot_columns)):
            grid.paste(frame(path, index), (c * CELL, top))
        name = f"{plan.name} #{f + 1}"
        draw.rectangle((0, top, 6 * len(name) + 4, top + 12), fill="white")
        draw.text((2, top), name, fill="black")
        grid.paste(frame(*plan.targets[f]), (shot_columns * CELL, top))
        for c, method in enumerate(methods, start=shot_columns + 1):
            sample = samples.get(f"{plan.name}/T{shots}/{method}")
            if sample and (out / sample).is_file():
                with Image.open(out / sample) as strip:
                    side = strip.height
                    if strip.width >= (f + 1) * side:
                        tile = strip.crop((f * side, 0, (f + 1) * side, side)).convert("RGB")
                        grid.paste(tile.resize((CELL, CELL), Image.Resampling.BICUBIC), (c * CELL, top))
    return grid


def _missing_notes(report: dict[str, Any]) -> list[str]:
    """Which per-frame metrics could not score some frames (e.g. no face detected)."""
    notes = []
    for row in report["self_reenactment"]:
        for name, entry in row["metrics"].items():
            if entry.get("missing_frames"):
                notes.append(
                    f"{row['label']} (T={row['shots']}): {name} could not score {entry['missing_frames']} of "
                    f"{row['frames']} frames (no face found); averaged over the others"
                )
    return notes


def write_report_files(cfg, plans: Sequence[Any], report: dict[str, Any]) -> dict[str, Path]:
    """report.json, report.csv, report.md, report.html and grid_T<T>.png in cfg.out."""
    import json

    out = Path(cfg.out)
    paths = {
        "json": out / "report.json",
        "csv": out / "report.csv",
        "markdown": out / "report.md",
        "html": out / "report.html",
    }
    atomic_write_text(paths["json"], json.dumps(_json_safe(report), indent=1) + "\n")
    atomic_write_text(paths["csv"], _csv_text(report))
    grids = {}
    for shots in cfg.shots:
        image = _image_grid(cfg, plans, report, shots)
        if image is not None:
            grids[shots] = out / f"grid_T{shots}.png"
            with atomic_path(grids[shots]) as tmp:
                image.save(tmp, format="PNG")
            paths[f"grid_T{shots}"] = grids[shots]

    main_header, main_rows = main_table(report)
    cross_header, cross_rows = cross_table(report)
    videos = len(report["videos"])
    intro = (
        f"Model `{cfg.model}`, data `{cfg.data}` (split `{cfg.split}`, {videos} videos, held-out frames from "
        f"{EVAL_SOURCE_TEXT.get(cfg.eval_source, cfg.eval_source)}, "
        f"{cfg.eval_frames} per video). Per-frame metrics: mean over videos ± standard deviation across "
        "videos; FID and identity FD: one Fréchet distance over all frames. The identity FD uses dlib's face "
        "descriptors and is not comparable with FID."
    )
    md = [
        "# Evaluation report",
        "",
        intro,
        "",
        "## Self-reenactment (Table 1 layout)",
        "",
        _markdown_table(main_header, main_rows),
        "",
    ]
    page = [
        "<!doctype html><meta charset='utf-8'><title>metahead evaluation</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style>",
        "<h1>Evaluation report</h1>",
        f"<p>{html.escape(intro)}</p>",
        "<h2>Self-reenactment (Table 1 layout)</h2>",
        _html_table(main_header, main_rows),
    ]
    for shots, path in grids.items():
        md += [f"### T = {shots}", "", f"![T={shots}]({path.name})", ""]
        page += [f"<h3>T = {shots}</h3>", f"<img src='{html.escape(path.name)}' alt='T={shots}'>"]
    if cross_rows:
        note = (
            "No ground truth: CSIM of the results to the avatar's own photos (higher = keeps the identity), "
            "landmark error to the driver's frames (lower = follows the driver); the driver's own CSIM to "
            "the photos is what a result that copied the driver would score."
        )
        md += ["## Cross-identity reenactment", "", note, "", _markdown_table(cross_header, cross_rows), ""]
        page += [
            "<h2>Cross-identity reenactment</h2>",
            f"<p>{html.escape(note)}</p>",
            _html_table(cross_header, cross_rows),
        ]
    extra = [f"- {n}" for n in report["notes"]] + [f"- {n}" for n in _missing_notes(report)]
    extra += [f"- failed (rerun to retry): {k}: {v}" for k, v in report["failed"].items()]
    if extra:
        md += ["## Notes", "", *extra, ""]
        page += ["<h2>Notes</h2><ul>", *[f"<li>{html.escape(e[2:])}</li>" for e in extra], "</ul>"]
    atomic_write_text(paths["markdown"], "\n".join(md))
    atomic_write_text(paths["html"], "\n".join(page) + "\n")
    return paths


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
