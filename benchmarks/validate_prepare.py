"""Validate `metahead prepare` on the real clips of ../shared/data/real-dev: landmark coverage, landmark
jitter between consecutive frames, crop modes, rejects, and a contact sheet to look at.

Prepares every video and the photo folder of real-dev into an ignored folder (default out/real-dev-data,
resumable), writes a contact sheet with landmark overlays (default out/real-dev-sheet.jpg; never commit
it: the people in these clips consented to nothing beyond their original publication) and prints JSON:
per video the frames, landmark coverage, jitter (median and 95th percentile of the second difference of
the stored landmarks, in eye distances), the tracker's counts and the crop mode; then the totals.
With --compare-detection N, the jitter of the first N clips is also measured with detection on every
frame (no tracking), to show what tracking does to it.

    .venv/bin/python benchmarks/validate_prepare.py [--out out/real-dev-data] [--sheet out/real-dev-sheet.jpg]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_DEV = REPO.parent / "shared" / "data" / "real-dev"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REAL_DEV), help="the real-dev folder")
    parser.add_argument("--out", default=str(REPO / "out" / "real-dev-data"))
    parser.add_argument("--sheet", default=str(REPO / "out" / "real-dev-sheet.jpg"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--fresh", action="store_true", help="delete --out first instead of resuming")
    parser.add_argument("--compare-detection", type=int, default=0, metavar="N")
    args = parser.parse_args()

    from metahead.data.contact_sheet import make_contact_sheet
    from metahead.data.prepare import PrepareConfig, prepare_dataset, process_item, read_progress
    from metahead.data.sources import apply_identities, discover, read_identity_map

    data = Path(args.data)
    if not (data / "video").is_dir():
        print(f"real-dev clips not found at {data}; nothing to validate", file=sys.stderr)
        return 1
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    items = discover([data / "video", data / "image"])
    # Name people as the manifest guesses them (MEAD W009 / W011 have eight takes each).
    items = apply_identities(
        items, identity_map=read_identity_map(data / "MANIFEST.tsv", "file", "person_id_guess")
    )
    cfg = PrepareConfig(size=args.size)
    start = time.perf_counter()
    summary = prepare_dataset(items, out, cfg, workers=args.workers, progress=True)
    elapsed = time.perf_counter() - start
    sheet = make_contact_sheet(out, args.sheet, frames_per_video=6, max_videos=None, tile=128)

    results = read_progress(out)
    per_video = {}
    for path, r in sorted(results.items()):
        per_video[path] = {
            "status": r.status if r.status == "ok" else f"rejected: {r.reason}",
            "frames": r.frames_read,
            "landmark_coverage": round(r.landmark_frames / r.frames_read, 4) if r.frames_read else None,
            "kept": r.frames_kept,
            "jitter_median": _round(r.jitter.get("jitter_median")),
            "jitter_p95": _round(r.jitter.get("jitter_p95")),
            "step_median": _round(r.jitter.get("step_median")),
            "crop_mode": r.crop_mode,
            "tracker": r.tracker,
        }
    report = {
        "validation": "prepare on real-dev",
        "data": str(data),
        "out": str(out),
        "contact_sheet": str(sheet),
        "seconds_this_run": round(elapsed, 1),
        "totals": summary["dataset"] if "dataset" in summary else summary,
        "videos": per_video,
    }
    if args.compare_detection:
        from metahead.landmarks.detect import DlibLandmarkDetector

        detector = DlibLandmarkDetector()
        compare = {}
        videos = [it for it in items if it.kind == "video"][: args.compare_detection]
        for item in videos:
            tracked = results[item.path]
            every = process_item(
                item, PrepareConfig(size=args.size, redetect_every=0), out / "compare", detector
            )
            compare[item.path] = {
                "tracking": {
                    "jitter_median": _round(tracked.jitter.get("jitter_median")),
                    "seconds": tracked.seconds,
                },
                "detect_every_frame": {
                    "jitter_median": _round(every.jitter.get("jitter_median")),
                    "seconds": every.seconds,
                },
            }
        shutil.rmtree(out / "compare", ignore_errors=True)
        report["tracking_vs_detection"] = compare
    print(json.dumps(report, indent=2))
    return 0


def _round(value):
    return None if value is None else round(float(value), 4)


if __name__ == "__main__":
    raise SystemExit(main())
