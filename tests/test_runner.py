"""The evaluation job runner: results appended per job, skipped on rerun, failures retried, interrupted
runs resumed, process-pool workers with per-worker state."""

from __future__ import annotations

import json
import math
import os
import time

import pytest

from metahead.evaluation.runner import Job, ResultsFileError, read_results, run_jobs


def square(state, payload):
    if payload == "boom":
        raise RuntimeError("job asked to fail")
    return {"value": payload * payload, "nan": math.nan}


def worker_setup():
    return {"pid": os.getpid(), "built_at": time.time()}


def report_worker(state, payload):
    if payload == "boom":
        raise RuntimeError("job asked to fail")
    time.sleep(0.2)
    return {"payload": payload, "pid": os.getpid(), "state_pid": state["pid"], "built_at": state["built_at"]}


def jobs_for(values):
    return [Job(f"video-{v}", v) for v in values]


def test_results_are_appended_and_skipped_on_rerun(tmp_path):
    path = tmp_path / "results.jsonl"
    calls = []

    def counting(state, payload):
        calls.append(payload)
        return square(state, payload)

    first = run_jobs(counting, jobs_for([1, 2, 3]), path, signature={"model": "a"})
    assert first.computed == ["video-1", "video-2", "video-3"] and first.complete
    assert first.results["video-2"] == {"value": 4, "nan": None}  # NaN stored as JSON null
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["signature"] == {"model": "a"} and len(lines) == 4

    second = run_jobs(counting, jobs_for([1, 2, 3, 4]), path, signature={"model": "a"})
    assert calls == [1, 2, 3, 4]  # only the new job ran
    assert second.skipped == ["video-1", "video-2", "video-3"] and second.computed == ["video-4"]
    assert list(second.results) == ["video-1", "video-2", "video-3", "video-4"]
    assert second.results["video-1"] == first.results["video-1"]


def test_failures_are_recorded_and_retried(tmp_path):
    path = tmp_path / "results.jsonl"
    summary = run_jobs(square, [Job("a", 2), Job("b", "boom"), Job("c", 3)], path)
    assert summary.failed.keys() == {"b"} and "job asked to fail" in summary.failed["b"]
    assert set(summary.results) == {"a", "c"} and not summary.complete
    retried = run_jobs(square, [Job("a", 2), Job("b", 5), Job("c", 3)], path)
    assert retried.computed == ["b"] and retried.results["b"]["value"] == 25 and retried.complete


def test_interrupted_run_resumes(tmp_path):
    path = tmp_path / "results.jsonl"

    def stop_after_two(key, done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_jobs(square, jobs_for([1, 2, 3, 4]), path, progress=stop_after_two)
    assert set(read_results(path)) == {"video-1", "video-2"}
    # A write cut short leaves a partial line: it is dropped, and appends start on a fresh line.
    with open(path, "a") as f:
        f.write('{"key": "video-3", "status": "o')
    resumed = run_jobs(square, jobs_for([1, 2, 3, 4]), path)
    assert resumed.computed == ["video-3", "video-4"]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_other_settings_or_foreign_file_are_refused(tmp_path):
    path = tmp_path / "results.jsonl"
    run_jobs(square, jobs_for([1]), path, signature={"model": "a", "shots": [1, 8]})
    with pytest.raises(ResultsFileError, match="other settings"):
        run_jobs(square, jobs_for([1]), path, signature={"model": "b", "shots": [1, 8]})
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"hello": 1}\n')
    with pytest.raises(ResultsFileError, match="not a results file"):
        run_jobs(square, jobs_for([1]), foreign)
    with pytest.raises(ValueError, match="unique"):
        run_jobs(square, [Job("x", 1), Job("x", 2)], tmp_path / "other.jsonl")


def test_process_pool_matches_sequential_and_builds_state_once_per_worker(tmp_path):
    jobs = jobs_for(range(6)) + [Job("failing", "boom")]
    pooled = run_jobs(report_worker, jobs, tmp_path / "pooled.jsonl", setup=worker_setup, workers=2)
    assert set(pooled.failed) == {"failing"} and "job asked to fail" in pooled.failed["failing"]
    assert list(pooled.results) == [job.key for job in jobs[:6]]
    assert [r["payload"] for r in pooled.results.values()] == list(range(6))
    pids = {r["pid"] for r in pooled.results.values()}
    assert os.getpid() not in pids and len(pids) <= 2
    for r in pooled.results.values():
        assert r["state_pid"] == r["pid"]  # the state was built in the worker that used it
    built = {(r["pid"], r["built_at"]) for r in pooled.results.values()}
    assert len(built) == len(pids)  # one setup per worker, reused across its jobs


def die(state, payload):
    if payload == "die":
        os._exit(3)  # a worker killed mid-job (out of memory, a crash in native code)
    time.sleep(0.5)
    return payload


def test_a_dead_worker_fails_the_remaining_jobs_without_losing_finished_ones(tmp_path):
    path = tmp_path / "results.jsonl"
    summary = run_jobs(
        die, [Job("a", 1), Job("b", "die"), Job("c", 2), Job("d", 3), Job("e", 4)], path, workers=2
    )
    assert "b" in summary.failed and not summary.complete
    assert set(summary.results) | set(summary.failed) == {"a", "b", "c", "d", "e"}
    rerun = run_jobs(die, [Job("a", 1), Job("c", 2), Job("d", 3), Job("e", 4)], path, workers=2)
    assert rerun.complete and set(rerun.results) == {"a", "c", "d", "e"}
