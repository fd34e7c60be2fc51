"""Speed of `metahead prepare`: frames per second per core, and where the time goes.

One process (one core) prepares a clip made of shifted crops of skimage's astronaut (a real face, always
available) at --side x --side, 25 fps, stored at --size: the whole pipeline (decode, track, crop, encode,
write), then each stage alone (per frame, median of --repeats passes):
  decode      PyAV H.264 decode + RGB conversion
  fit         dlib's 68-point shape predictor in a given box (what tracking costs per frame)
  detect      dlib's HOG detector on the full frame (what detecting every frame would cost)
  window      the detector on the small window around a tracked face (every --redetect-every frames)
  crop        cut + resize to --size (Pillow, bicubic)
  encode      JPEG quality 95 of the stored frame
and tracking against detecting on every frame. With --real, also the pipeline on every clip in
../shared/data/real-dev/video (frames/s over the lot). With --workers N, the pipeline in N processes.
Stage and per-core figures are CPU time of this process (what a core spends; wall time on a shared
machine also counts waiting for a core); wall time is given beside them. Prints one JSON object, with
the load average before and after.

    .venv/bin/python benchmarks/bench_prepare.py [--frames 100] [--side 512] [--real] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL_DEV = REPO.parent / "shared" / "data" / "real-dev" / "video"


def astronaut_frames(count: int, side: int) -> list[np.ndarray]:
    """A slow pan over the astronaut picture, scaled so the crop is side x side."""
    from PIL import Image
    from skimage import data

    image = data.astronaut()
    scale = side / 320
    big = np.asarray(Image.fromarray(image).resize((round(512 * scale), round(512 * scale)), Image.BICUBIC))
    out = []
    for i in range(count):
        dx = int(round((60 + 40 * np.sin(i / 15)) * scale))
        dy = int(round((20 + 10 * np.cos(i / 15)) * scale))
        out.append(np.ascontiguousarray(big[dy : dy + side, dx : dx + side]))
    return out


def per_frame_ms(fn, items, repeats: int) -> float:
    """Median over repeats of the CPU time per item, in ms (process time: what a core spends, much less
    skewed than wall time when other jobs share the machine)."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        for item in items:
            fn(item)
        times.append((time.process_time() - start) / len(items) * 1000)
    return statistics.median(times)


def timed(fn):
    """(result, wall seconds, CPU seconds) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--side", type=int, default=512, help="source frame side in pixels")
    parser.add_argument("--size", type=int, default=256, help="stored crop side")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--real", action="store_true", help="also time the real-dev clips")
    parser.add_argument("--workers", type=int, default=0, help="also time the pipeline in N processes")
    args = parser.parse_args()

    from metahead.data.face_crop import crop_boxes, crop_frame
    from metahead.data.format import encode_image
    from metahead.data.prepare import PrepareConfig, prepare_dataset, process_item
    from metahead.data.sources import discover
    from metahead.data.video_io import iter_video_frames, write_video_file
    from metahead.landmarks.detect import DlibLandmarkDetector
    from metahead.landmarks.track import LandmarkTracker, TrackerConfig

    load_before = os.getloadavg()
    result: dict = {
        "benchmark": "prepare",
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "clip": {"frames": args.frames, "side": args.side, "size": args.size, "fps": 25},
    }
    detector, load_seconds, _ = timed(DlibLandmarkDetector)
    result["model_load_seconds"] = round(load_seconds, 2)
    cfg = PrepareConfig(size=args.size, decode_threads=1)  # one core: FFmpeg on one thread too
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = tmp / "astronaut.mp4"
        write_video_file(clip, astronaut_frames(args.frames, args.side), fps=25)
        (item,) = discover([clip])

        runs = [
            timed(lambda k=k: process_item(item, cfg, tmp / f"data{k}", detector))
            for k in range(args.repeats)
        ]
        r = runs[-1][0]
        assert r.status == "ok", r
        wall = statistics.median(run[1] for run in runs)
        cpu = statistics.median(run[2] for run in runs)
        result["pipeline_one_core"] = {
            "frames_per_cpu_second": round(args.frames / cpu, 1),
            "frames_per_wall_second": round(args.frames / wall, 1),
            "tracker": r.tracker,
            "jitter_median_eye_distances": round(r.jitter["jitter_median"], 4),
        }

        decoded = [f.image for f in iter_video_frames(clip)]
        sample = decoded[:10]
        faces = [detector.detect(image)[0] for image in sample]
        pairs = list(zip(sample, [face.box for face in faces]))
        tracker = LandmarkTracker(detector, TrackerConfig())
        boxes, _ = crop_boxes(
            np.stack([face.landmarks for face in faces]),
            np.arange(10) / 25,
            sample[0].shape[:2],
            cfg.crop_config(),
        )
        crop_pairs = list(zip(sample, boxes))
        crops = [crop_frame(image, box, args.size) for image, box in crop_pairs]

        def decode(path):
            return sum(1 for _ in iter_video_frames(path, threads=1))

        stage = {
            "decode": per_frame_ms(decode, [clip], args.repeats) / args.frames,
            "fit": per_frame_ms(lambda pair: detector.fit(*pair), pairs, args.repeats),
            "detect_full_frame": per_frame_ms(detector.detect_boxes, sample, 1),
            "window_check": per_frame_ms(lambda pair: tracker._detect_near(*pair), pairs, 1),
            "crop_resize": per_frame_ms(lambda pair: crop_frame(*pair, args.size), crop_pairs, args.repeats),
            "jpeg_encode": per_frame_ms(lambda c: encode_image(c, "jpeg", 95), crops, args.repeats),
        }
        result["stage_cpu_ms_per_frame"] = {k: round(v, 3) for k, v in stage.items()}

        def landmarks_only(redetect_every: int):
            t = LandmarkTracker(detector, TrackerConfig(redetect_every=redetect_every))
            for image in decoded:
                t.update(image)

        tracked = timed(lambda: landmarks_only(10))[2] / len(decoded) * 1000
        every = timed(lambda: landmarks_only(0))[2] / len(decoded) * 1000
        result["landmarks_cpu_ms_per_frame"] = {
            "tracking": round(tracked, 2),
            "detect_every_frame": round(every, 2),
            "speedup": round(every / tracked, 1),
        }

        if args.real and REAL_DEV.is_dir():
            items = discover(sorted(REAL_DEV.glob("*.mp4")))
            summary, wall, cpu = timed(
                lambda: prepare_dataset(
                    items, tmp / "real", cfg, detector_factory=lambda: detector, progress=False
                )
            )
            result["real_dev_one_core"] = {
                "videos": summary["sources"],
                "frames": summary["frames_read"],
                "frames_per_cpu_second": round(summary["frames_read"] / cpu, 1),
                "frames_per_wall_second": round(summary["frames_read"] / wall, 1),
                "landmark_coverage": summary["landmark_coverage"],
            }
        if args.workers > 1:
            copies = tmp / "copies"
            copies.mkdir()
            for k in range(2 * args.workers):
                (copies / f"c{k}.mp4").write_bytes(clip.read_bytes())
            items = discover(sorted(copies.glob("*.mp4")))
            summary, wall, _ = timed(
                lambda: prepare_dataset(items, tmp / "pool", cfg, workers=args.workers, progress=False)
            )
            result[f"pipeline_{args.workers}_workers"] = {
                "frames_per_wall_second": round(summary["frames_read"] / wall, 1),
                "note": "includes starting the worker processes and loading the model in each",
            }
    result["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    if max(result["load_average_before_after"]) > 1.0:
        result["note"] = (
            "machine shared with other jobs during the run: wall-time figures are pessimistic, CPU-time ones "
            "less so (caches and memory bandwidth are shared too)"
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
