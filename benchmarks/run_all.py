"""Run every benchmark script (each prints JSON) and write benchmarks/results/<machine>.json atomically.

    python benchmarks/run_all.py            # `make bench`; < 15 min on 2 cores
    python benchmarks/run_all.py --quick    # smaller cases; writes <machine>-quick.json
    python benchmarks/run_all.py --device cuda

<machine> is hostname-independent (benchmarks/common.machine_name: cpu-2core-avx2, cpu-2core-amx, ...).
Each script runs in its own process with the tuned allocator and OpenMP settings (metahead.perf), recorded
in the file; a script that is missing (another engineer's, not written yet) or fails is listed with the
reason instead. bench_networks.py runs first and measures the machine's peak in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from metahead import perf  # noqa: E402
from metahead.fileio import atomic_write_text  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent


def scripts(quick: bool, device: str, bf16_native: bool) -> list[tuple[str, str, list[str], float]]:
    """(name in the results, script file, arguments, time cap in seconds), in run order."""
    cuda = device.startswith("cuda")
    precisions = ["--precisions", "fp32", "bf16"] if (bf16_native or cuda) else ["--precisions", "fp32"]
    if quick:
        return [
            ("networks", "bench_networks.py", ["--quick", "--device", device], 420),
            (
                "render",
                "bench_render.py",
                [
                    "--presets",
                    "cpu-64",
                    "cpu-128",
                    "--min-seconds",
                    "1",
                    "--max-iterations",
                    "3",
                    *precisions,
                ],
                120,
            ),  # fmt: skip
            ("finetune", "bench_finetune.py", ["--quick"], 90),
            ("prepare", "bench_prepare.py", ["--frames", "30", "--repeats", "1"], 60),
            ("synth", "bench_synth.py", ["--frames", "100", "--sizes", "128"], 60),
            ("face_identity", "bench_face_identity.py", ["--repeats", "1", "--device", device], 60),
            ("identity_prior", "bench_identity_prior.py", ["--repeats", "2"], 60),
            ("w_lookup", "bench_w_lookup.py", ["--steps", "3"], 60),
            ("landmarks", "bench_landmarks.py", ["--repeats", "2", "--seconds", "0.2"], 45),
        ]
    return [
        ("networks", "bench_networks.py", ["--device", device], 660),
        ("render", "bench_render.py", ["--min-seconds", "2", "--max-iterations", "5", *precisions], 150),
        ("finetune", "bench_finetune.py", [], 90),
        ("prepare", "bench_prepare.py", [], 90),
        ("synth", "bench_synth.py", ["--frames", "300"], 90),
        ("face_identity", "bench_face_identity.py", ["--repeats", "1", "--device", device], 75),
        ("identity_prior", "bench_identity_prior.py", [], 60),
        ("w_lookup", "bench_w_lookup.py", ["--steps", "6"], 75),
        ("landmarks", "bench_landmarks.py", ["--repeats", "3"], 60),
    ]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """The networks benchmark of a results file as the markdown tables of docs/performance.md."""
    info = report["machine_info"]
    net = report["benchmarks"].get("networks", {}).get("result")
    lines = [
        f"Machine `{report['machine']}`: {info['cpu']}, {info['cores']} cores, {info['isa']}, "
        f"torch {info['torch']}; started {report['started']}, load average before "
        f"{info['load_average']}, after {report.get('load_average_after')}.",
        f"Environment: `{' '.join(f'{k}={v}' for k, v in report['environment'].items())}`.",
        f"Command: `{report['command']}`.",
        "",
    ]
    if not net:
        return "\n".join([*lines, "(no networks benchmark in this file)"])
    lines += ["| threads | dtype | matmul GFLOP/s | 3x3 conv (channels_last) GFLOP/s |", "|---|---|---|---|"]
    for threads, peak in net["peaks"].items():
        for dtype in ("fp32", "bf16"):
            if dtype in peak:
                matmul = peak[dtype]["matmul"]["flop_per_s"] / 1e9
                conv = peak[dtype]["conv3x3_channels_last"]["flop_per_s"] / 1e9
                lines.append(f"| {threads} | {dtype} | {matmul:.1f} | {conv:.1f} |")
    header = (
        "| CPU s/call | GFLOP/call (executed) | % of peak (executed) | % of peak (CPU time) | speed-up "
        "| speed-up (CPU time) | peak RSS MB |"
    )
    for what, unit in (("render", "ms/frame"), ("train", "s/step")):
        lines += ["", f"| preset | batch | variant | threads | {unit} {header}", "|---" * 12 + "|"]
        for r in net["results"]:
            if r.get("what") != what:
                continue
            head = f"| {r['preset']} | {r['batch']} | {r['variant']} | {r['threads']} |"
            if "timing" not in r:
                lines.append(f"{head} {r.get('skipped') or r.get('error')} |||||||")
                continue
            value = r["ms_per_frame"] if what == "render" else r["step_s"]
            flops = f"{_fmt((r.get('flops') or 0) / 1e9)} ({_fmt((r.get('flops_executed') or 0) / 1e9)})"
            pct = _fmt(100 * r["fraction_of_peak"], 2) if r.get("fraction_of_peak") else "–"
            pct_cpu = (
                _fmt(100 * r["cpu_time_fraction_of_peak"], 2) if r.get("cpu_time_fraction_of_peak") else "–"
            )
            lines.append(
                f"{head} {_fmt(value)} | {_fmt(r['timing']['cpu_median_s'])} | {flops} | {pct} | {pct_cpu} | "
                f"{_fmt(r.get('speedup_vs_fp32_eager_reference'))} | "
                f"{_fmt(r.get('cpu_time_speedup_vs_fp32_eager_reference'))} | "
                f"{_fmt(r.get('peak_memory_mb'), 4)} |"
            )
    goals = net.get("goals_paper_256", {})
    lines += ["", "| goal (paper-256) | target | measured | variant | met |", "|---|---|---|---|---|"]
    for key, target in goals.get("targets", {}).items():
        got = goals.get(key, {})
        lines.append(
            f"| {key} | {target} | {_fmt(got.get('value'))} | {got.get('variant', '–')} "
            f"| {got.get('met', '–')} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", metavar="RESULTS", help="print a results file's tables; run nothing")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget-s", type=float, default=870.0, help="whole run (scripts get what is left)")
    parser.add_argument("--only", nargs="+", help="run only these (names as in the results file)")
    parser.add_argument("--out", help="results file (default benchmarks/results/<machine>[-quick].json)")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0

    started = time.perf_counter()
    machine = common.machine_name(args.device)
    out_path = (
        Path(args.out) if args.out else common.RESULTS_DIR / f"{machine}{'-quick' if args.quick else ''}.json"
    )
    env = common.tuned_env()
    report: dict[str, Any] = {
        "machine": machine,
        "command": " ".join(["python", *sys.argv]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine_info": common.machine_info(args.device),
        "environment": {
            k: env[k]
            for k in ("LD_PRELOAD", "MALLOC_CONF", "OMP_WAIT_POLICY", *perf.GLIBC_TUNING)
            if k in env
        },  # fmt: skip
        "benchmarks": {},
        "not_run": {},
    }
    for name, script, script_args, cap in scripts(args.quick, args.device, perf.native_bf16(args.device)):
        if args.only and name not in args.only:
            continue
        path = BENCH_DIR / script
        left = args.budget_s - (time.perf_counter() - started)
        if not path.exists():
            report["not_run"][name] = f"{script} not present (yet)"
        elif left < 30:
            report["not_run"][name] = f"run budget of {args.budget_s:.0f} s spent"
        else:
            timeout = min(cap, left)
            argv = [sys.executable, str(path), *script_args]
            if name == "networks":
                argv += ["--budget-s", str(max(60.0, timeout - 120))]  # its in-flight case may overrun
                timeout = left
            print(f"# {name}: {' '.join(argv[1:])} (cap {timeout:.0f} s)", file=sys.stderr, flush=True)
            output, meta = common.run_json_subprocess(argv, timeout=timeout, env=env)
            if output is None:
                report["not_run"][name] = meta.get("note", "no JSON output")
            else:
                command = " ".join(["python", f"benchmarks/{script}", *script_args])
                report["benchmarks"][name] = {"command": command, **meta, "result": output}
        if name in report["not_run"]:
            print(f"# {name}: not run: {report['not_run'][name]}", file=sys.stderr, flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["load_average_after"] = common.load_average()
    atomic_write_text(out_path, json.dumps(report, indent=1) + "\n")
    print(f"wrote {out_path} ({report['seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
