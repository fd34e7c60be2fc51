"""Running the demo: every stage in order into OUT, each reused when its record matches (records.py), and
the entry point of `metahead demo`."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metahead.demo.page import write_page
from metahead.demo.records import EVALUATION, FEED_FORWARD_EVALUATION, STAGES, WORK, StageRunner
from metahead.demo.settings import DemoResult, DemoSettings, experiment_config
from metahead.demo.stages import animate_avatars, make_avatars, make_corpus, meta_train, run_evaluation
from metahead.demo.threads import choose_threads


def run_demo(
    out: str | os.PathLike, settings: DemoSettings | None = None, log: Callable[[str], None] | None = None
) -> DemoResult:
    """Run (or reuse) every stage into `out`; returns where the page is and what ran. torch's thread count
    is set for the run and restored afterwards."""
    import torch

    settings = settings or DemoSettings.full()
    log = log or (lambda text: print(text, flush=True))
    threads = choose_threads(settings.threads)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run_stages(Path(out).resolve(), settings, log, threads)
    finally:
        torch.set_num_threads(previous_threads)


def _run_stages(out: Path, settings: DemoSettings, log: Callable[[str], None], threads: int) -> DemoResult:
    work = out / WORK
    work.mkdir(parents=True, exist_ok=True)
    cfg = experiment_config(settings)
    started = time.monotonic()
    log(
        f"metahead demo -> {out}: preset {settings.preset} ({cfg.model.image_size}px), "
        f"{threads} torch thread(s), meta-training for {settings.train_minutes:g} min or "
        f"{settings.train_steps} steps, whichever comes first"
    )
    stages = StageRunner(work, log)
    corpus, drivers = work / "corpus", work / "drivers"
    run_dir = work / "run"
    model_path = run_dir / "model.pt"

    # --- 1 corpus -------------------------------------------------------------------------------------------
    corpus_record = stages.run(
        "corpus",
        "synthetic corpus and driving clips",
        settings.stage_settings("corpus"),
        [],
        lambda d: [corpus / "manifest.csv", *(drivers / "videos" / p for p in d.get("drivers", {}).values())],
        lambda previous: make_corpus(corpus, drivers, settings, cfg.model.image_size, threads),
    )
    people = corpus_record["details"]

    # --- 2 train --------------------------------------------------------------------------------------------
    stages.run(
        "train",
        f"meta-training ({settings.train_minutes:g} min or {settings.train_steps} steps)",
        settings.stage_settings("train"),
        ["corpus"],
        lambda d: [model_path],
        lambda previous: meta_train(run_dir, corpus, cfg, stages.digests["corpus"], log, settings.progress),
    )

    # --- 3 avatar -------------------------------------------------------------------------------------------
    avatar_ft, avatar_ff = work / "person.ft.avatar", work / "person.ff.avatar"
    stages.run(
        "avatar",
        f"avatar of an unseen person from T={settings.shots} frames (fine-tuned and feed-forward)",
        settings.stage_settings("avatar"),
        ["train"],
        lambda d: [avatar_ft, avatar_ff],
        lambda previous: make_avatars(
            model_path,
            corpus / "videos" / people["avatar_video"],
            settings,
            settings.finetune_steps,
            avatar_ft,
            avatar_ff,
        ),
    )

    # --- 4 animate ------------------------------------------------------------------------------------------
    animate_record = stages.run(
        "animate",
        "animations: the person's own held-out motion, and another person's (retargeted)",
        settings.stage_settings("animate"),
        ["avatar", "corpus"],
        lambda d: [out / p for v in d.get("videos", {}).values() for p in (v["mp4"], v["gif"])],
        lambda previous: animate_avatars(out, avatar_ft, avatar_ff, drivers, people, settings),
    )

    # --- 5 evaluate -----------------------------------------------------------------------------------------
    evaluation, feed_forward_evaluation = work / EVALUATION, work / FEED_FORWARD_EVALUATION
    eval_settings = settings.stage_settings("evaluate")
    feed_forward_videos = settings.eval_feed_forward_videos
    more_videos = {None: "", 0: "; FF and nearest shot on every test video"}.get(
        feed_forward_videos, f"; FF and nearest shot on {feed_forward_videos} test videos"
    )
    evaluate_record = stages.run(
        "evaluate",
        f"evaluation on {settings.eval_videos} test videos (T={', '.join(map(str, settings.eval_shots))}): "
        f"FT, FF, nearest shot, from scratch{more_videos}",
        eval_settings,
        ["train", "corpus"],
        lambda d: (
            [evaluation / "report.json"]
            + ([feed_forward_evaluation / "report.json"] if d.get("feed_forward_videos") else [])
        ),
        lambda previous: run_evaluation(
            evaluation,
            feed_forward_evaluation,
            model_path,
            corpus,
            settings,
            threads,
            eval_settings,
            stages.digests["train"],
        ),  # fmt: skip
    )

    # --- 6 page ---------------------------------------------------------------------------------------------
    page = out / "index.html"
    page_record = stages.run(
        "page",
        "the page",
        {},
        list(STAGES[:-1]),
        lambda d: [page],
        lambda previous: write_page(
            out, stages, settings, cfg, threads, people, animate_record, evaluate_record, started
        ),
        always=True,
    )
    total = time.monotonic() - started
    log(
        f"done in {total / 60:.1f} min (ran: {', '.join(stages.ran) or 'nothing'}; "
        f"reused: {', '.join(stages.reused) or 'nothing'})"
    )
    log(f"open the page: {page}  ({page.as_uri()})")
    files = {k: out / v for k, v in page_record["details"].get("files", {}).items()}
    return DemoResult(out, page, stages.reused, stages.ran, stages.seconds, files)


def main_for_cli(out: str, quick: bool, changes: dict[str, Any]) -> int:
    """What `metahead demo` runs (cli.py parses the arguments)."""
    settings = DemoSettings.quick(**changes) if quick else DemoSettings.full(**changes)
    try:
        run_demo(out, settings)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue where it stopped", file=sys.stderr)
        return 130
    return 0
