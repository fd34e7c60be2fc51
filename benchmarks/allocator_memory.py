"""Memory over time of a training run under each allocator setting: does the process's RSS level off?

Starts `metahead train` once per setting (one after the other, or all at once with --together, which
compares them under the same load), samples the training process's resident memory every few seconds
and prints where it started, where it ended and its growth per minute over the second half of the run.
Found with it (docs/performance.md, "Allocator"): jemalloc with page decay off (the project's tuned
allocator until 2026-12-02) grew by ~0.7 GB a minute on real-train + real-train-2 (12 GB after 40
minutes), with its thread caches off too, while glibc with the project's MALLOC_* tuning stayed flat.

    python benchmarks/allocator_memory.py --data /work/data/real-train-both-128 --preset real-64 \
        --seconds 180 --together --resume-from /work/runs/real-both
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from metahead import perf
from metahead.training.logging import read_log

SETTINGS = {
    "glibc": {},
    "glibc-tuned": dict(perf.GLIBC_TUNING),
    "jemalloc-keep-pages": {"MALLOC_CONF": perf.JEMALLOC_CONF},
    "jemalloc-keep-pages-no-tcache": {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1,tcache:false"},
    "jemalloc-decay-10s": {"MALLOC_CONF": "dirty_decay_ms:10000,muzzy_decay_ms:0"},
}


def resident_mb(pid: int) -> float | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def start(name: str, args, folder: Path) -> subprocess.Popen:
    out = folder / name
    if args.resume_from:  # the newest checkpoint of a run, so that the process is past its start-up
        states = sorted((Path(args.resume_from) / "checkpoints").glob("state-*.pt"))
        if not states:
            raise SystemExit(f"{args.resume_from}: no checkpoints/state-*.pt to resume from")
        (out / "checkpoints").mkdir(parents=True)
        shutil.copy(states[-1], out / "checkpoints" / states[-1].name)
        for name_ in ("config.json", "content_loss.json"):
            if (Path(args.resume_from) / name_).exists():
                shutil.copy(Path(args.resume_from) / name_, out / name_)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF", *perf.GLIBC_TUNING)}
    env["OMP_NUM_THREADS"] = str(args.threads)
    if name.startswith("jemalloc"):
        jemalloc = perf.find_jemalloc()
        if jemalloc is None:
            raise SystemExit("jemalloc is not installed (apt install libjemalloc2)")
        env["LD_PRELOAD"] = jemalloc
    env.update(SETTINGS[name])
    command = [
        *(sys.executable, "-m", "metahead", "train", "--config", args.preset, "--data", args.data),
        *("--out", str(out), "--set", "train.steps=1000000", "--set", "train.sample_every=1000000"),
    ]
    if args.resume_from:
        command.append("--resume")
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def watch(processes: dict[str, subprocess.Popen], seconds: float, every: float) -> dict[str, list]:
    samples: dict[str, list] = {name: [] for name in processes}
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        for name, process in processes.items():
            mb = resident_mb(process.pid)
            if mb is not None:
                samples[name].append((time.monotonic() - started, mb))
        time.sleep(every)
    for process in processes.values():
        process.terminate()
        process.wait()
    return samples


def summary(samples: list) -> dict:
    if len(samples) < 4:
        return {"samples": len(samples)}
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    minutes = (half[-1][0] - half[0][0]) / 60
    return {
        "start_mb": round(samples[0][1]), "end_mb": round(samples[-1][1]),
        "growth_mb_per_min_second_half": round((half[-1][1] - half[0][1]) / minutes, 1) if minutes else None,
    }  # fmt: skip


def step_time(run: Path) -> dict:
    """The median of the run's logged step times (throughput/step_time_s in log.jsonl)."""
    try:
        rows = read_log(run / "log.jsonl")
    except OSError:  # the process never logged
        return {}
    times = sorted(r["throughput/step_time_s"] for r in rows if "throughput/step_time_s" in r)
    return {"median_step_s": round(times[len(times) // 2], 3), "logged_steps": len(times)} if times else {}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", default="real-64")
    parser.add_argument("--seconds", type=float, default=120, help="per setting (all of them: --together)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--together", action="store_true", help="run the settings at the same time")
    parser.add_argument("--resume-from", help="a run folder: start each process from its newest checkpoint")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        groups = [args.settings] if args.together else [[name] for name in args.settings]
        for group in groups:
            processes = {name: start(name, args, Path(folder)) for name in group}
            for name, samples in watch(processes, args.seconds, every=5).items():
                results[name] = {**summary(samples), **step_time(Path(folder) / name)}
    print(json.dumps({"settings": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
