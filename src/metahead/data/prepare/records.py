"""What a prepare run records on disk, and its summaries: the progress files (one JSON line per finished
source), the options file a resumed run must match, manifest.csv and rejects.csv, and the counts by
outcome and reason."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from metahead.data.format import INFO, DataError, VideoRecord, video_dir, write_manifest
from metahead.data.prepare.config import OUTPUT_OPTIONS, PrepareConfig
from metahead.data.prepare.process import ItemResult
from metahead.fileio import atomic_path, atomic_write_text

PROGRESS_DIR = "progress"
OPTIONS_FILE = "prepare.json"
REJECTS_FILE = "rejects.csv"
SUMMARY_FILE = "prepare-summary.json"


def progress_path(out: str | os.PathLike, shard: tuple[int, int]) -> Path:
    index, count = shard
    return Path(out) / PROGRESS_DIR / f"shard-{index:05d}-of-{count:05d}.jsonl"


def read_progress(out: str | os.PathLike) -> dict[str, ItemResult]:
    """Every finished source recorded under DATA/progress (all shards); an "ok" outranks a reject and a
    later line an earlier one. A torn last line (a crash mid-write) is ignored."""
    done: dict[str, ItemResult] = {}
    folder = Path(out) / PROGRESS_DIR
    if not folder.is_dir():
        return done
    for file in sorted(folder.glob("*.jsonl")):
        with open(file) as f:
            for line in f:
                try:
                    result = ItemResult.from_dict(json.loads(line))
                except (json.JSONDecodeError, TypeError):
                    continue
                previous = done.get(result.path)
                if previous is None or result.status == "ok" or previous.status != "ok":
                    done[result.path] = result
    return done


class ProgressLog:
    """Appends one JSON line per finished source and syncs it: a crash loses only sources in flight."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a")

    def append(self, result: ItemResult) -> None:
        self._file.write(json.dumps(asdict(result), sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def check_options(out: Path, cfg: PrepareConfig) -> None:
    """Record the run's options; refuse to add to a folder prepared with different ones."""
    options_path = out / OPTIONS_FILE
    wanted = {k: getattr(cfg, k) for k in OUTPUT_OPTIONS}
    if options_path.exists():
        try:
            stored = json.loads(options_path.read_text())["options"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(
                f"{options_path}: unreadable ({err}); delete it only if {out} is disposable"
            ) from err
        changed = {k: (stored.get(k), v) for k, v in wanted.items() if stored.get(k) != v}
        if changed:
            listing = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
            raise DataError(
                f"{out} was prepared with other options ({listing}); use them again or a new --out"
            )
        return
    if (out / INFO).exists():
        raise DataError(f"{out} already holds a dataset not made by `metahead prepare`; choose a new --out")
    atomic_write_text(options_path, json.dumps({"options": wanted}, indent=2) + "\n")


def write_outputs(out: str | os.PathLike, results: Iterable[ItemResult]) -> tuple[int, int]:
    """manifest.csv (kept videos whose folders exist) and rejects.csv; returns (videos, rejects)."""
    out = Path(out)
    records, rejects = [], []
    splits_of: dict[str, set[str]] = {}
    for r in sorted(results, key=lambda r: r.path):
        if r.status == "ok" and video_dir(out, r.path).is_dir():
            records.append(VideoRecord(r.identity, r.video, r.split, r.frames_kept, r.path))
            splits_of.setdefault(r.identity, set()).add(r.split)
        elif r.status != "ok":
            rejects.append(r)
    mixed = sorted(i for i, s in splits_of.items() if len(s) > 1)
    if mixed:
        raise DataError(
            f"{out}: identities {mixed[:5]} have videos in more than one split; were shards or a resumed "
            "run given different inputs or split options?"
        )
    write_manifest(out, records)
    with atomic_path(out / REJECTS_FILE) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "path", "identity", "video", "reason", "detail"])
        for r in rejects:
            writer.writerow([r.source, r.path, r.identity, r.video, r.reason, r.detail])
    return len(records), len(rejects)


def summarise(results: Sequence[ItemResult], seconds: float | None = None) -> dict[str, Any]:
    """Counts by outcome and reason, frame totals, landmark coverage and jitter over the results."""
    ok = [r for r in results if r.status == "ok"]
    frames_read = sum(r.frames_read for r in results)
    drops: Counter[str] = Counter()
    for r in results:
        drops.update(r.drops)
    jitters = [r.jitter.get("jitter_median") for r in ok if r.jitter.get("pairs", 0) >= 2]
    jitters = [j for j in jitters if j is not None and np.isfinite(j)]
    summary: dict[str, Any] = {
        "sources": len(results),
        "videos_ok": len(ok),
        "rejected": len(results) - len(ok),
        "rejects_by_reason": dict(sorted(Counter(r.reason for r in results if r.status != "ok").items())),
        "frames_read": frames_read,
        "frames_kept": sum(r.frames_kept for r in ok),
        "frame_drops_by_reason": dict(sorted(drops.items())),
        "landmark_coverage": (sum(r.landmark_frames for r in results) / frames_read) if frames_read else None,
        "videos_with_several_faces": sum(r.several_faces for r in results),
        "jitter_median_of_videos": float(np.median(jitters)) if jitters else None,
        "crop_modes": dict(sorted(Counter(r.crop_mode for r in ok).items())),
    }
    if seconds is not None:
        summary["seconds"] = round(seconds, 2)
        summary["videos_per_second"] = round(len(results) / seconds, 3) if seconds > 0 else None
        summary["frames_per_second"] = round(frames_read / seconds, 2) if seconds > 0 else None
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"{summary['videos_ok']} videos prepared, {summary['rejected']} rejected of {summary['sources']}"
    ]
    for reason, count in summary["rejects_by_reason"].items():
        lines.append(f"  rejected {reason}: {count}")
    lines.append(f"frames: {summary['frames_read']} read, {summary['frames_kept']} kept")
    for reason, count in summary["frame_drops_by_reason"].items():
        lines.append(f"  frames dropped {reason}: {count}")
    if summary.get("landmark_coverage") is not None:
        lines.append(f"landmarks on {100 * summary['landmark_coverage']:.2f}% of frames read")
    if summary.get("jitter_median_of_videos") is not None:
        lines.append(
            f"landmark jitter (median of videos): {summary['jitter_median_of_videos']:.4f} eye distances"
        )
    if summary.get("seconds") is not None:
        lines.append(
            f"{summary['seconds']} s: {summary['videos_per_second']} videos/s, "
            f"{summary['frames_per_second']} frames/s"
        )
    return "\n".join(lines)
