"""A prepare run: this shard's sources, skipping what is done, in one process or a pool of workers, then
the manifest and summary; and merging the outputs of sharded runs."""

from __future__ import annotations

import concurrent.futures as futures
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from metahead.data.format import INFO, DataError, DatasetInfo, read_info, video_dir, write_info
from metahead.data.prepare.config import PrepareConfig, default_detector_factory
from metahead.data.prepare.process import ItemResult, process_item, rejected
from metahead.data.prepare.records import (
    OPTIONS_FILE,
    PROGRESS_DIR,
    SUMMARY_FILE,
    ProgressLog,
    check_options,
    progress_path,
    read_progress,
    summarise,
    write_outputs,
)
from metahead.data.sources import SourceItem, shard_items
from metahead.fileio import atomic_write_text
from metahead.landmarks.detect import LandmarkDetector

# Worker processes. Each holds its own detector (dlib objects do not cross processes); this module-level
# slot is set once per worker by the pool's initializer and is never used in the main process.

_worker_state: dict[str, Any] = {}


def _init_worker(cfg: PrepareConfig, out: str, detector_factory: Callable[[], LandmarkDetector]) -> None:
    _worker_state.update(cfg=cfg, out=out, detector=detector_factory())


def _work(item: SourceItem) -> ItemResult:
    return process_item(item, _worker_state["cfg"], _worker_state["out"], _worker_state["detector"])


def prepare_dataset(
    items: Sequence[SourceItem],
    out: str | os.PathLike,
    cfg: PrepareConfig,
    *,
    workers: int = 1,
    shard: tuple[int, int] = (0, 1),
    retry_rejects: bool = False,
    detector_factory: Callable[[], LandmarkDetector] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Prepare this shard's share of `items` (splits already assigned) into `out`; returns the summary.

    Sources already recorded as done under out/progress are skipped (rejected ones too, unless
    retry_rejects). With one shard the run ends by writing the manifest, rejects.csv and the summary.
    """
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_options(out, cfg)
    write_info(out, DatasetInfo(image_size=cfg.size, frame_codec=cfg.codec, source="metahead prepare"))
    factory = detector_factory or default_detector_factory(cfg)
    mine = shard_items(items, *shard)
    done = read_progress(out)
    todo = [
        it
        for it in mine
        if not (
            it.path in done
            and (
                done[it.path].status == "ok"
                and video_dir(out, it.path).is_dir()
                or done[it.path].status != "ok"
                and not retry_rejects
            )
        )
    ]
    log = ProgressLog(progress_path(out, shard))
    results: list[ItemResult] = []
    frames = 0
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="video", disable=not progress, dynamic_ncols=True, smoothing=0.1)

    def record(result: ItemResult) -> None:
        nonlocal frames
        log.append(result)
        results.append(result)
        frames += result.frames_read
        elapsed = max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(
            {"frames/s": f"{frames / elapsed:.1f}", "rejected": sum(r.status != "ok" for r in results)}
        )
        bar.update(1)

    try:
        if workers <= 1:
            detector = factory()
            for item in todo:
                record(process_item(item, cfg, out, detector))
        else:
            _run_pool(todo, cfg, out, factory, workers, record)
    finally:
        bar.close()
        log.close()
    seconds = time.perf_counter() - start
    summary = summarise(results, seconds)
    summary["skipped_as_done"] = len(mine) - len(todo)
    summary["shard"] = f"{shard[0]}/{shard[1]}"
    if shard[1] == 1:
        all_results = list(read_progress(out).values())
        write_outputs(out, all_results)
        summary["dataset"] = summarise(all_results)
        atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    else:
        atomic_write_text(
            progress_path(out, shard).with_suffix(".summary.json"), json.dumps(summary, indent=2) + "\n"
        )
    return summary


def _run_pool(
    todo: Sequence[SourceItem],
    cfg: PrepareConfig,
    out: Path,
    factory: Callable[[], LandmarkDetector],
    workers: int,
    record: Callable[[ItemResult], None],
) -> None:
    """Keep `workers` processes busy with a bounded queue (a million sources must not mean a million
    futures); a crashed worker costs only the sources in flight, recorded as "worker_crashed"."""
    worker_cfg = PrepareConfig(**{**asdict(cfg), "decode_threads": 1})
    context = multiprocessing.get_context("spawn")  # no fork of a parent that may hold threads
    pending = list(reversed(todo))
    while pending:
        pool = futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(worker_cfg, str(out), factory)
        )
        in_flight: dict[futures.Future, SourceItem] = {}
        try:
            while pending or in_flight:
                while (
                    pending and len(in_flight) < workers + 1
                ):  # one queued: busy, yet little lost in a crash
                    item = pending.pop()
                    in_flight[pool.submit(_work, item)] = item
                finished, _ = futures.wait(in_flight, return_when=futures.FIRST_COMPLETED)
                for fut in finished:
                    result = fut.result()  # raises BrokenProcessPool with the item still in flight
                    del in_flight[fut]
                    record(result)
        except futures.process.BrokenProcessPool as err:
            for item in in_flight.values():
                record(rejected(item, "worker_crashed", f"a worker process died: {err}"))
            pool.shutdown(wait=False, cancel_futures=True)
            continue
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()


def merge_shards(out: str | os.PathLike, sources: Sequence[str | os.PathLike] = ()) -> dict[str, Any]:
    """Write manifest.csv, rejects.csv and the summary of a sharded run.

    Shards that wrote into `out` itself need nothing more; shards that wrote into their own folders
    (`sources`) have their videos moved into out/videos and their progress files copied into
    out/progress first. All folders must have been prepared with the same options.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for src in map(Path, sources):
        if src.resolve() == out.resolve():
            continue
        if not (src / PROGRESS_DIR).is_dir():
            raise DataError(f"{src}: no {PROGRESS_DIR}/ folder; is it a `metahead prepare --shard` output?")
        src_options = json.loads((src / OPTIONS_FILE).read_text()) if (src / OPTIONS_FILE).exists() else None
        if (out / OPTIONS_FILE).exists():
            if src_options != json.loads((out / OPTIONS_FILE).read_text()):
                raise DataError(f"{src} was prepared with other options than {out} ({OPTIONS_FILE} differs)")
        elif src_options is not None:
            atomic_write_text(out / OPTIONS_FILE, json.dumps(src_options, indent=2) + "\n")
            shutil.copyfile(src / INFO, out / INFO)
        for ok in (r for r in read_progress(src).values() if r.status == "ok"):
            source_dir, target_dir = video_dir(src, ok.path), video_dir(out, ok.path)
            if source_dir.is_dir():
                target_dir.parent.mkdir(parents=True, exist_ok=True)
                if target_dir.exists():
                    shutil.rmtree(target_dir)
                shutil.move(str(source_dir), str(target_dir))
        for file in sorted((src / PROGRESS_DIR).glob("*.jsonl")):
            tag = hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:10]
            target = out / PROGRESS_DIR / f"{file.stem}.from-{tag}.jsonl"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
    read_info(out)  # a clear error if there is no dataset here at all
    results = list(read_progress(out).values())
    if not results:
        raise DataError(f"{out}/{PROGRESS_DIR}: no progress records to merge")
    write_outputs(out, results)
    summary = {"dataset": summarise(results)}
    atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary["dataset"]
