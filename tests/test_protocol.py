"""The evaluation protocol end to end on a tiny dataset and model: frame plans, baselines, the
`metahead evaluate` command, its report, and resuming."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metahead.cli import main
from metahead.config import preset
from metahead.data.format import Dataset, DatasetInfo, VideoRecord, write_info, write_manifest, write_video
from metahead.evaluation import protocol
from metahead.evaluation.baselines import nearest_shot, nearest_shot_indices
from metahead.landmarks.mean_face import random_faces

SIZE = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """2 people x 2 videos x 6 frames (person "still": every frame the same image and landmarks), a person
    with one 2-frame video, and a randomly initialised tiny model."""
    from metahead.models.discriminator import Discriminator
    from metahead.models.embedder import Embedder
    from metahead.models.generator import Generator
    from metahead.training.checkpoint import save_model

    root = tmp_path_factory.mktemp("tiny-eval")
    data = root / "data"
    records = []
    rng = np.random.default_rng(0)
    for person in ("anna", "still"):
        for take in ("take0", "take1"):
            landmarks = random_faces(6, SIZE, seed=len(records))
            frames = [(rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8) for _ in range(6)]
            if person == "still":
                frames, landmarks = [frames[0]] * 6, np.repeat(landmarks[:1], 6, axis=0)
            rel = f"{person}/{take}"
            write_video(data, rel, frames, landmarks, codec="png")
            records.append(VideoRecord(person, take, "test", 6, rel))
    records.append(VideoRecord("short", "take0", "test", 2, "short/take0"))
    write_video(data, "short/take0", [frames[0]] * 2, random_faces(2, SIZE), codec="png")
    write_manifest(data, records)
    write_info(data, DatasetInfo(image_size=SIZE, frame_codec="png"))
    cfg = preset("tiny")
    cfg.loss.identity_network = "none"
    torch.manual_seed(0)
    model = root / "model.pt"
    save_model(model, cfg, Embedder(cfg.model), Generator(cfg.model), Discriminator(cfg.model, 4), 4)
    return {"data": data, "model": model, "root": root}


def config(tiny, out: Path, **changes) -> protocol.ProtocolConfig:
    settings = dict(
        model=str(tiny["model"]), data=str(tiny["data"]), out=str(out), shots=(1, 3), eval_frames=2
    )
    settings.update(changes)
    return protocol.ProtocolConfig(**settings)


def test_same_video_plan_holds_out_frames_and_nests_shots(tiny, tmp_path):
    cfg = config(tiny, tmp_path, shots=(1, 3, 5))
    plans, notes = protocol.plan_evaluation(Dataset(tiny["data"]), cfg)
    assert [p.name for p in plans] == [f"{p}/{t}" for p in ("anna", "still") for t in ("take0", "take1")]
    assert any("short/take0" in n and "skipped" in n for n in notes)  # 2 frames: nothing left for shots
    for plan in plans:
        held_out = {i for path, i in plan.targets}
        assert len(held_out) == 2 and all(path == plan.path for path, _ in plan.targets)
        assert held_out.isdisjoint(plan.shot_pool) and len(plan.shot_pool) == 4
        assert plan.shots(1) == plan.shots(3)[:1]  # T=1 ⊂ T=3
    assert sum("no T=5" in n for n in notes) == len(plans)
    jobs = protocol.build_jobs(cfg, plans)
    assert len(jobs) == len(plans) * 2 * len(protocol.METHODS)  # T=5 left out everywhere
    again, _ = protocol.plan_evaluation(Dataset(tiny["data"]), cfg)
    assert again == plans  # deterministic


def test_other_videos_plan_and_cross_identity_pairs(tiny, tmp_path):
    cfg = config(tiny, tmp_path, eval_source="other-videos", eval_frames=4, max_videos=4)
    plans, notes = protocol.plan_evaluation(Dataset(tiny["data"]), cfg)
    assert len(plans) == 4 and any("short/take0" in n and "no other video" in n for n in notes)
    for plan in plans:
        assert len(plan.targets) == 4 and len(plan.shot_pool) == 6
        assert all(path.startswith(plan.identity + "/") and path != plan.path for path, _ in plan.targets)
    pairs = protocol.cross_identity_pairs(plans, 3)
    assert len(pairs) == 3 and all(a.identity != d.identity for a, d in pairs)
    assert len(protocol.cross_identity_pairs(plans, 10)) == 4  # one per video at most


def test_split_video_and_auto_plans(tiny, tmp_path):
    cfg = config(tiny, tmp_path, eval_source="split-video", eval_frames=2, max_videos=None)
    plans, _ = protocol.plan_evaluation(Dataset(tiny["data"]), cfg)
    assert len(plans) == 5  # every video, the 2-frame one included
    for plan in plans:
        half = 1 if plan.identity == "short" else 3  # 2 and 6 frames
        assert sorted(plan.shot_pool) == list(range(half))
        assert all(path == plan.path and i >= half for path, i in plan.targets)
    auto = config(tiny, tmp_path, eval_source="auto", eval_frames=4, max_videos=None)
    plans, notes = protocol.plan_evaluation(Dataset(tiny["data"]), auto)
    by_name = {p.name: p for p in plans}
    assert by_name["short/take0"].shot_pool == (0,) and by_name["short/take0"].targets == (
        ("short/take0", 1),
    )
    assert any("short/take0" in n and "held-out" in n for n in notes)
    assert all(path != p.path for p in plans if p.identity != "short" for path, _ in p.targets)
    capped = config(
        tiny, tmp_path, eval_source="auto", eval_frames=4, max_videos=None, max_videos_per_identity=1
    )
    plans, notes = protocol.plan_evaluation(Dataset(tiny["data"]), capped)
    assert sorted(p.identity for p in plans) == ["anna", "short", "still"]
    assert any("1 of its 2 videos" in n for n in notes)


def test_nearest_shot_baseline_picks_the_closest_landmarks():
    shots = torch.from_numpy(random_faces(3, SIZE, seed=1))
    targets = shots[[2, 0, 2, 1]] + 0.3
    assert nearest_shot_indices(shots, targets).tolist() == [2, 0, 2, 1]
    images = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 3, 4, 4)
    assert nearest_shot(images, shots, targets)[:, 0, 0, 0].tolist() == [2.0, 0.0, 2.0, 1.0]


def test_bad_settings_fail_before_any_work(tiny, tmp_path):
    with pytest.raises(ValueError, match="unknown metric.*valid metrics"):
        config(tiny, tmp_path, metrics=("ssim", "fidd"))
    with pytest.raises(ValueError, match="unknown method"):
        config(tiny, tmp_path, methods=("ft", "pix2pix"))
    assert (
        main(
            [
                "evaluate",
                str(tiny["model"]),
                "--data",
                str(tiny["data"]),
                "--out",
                str(tmp_path / "r"),
                "--metrics",
                "fid",
                "--workers",
                "1",
            ]
        )
        == 2
    )


def test_finetune_overrides_reach_the_ft_avatars_and_the_signature(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"--set takes finetune\.FIELD=VALUE or loss\.FIELD=VALUE"):
        config(tiny, tmp_path / "bad", finetune_overrides=("model.base_channels=4",))
    # Rates of 0: fine-tuning moves nothing, so the FT avatar renders exactly what the FF one does.
    frozen = ("finetune.lr_generator=0", "finetune.lr_discriminator=0", "loss.pixel_weight=2")
    cfg = config(tiny, tmp_path / "r", shots=(1,), methods=("ft", "ff"), metrics=("ssim", "l1"),
                 finetune_steps=2, finetune_overrides=frozen)  # fmt: skip
    state = protocol.build_worker_state(cfg, ["ssim"])
    assert state.model[3].finetune.lr_generator == 0 and state.model[3].loss.pixel_weight == 2
    plain = protocol.build_worker_state(config(tiny, tmp_path / "r2"), ["ssim"])
    assert plain.model[3].loss.pixel_weight == 1
    assert cfg.signature()["finetune_overrides"] == list(frozen)
    assert "finetune_overrides" not in config(tiny, tmp_path / "r2").signature()  # old results still match
    rows = {r["method"]: r for r in protocol.evaluate(cfg).report["self_reenactment"]}
    assert rows["ft"]["metrics"]["l1"]["value"] == pytest.approx(rows["ff"]["metrics"]["l1"]["value"])


def test_evaluate_command_writes_the_report_and_resumes(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("METAHEAD_INCEPTION_WEIGHTS", raising=False)
    out = tmp_path / "report"
    args = [
        "evaluate",
        str(tiny["model"]),
        "--data",
        str(tiny["data"]),
        "--out",
        str(out),
        "--shots",
        "1",
        "3",
        "--eval-frames",
        "2",
        "--methods",
        "ff",
        "nearest_shot",
        "--metrics",
        "ssim",
        "psnr",
        "l1",
        "--device",
        "cpu",
        "--grid-videos",
        "2",
    ]
    assert main(args) == 0
    assert "16 jobs run, 0 reused, 0 failed" in capsys.readouterr().out  # 4 videos x 2 T x 2 methods
    report = json.loads((out / "report.json").read_text())
    rows = {(r["method"], r["shots"]): r for r in report["self_reenactment"]}
    assert set(rows) == {(m, t) for m in ("ff", "nearest_shot") for t in (1, 3)}
    assert all(r["videos"] == 4 and r["frames"] == 8 for r in rows.values())
    # Person "still" shows one image: the nearest shot is exactly the held-out frame.
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()[1:]]
    still = [
        r["result"] for r in results if r["key"].startswith("still/") and r["key"].endswith("nearest_shot")
    ]
    assert len(still) == 4 and all(v == pytest.approx(1.0) for r in still for v in r["per_frame"]["ssim"])
    assert all(v == pytest.approx(100.0) for r in still for v in r["per_frame"]["psnr"])
    for r in rows.values():
        assert -1 <= r["metrics"]["ssim"]["value"] <= 1 and r["metrics"]["l1"]["value"] > 0
    markdown = (out / "report.md").read_text()
    assert "| Method (T) | SSIM↑ | PSNR↑ (dB) | L1↓ | shots' SSIM↑ | videos |" in markdown
    # the avatar re-renders its own T shots (an untrained FF model: far from them); the nearest shot has none
    assert -1 <= rows[("ff", 3)]["shot_ssim"]["value"] < 1 and "shot_ssim" not in rows[("nearest_shot", 3)]
    assert "| FF (3) |" in markdown and "| nearest shot (1) |" in markdown and "grid_T3.png" in markdown
    assert "<table>" in (out / "report.html").read_text()
    csv_lines = (out / "report.csv").read_text().splitlines()
    # 4 (method, T) rows x 3 metrics, and the shots' SSIM of the 2 FF rows
    assert csv_lines[0].startswith("section,method,shots") and len(csv_lines) == 1 + 4 * 3 + 2
    assert sum(",shot_ssim," in line for line in csv_lines) == 2
    from PIL import Image

    with Image.open(out / "grid_T3.png") as grid:  # 2 videos x 2 frames; 3 shots, real, 2 methods
        assert grid.size == (6 * 128, 16 + 4 * 128)

    # Rerun: nothing to do; a new T runs only its own jobs; other settings are refused.
    assert main(args) == 0
    assert "0 jobs run, 16 reused" in capsys.readouterr().out
    assert main([*args[:7], "1", "3", "4", *args[9:]]) == 0
    assert "8 jobs run, 16 reused" in capsys.readouterr().out
    assert main([*args, "--seed", "1"]) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.slow
def test_all_methods_cross_identity_and_identity_metrics_in_parallel(tiny, tmp_path):
    cfg = config(
        tiny,
        tmp_path / "full",
        shots=(1, 2),
        max_videos=4,
        finetune_steps=1,
        cross_identity_pairs=2,
        workers=2,
        metrics=("ssim", "csim", "identity_fd", "landmark_error"),
    )
    run = protocol.evaluate(cfg)
    assert run.summary.complete and len(run.summary.computed) == 4 * 2 * 4 + 2 * 2
    report = run.report
    assert len(report["self_reenactment"]) == 8
    for row in report["self_reenactment"]:
        assert 0 <= row["metrics"]["identity_fd"]["value"] and row["metrics"]["identity_fd"]["frames"] == 8
        assert -1 <= row["metrics"]["csim"]["value"] <= 1
    cross = report["cross_identity"]
    assert {(r["method"], r["retarget"]) for r in cross} == {
        (m, f) for m in ("ft", "ff") for f in (False, True)
    }
    assert all(r["pairs"] == 2 for r in cross)
    assert "Cross-identity reenactment" in (tmp_path / "full" / "report.md").read_text()
