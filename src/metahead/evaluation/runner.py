"""Run many independent evaluation jobs (one per test video, shot count, ...) in parallel and resumably.

Each finished job appends one JSON line ``{"key": ..., "status": "ok", "result": ...}`` to a results
file, written and fsynced by the parent process only (so lines never interleave). A rerun with the same
file skips every key already recorded as "ok" and retries failed ones; a line cut short by an
interruption is dropped. The first line records a `signature` (the settings that make results
comparable: model file, metrics, shot counts, ...); a rerun with other settings is refused instead of
mixing results.

Workers are processes ("spawn": safe with torch's threads); each builds its heavy state (models,
networks) once through `setup` and splits the machine's cores with the others. workers=1 runs in this
process, which is also what small jobs and tests want.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RESULTS_FORMAT = 1


@dataclass(frozen=True)
class Job:
    """One unit of work: `key` names it in the results file (unique, stable across runs); `payload` is
    what the job function gets (picklable)."""

    key: str
    payload: Any = None


@dataclass
class RunSummary:
    results: dict[str, Any] = field(default_factory=dict)  # key -> result, old and new, in job order
    computed: list[str] = field(default_factory=list)  # keys run this time
    skipped: list[str] = field(default_factory=list)  # keys found done in the results file
    failed: dict[str, str] = field(default_factory=dict)  # key -> error text, this run

    @property
    def complete(self) -> bool:
        return not self.failed


class ResultsFileError(ValueError):
    pass


def available_workers(max_workers: int | None = None) -> int:
    """Processes the machine allows: the CPU cores this process may use, capped by `max_workers`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, max_workers) if max_workers else cores)


def _jsonable(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null (and read null back as NaN where a float is expected)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def read_results(path: Path, signature: dict | None = None) -> dict[str, Any]:
    """Results recorded as "ok" in `path`, by key (later lines win). Drops an unfinished last line (and
    truncates it away so appends start on a fresh line). Raises ResultsFileError when the file was made
    with another signature or is not a results file."""
    if not path.exists():
        return {}
    raw = path.read_bytes()
    complete, _, tail = raw.rpartition(b"\n")
    if tail:  # an interrupted write: keep the complete lines only
        log.warning("%s: dropping an unfinished last line (%d bytes)", path, len(tail))
        with open(path, "r+b") as f:
            f.truncate(len(complete) + 1 if complete else 0)
        raw = complete + b"\n" if complete else b""
    lines = [line for line in raw.decode("utf-8").splitlines() if line.strip()]
    if not lines:
        return {}
    try:
        header = json.loads(lines[0])
        records = [json.loads(line) for line in lines[1:]]
    except json.JSONDecodeError as error:
        raise ResultsFileError(f"{path}: not a results file ({error})") from error
    if header.get("format") != RESULTS_FORMAT or "signature" not in header:
        raise ResultsFileError(f"{path}: not a results file of this runner (first line {lines[0][:80]!r})")
    if signature is not None and header["signature"] != _jsonable(signature):
        raise ResultsFileError(
            f"{path} holds results made with other settings ({header['signature']}); now asked for "
            f"{_jsonable(signature)}. Write to another file or delete this one to start over."
        )
    done: dict[str, Any] = {}
    for record in records:
        if record.get("status") == "ok":
            done[record["key"]] = record.get("result")
        else:
            done.pop(record.get("key"), None)
    return done


class _ResultsWriter:
    def __init__(self, path: Path, signature: dict | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if new:
            self._write({"format": RESULTS_FORMAT, "signature": _jsonable(signature or {})})

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def ok(self, key: str, result: Any) -> None:
        self._write({"key": key, "status": "ok", "result": _jsonable(result)})

    def error(self, key: str, message: str) -> None:
        self._write({"key": key, "status": "error", "error": message})

    def close(self) -> None:
        self._file.close()


# Per-process state of a worker, built once by the pool's initializer (a process pool's workers have
# no other place to keep a loaded model between jobs).
_worker_state: Any = None


def _init_worker(setup: Callable[[], Any] | None, threads: int) -> None:
    global _worker_state
    # Split the cores between the workers; torch reads the variable on import, or is told if already loaded.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    _worker_state = setup() if setup is not None else None


def _run_in_worker(fn: Callable[[Any, Any], Any], payload: Any) -> Any:
    return fn(_worker_state, payload)


def _error_text(error: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(error), error)).strip()


def run_jobs(
    fn: Callable[[Any, Any], Any],
    jobs: Iterable[Job],
    results_path: str | os.PathLike,
    *,
    setup: Callable[[], Any] | None = None,
    workers: int | None = 1,
    signature: dict | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> RunSummary:
    """Run `fn(state, job.payload)` for every job not yet done in `results_path`; state = setup().

    fn, setup and payloads must be picklable (module-level functions) when workers > 1. Results must be
    JSON-serialisable (NaN/inf are stored as null). workers: a number, or None for as many as the
    machine allows (`available_workers`). A job that raises is recorded as failed (retried on the next
    run) and the others go on; KeyboardInterrupt stops the run with finished jobs kept.
    progress(key, done, total) is called after each job.
    """
    jobs = list(jobs)
    keys = [job.key for job in jobs]
    if len(set(keys)) != len(keys):
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"job keys must be unique; repeated: {duplicates[:5]}")
    path = Path(results_path)
    done = read_results(path, signature)
    summary = RunSummary()
    pending = [job for job in jobs if job.key not in done]
    summary.skipped = [job.key for job in jobs if job.key in done]
    workers = min(available_workers(workers), max(1, len(pending)))
    writer = _ResultsWriter(path, signature)
    new_results: dict[str, Any] = {}
    total, finished = len(jobs), len(summary.skipped)

    def record(key: str, result: Any = None, error: BaseException | None = None) -> None:
        nonlocal finished
        finished += 1
        if error is None:
            writer.ok(key, result)
            new_results[key] = result
            summary.computed.append(key)
        else:
            message = _error_text(error)
            log.error("job %s failed: %s", key, message)
            writer.error(key, message)
            summary.failed[key] = message
        if progress is not None:
            progress(key, finished, total)

    try:
        if pending and workers <= 1:
            state = setup() if setup is not None else None
            for job in pending:
                try:
                    result = fn(state, job.payload)
                except Exception as error:  # recorded; the next run retries it
                    record(job.key, error=error)
                else:
                    record(job.key, result)
        elif pending:
            _run_pool(fn, pending, setup, workers, record)
    finally:
        writer.close()
    # Results as JSON would give them back, so a fresh and a resumed run return the same thing.
    fresh = json.loads(json.dumps(_jsonable(new_results)))
    summary.results = {
        key: fresh[key] if key in fresh else done[key] for key in keys if key in fresh or key in done
    }
    return summary


def _run_pool(
    fn: Callable[[Any, Any], Any],
    pending: list[Job],
    setup: Callable[[], Any] | None,
    workers: int,
    record: Callable[..., None],
) -> None:
    threads = max(1, available_workers() // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(setup, threads)
    ) as pool:
        futures: dict[Future, str] = {}
        queue: Iterator[Job] = iter(pending)

        def submit_next() -> None:
            job = next(queue, None)
            if job is None:
                return
            try:
                futures[pool.submit(_run_in_worker, fn, job.payload)] = job.key
            except (
                BrokenExecutor
            ) as error:  # a worker died (killed, out of memory): the rest wait for a rerun
                for left in [job, *queue]:
                    record(left.key, error=error)

        # Keep only a few jobs queued per worker, so an interrupt loses little and payloads stay small.
        for _ in range(2 * workers):
            submit_next()
        try:
            while futures:
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    key = futures.pop(future)
                    error = future.exception()
                    record(key, None if error else future.result(), error)
                    submit_next()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
