"""A miniature of `metahead demo` end to end (tiny preset, a few steps), so the demo cannot silently break."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import av
import pytest
from PIL import Image

from metahead.demo import STAGES, DemoSettings, choose_threads, metrics_table_html, run_demo

MINIATURE = DemoSettings(
    preset="tiny",
    identities=4,
    videos_per_identity=2,
    frames=10,
    test_fraction=0.5,
    driver_frames=4,
    train_minutes=0.0,
    train_steps=2,
    shots=2,
    finetune_steps=2,
    eval_shots=(2,),
    eval_videos=1,
    eval_frames=2,
    overrides=("loss.identity_network=none",),
    eval_metrics=("ssim", "psnr", "l1"),
    threads=1,
    progress=False,
)


def _linked_files(page: Path) -> list[str]:
    return re.findall(r"(?:src|href)='([^']+)'", page.read_text())


def _mp4_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames / float(stream.average_rate)


def test_demo_end_to_end_and_rerun_reuses(tmp_path: Path):
    out = tmp_path / "demo"
    lines: list[str] = []
    result = run_demo(out, MINIATURE, log=lines.append)

    assert result.ran == list(STAGES) and result.reused == []
    assert result.page == out / "index.html" and result.page.is_file()
    links = _linked_files(result.page)
    assert links and all(not link.startswith(("http:", "https:", "//", "/")) for link in links)
    for link in links:
        assert (out / link).is_file(), f"index.html links {link}, which does not exist"
    for role in ("own-motion", "puppeteering"):
        mp4, gif = out / "videos" / f"{role}.mp4", out / "videos" / f"{role}.gif"
        assert f"videos/{role}.mp4" in links and f"videos/{role}.gif" in links
        assert _mp4_seconds(mp4) > 0
        with Image.open(gif) as image:
            assert image.n_frames == MINIATURE.driver_frames > 1
            # four panels side by side under a label strip
            assert image.width == 4 * (image.height - 16)
    for name in ("sample-grid", "training-curves", "training-samples", "avatar-shots", "finetune-curve"):
        assert f"images/{name}.png" in links
    with open(out / "metrics.csv", newline="") as f:
        methods = {row["method"] for row in csv.DictReader(f) if row["section"] == "self"}
    assert methods == {"ft", "ff", "nearest_shot", "from_scratch"}
    page = result.page.read_text()
    for label in ("FT (2)", "FF (2)", "nearest shot (2)", "from scratch (2)"):
        assert f"<td>{label}</td>" in page
    # FF and the nearest shot (no fine-tuning) are also scored on every test video, in a table of their own.
    with open(out / "work" / "corpus" / "manifest.csv", newline="") as f:
        test_videos = sum(row["split"] == "test" for row in csv.DictReader(f))
    assert test_videos > MINIATURE.eval_videos
    assert f"Without fine-tuning, on {test_videos} test videos" in page
    without = (out / "metrics-without-finetuning.md").read_text()
    assert "FF (2)" in without and "nearest shot (2)" in without and "FT (2)" not in without

    # A second run reuses every stage (the page is always rewritten) and leaves their files alone.
    model = out / "work" / "run" / "model.pt"
    made = {
        p: p.stat().st_mtime_ns
        for p in (model, out / "work" / "person.ft.avatar", out / "videos" / "own-motion.mp4")
    }
    lines.clear()
    again = run_demo(out, MINIATURE, log=lines.append)
    assert again.reused == list(STAGES[:-1]) and again.ran == ["page"]
    assert sum("reusing" in line for line in lines) == len(STAGES) - 1
    assert {p: p.stat().st_mtime_ns for p in made} == made

    # Changing an evaluation setting redoes only the evaluation (and the page).
    changed = run_demo(out, dataclasses.replace(MINIATURE, eval_frames=3), log=lines.append)
    assert changed.ran == ["evaluate", "page"]
    assert model.stat().st_mtime_ns == made[model]

    # A larger training budget continues the same run (not a fresh one) and redoes what follows it.
    lines.clear()
    longer = run_demo(out, dataclasses.replace(MINIATURE, train_steps=3), log=lines.append)
    assert longer.reused == ["corpus"] and longer.ran == list(STAGES[1:])
    assert any("continuing the training" in line and "state-00000002" in line for line in lines)
    assert json.loads((out / "work" / "train.done.json").read_text())["details"]["steps"] == 3


def test_metrics_table_marks_the_best_value_per_column():
    table = metrics_table_html(
        ["Method (T)", "SSIM↑", "L1↓", "videos"],
        [["FT (8)", "0.800 ± 0.010", "0.100", "3"], ["FF (8)", "0.700", "0.050 ± 0.001", "3"]],
    )
    assert "<td><b>0.800 ± 0.010</b></td>" in table and "<td><b>0.050 ± 0.001</b></td>" in table
    assert "<b>3</b>" not in table and "<td>0.700</td>" in table


def test_threads_follow_the_request_or_the_environment(monkeypatch: pytest.MonkeyPatch):
    assert choose_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert choose_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert choose_threads() >= 1
