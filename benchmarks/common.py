"""Benchmark harness shared by the scripts in benchmarks/: machine name and description, timing (warm-up, then
the median of repeats, wall-clock and CPU time), FLOPs (torch.utils.flop_counter), peak memory, the
machine's measured peak FLOP/s (a large matmul and a channels_last 3x3 conv, fp32 and bf16), and cases run
in fresh subprocesses (so that each case's peak RSS is its own).

Ratios measured in one run are what compare across the shared, noisy machines this project runs on: every
figure is reported with the peak of the same run and with the plain fp32 eager figure of the same network
from the same run. With one thread, CPU time (time.process_time) counts only the time the process ran, so
it is far less sensitive than wall-clock time to other load on the machine; both are recorded.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from metahead import perf

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"


# --- the machine --------------------------------------------------------------------------------------------


def _isa() -> str:
    flags = perf._cpu_flags()
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512bf16"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return platform.machine() or "cpu"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_name(device: str = "cpu") -> str:
    """A hostname-independent name for the results file: cpu-<cores>core-<best vector ISA>, e.g.
    cpu-2core-avx2, cpu-2core-amx; cuda-<gpu>-x<count> when benchmarking a GPU."""
    if device.startswith("cuda") and torch.cuda.is_available():
        gpu = re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")
        gpu = gpu.removeprefix("nvidia-")
        return f"cuda-{gpu}-x{torch.cuda.device_count()}"
    return f"cpu-{perf.available_cores()}core-{_isa()}"


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


def machine_info(device: str = "cpu") -> dict[str, Any]:
    info: dict[str, Any] = {
        "machine": machine_name(device),
        "cpu": cpu_model(),
        "cores": perf.available_cores(),
        "isa": _isa(),
        "native_bf16_cpu": perf.cpu_has_native_bf16(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "allocator": perf.allocator_in_use(),
        "load_average": load_average(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


# --- timing, FLOPs and memory -------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_call(
    fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5, device: str = "cpu"
) -> dict[str, Any]:
    """Call fn `warmup` times untimed, then `repeats` times; median and min of wall-clock and CPU time."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return {
        "median_s": statistics.median(wall),
        "min_s": min(wall),
        "cpu_median_s": statistics.median(cpu),
        "repeats": repeats,
        "wall_s": [round(t, 4) for t in wall],
    }


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """(FLOPs counted by torch.utils.flop_counter for one call of fn, fn's result). Forward and, when fn calls
    backward, backward; convs, matmuls and attention (elementwise ops are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        result = fn()
    return counter.get_total_flops(), result


def reset_peak_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb(device: str) -> float:
    """GPU: torch.cuda.max_memory_allocated. CPU: this process's peak resident set (ru_maxrss), which is why
    every case runs in its own subprocess (tracemalloc does not see torch's allocations)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


# --- the machine's peak -------------------------------------------------------------------------------------

PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _best_rate(run: Callable[[int], float], sizes: list[int], flops_of: Callable[[int], float]) -> dict:
    """Grow the problem until one call takes >= 0.1 s (or the largest size), then the best of 3 calls."""
    size = sizes[0]
    for size in sizes:
        if run(size) >= 0.1:
            break
    seconds = min(run(size) for _ in range(3))
    return {"flop_per_s": flops_of(size) / seconds, "size": size, "seconds": round(seconds, 4)}


def machine_peak(device: str = "cpu", dtypes: tuple[str, ...] = ("fp32", "bf16")) -> dict[str, Any]:
    """Measured peak FLOP/s of a square matmul and of a 3x3 conv (256 → 256 channels at 32², channels_last;
    the batch grows with the machine's speed), per dtype, with the threads set now."""
    out: dict[str, Any] = {"threads": torch.get_num_threads()}
    for name in dtypes:
        dtype = PEAK_DTYPES[name]

        def matmul(n: int, dtype=dtype) -> float:
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            a @ b
            synchronize(device)
            start = time.perf_counter()
            a @ b
            synchronize(device)
            return time.perf_counter() - start

        def conv(batch: int, dtype=dtype) -> float:
            x = torch.randn(batch, 256, 32, 32, device=device, dtype=dtype).contiguous(
                memory_format=torch.channels_last
            )
            w = torch.randn(256, 256, 3, 3, device=device, dtype=dtype).contiguous(
                memory_format=torch.channels_last
            )
            F.conv2d(x, w, padding=1)
            synchronize(device)
            start = time.perf_counter()
            F.conv2d(x, w, padding=1)
            synchronize(device)
            return time.perf_counter() - start

        big = [8192, 16384] if device.startswith("cuda") else []
        with torch.inference_mode():
            mm = _best_rate(matmul, [128, 256, 512, 1024, 2048, 4096, *big], lambda n: 2.0 * n**3)
            cv = _best_rate(
                conv,
                [1, 2, 4, 8, 16, 32, *([128, 512] if big else [])],
                lambda b: 2.0 * b * 256 * 256 * 9 * 32 * 32,
            )
        out[name] = {"matmul": mm, "conv3x3_channels_last": cv, "peak_flop_per_s": max(
            mm["flop_per_s"], cv["flop_per_s"])}  # fmt: skip
    return out


def fraction_of_peak(flops: float, seconds: float, peak: dict[str, Any], dtype: str) -> float | None:
    """Achieved FLOP/s over the best of the matmul and conv peaks of the same dtype, same run."""
    if dtype not in peak or not seconds:
        return None
    return flops / seconds / peak[dtype]["peak_flop_per_s"]


# --- subprocesses -------------------------------------------------------------------------------------------


def run_json_subprocess(
    argv: list[str], *, timeout: float, env: dict[str, str] | None = None
) -> tuple[Any | None, dict[str, Any]]:
    """Run a script that prints JSON (its whole stdout, or the lines of it that parse); returns (parsed JSON
    or None, {"seconds", "returncode", "note"}). Scripts report their own peak memory (`peak_memory_mb`)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        note = ""
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        note = f"timed out after {timeout:.0f} s"
    meta = {"seconds": round(time.perf_counter() - start, 1), "returncode": proc.returncode}
    if proc.returncode and not note:
        note = f"exit code {proc.returncode}: " + " | ".join(stderr.strip().splitlines()[-3:])
    if note:
        meta["note"] = note
    return parse_json_output(stdout), meta


def parse_json_output(stdout: str) -> Any | None:
    """The whole stdout as JSON, else the last line that parses, else None."""
    text = stdout.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    lines = [json.loads(line) for line in text.splitlines() if _is_json(line)]
    if not lines:
        return None
    return lines[0] if len(lines) == 1 else lines


def _is_json(line: str) -> bool:
    line = line.strip()
    if not line.startswith(("{", "[")):
        return False
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def tuned_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment plus the tuned allocator and OpenMP settings (metahead.perf) and `extra`."""
    return {**os.environ, **perf.tuned_allocator_env(), **perf.tuned_thread_env(), **(extra or {})}


def rounded(value: Any, digits: int = 4) -> Any:
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value
