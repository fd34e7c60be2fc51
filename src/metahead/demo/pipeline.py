"""`metahead demo`: the whole pipeline on a synthetic corpus, on two CPU cores, shown on one HTML page.

    from metahead.demo import DemoSettings, run_demo
    result = run_demo("demo-output", DemoSettings.full())      # or DemoSettings.quick()
    print(result.page)                                         # demo-output/index.html

Stages, each through the layers' Python APIs (the same calls the CLI commands make):

    1 corpus    synthetic talking heads (data.synthetic), split by identity; plus driving clips of two
                test people: their first videos continued with motion no stage has seen
                                                                    -> OUT/work/corpus, OUT/work/drivers
    2 train     meta-learning of E, G, P, D, bounded by time (training.meta)  -> OUT/work/run/model.pt
    3 avatar    an unseen (test) person from T = 8 frames of one video: fine-tuned (FT) and
                feed-forward (FF) (avatar.Avatar.create)                      -> OUT/work/person.*.avatar
    4 animate   the avatar driven by its own video's held-out continuation (landmarks as they are) and
                by another person (retargeted onto the avatar's face)         -> OUT/videos/*.mp4, *.gif
    5 evaluate  the paper's protocol on a few test videos: FT, FF and the nearest-shot and from-scratch
                baselines (evaluation.protocol)                                -> OUT/work/evaluation
    6 page      OUT/index.html: videos, sample grid, metrics table, training and fine-tuning curves

Every finished stage writes OUT/work/<stage>.done.json with its settings and the digests of the stages
it used. A rerun reuses a stage whose record matches (and whose outputs exist) and redoes it — and so
every stage after it — when its settings changed. An interrupted stage continues where the layer below
can (the corpus keeps finished videos, training resumes from its last checkpoint, the evaluation keeps
finished jobs). See README.md ("make demo").
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metahead.fileio import atomic_path, atomic_write_text

STAGES = ("corpus", "train", "avatar", "animate", "evaluate", "page")
WORK = "work"
DONE_SUFFIX = ".done.json"
FOLDER_MARKER = "demo-settings.json"  # inside a stage's folder: the settings it was made with
VIDEO_FPS = 25.0


@dataclass
class DemoSettings:
    """What the demo makes. `full()` is `make demo` (~10 min on two quiet cores), `quick()` a ~4-minute
    look; tests use far smaller values."""

    preset: str = "demo"  # config preset of the model (config.PRESETS)
    overrides: tuple[str, ...] = ()  # `section.field=value` on top of the preset
    # the synthetic corpus (its image size is the model's)
    identities: int = 40
    videos_per_identity: int = 2
    frames: int = 40  # per corpus video
    test_fraction: float = 0.15
    driver_frames: int = 100  # the driving clips (4 s at 25 fps)
    seed: int = 0
    # meta-training: stops at whichever comes first
    train_minutes: float = 5.0
    train_steps: int = 5000  # a cap for fast machines (two quiet CPU cores do ~1,000 in 5 minutes)
    # avatars (T) and fine-tuning steps (None: the preset's finetune.steps)
    shots: int = 8
    finetune_steps: int | None = None
    # evaluation
    eval_shots: tuple[int, ...] = (8,)
    eval_videos: int = 3
    eval_frames: int = 8  # held-out frames per video
    eval_metrics: tuple[str, ...] | None = None  # None: every metric available offline
    eval_cross_pairs: int = 0  # cross-identity pairs in the evaluation (retargeting on / off)
    eval_workers: int = 0  # processes; 0: one per thread the demo uses
    # machine
    threads: int = 0  # torch threads; 0: from the cores that are idle now (or $OMP_NUM_THREADS)
    video_scale: int = 0  # frames enlarged this many times in the videos; 0: to about 192 px
    progress: bool = True

    @classmethod
    def full(cls, **changes: Any) -> DemoSettings:
        return cls(**changes)

    @classmethod
    def quick(cls, **changes: Any) -> DemoSettings:
        quick = {
            "identities": 16,
            "frames": 32,
            "driver_frames": 50,
            "train_minutes": 1.5,
            "finetune_steps": 30,
            "eval_videos": 2,
        }
        return cls(**{**quick, **changes})

    def stage_settings(self, stage: str) -> dict[str, Any]:
        """The settings that decide a stage's result (a change redoes the stage)."""
        common = {"preset": self.preset, "overrides": list(self.overrides), "seed": self.seed}
        if stage == "corpus":
            keys = ("identities", "videos_per_identity", "frames", "test_fraction", "driver_frames")
        elif stage == "train":
            keys = ("train_minutes", "train_steps")
        elif stage == "avatar":
            keys = ("shots", "finetune_steps")
        elif stage == "animate":
            keys = ("video_scale",)
        elif stage == "evaluate":
            keys = ("eval_shots", "eval_videos", "eval_frames", "eval_metrics", "eval_cross_pairs")
            common["finetune_steps"] = self.finetune_steps
        else:
            keys = ()
        return _plain({**common, **{k: getattr(self, k) for k in keys}})


@dataclass
class DemoResult:
    out: Path
    page: Path
    reused: list[str]  # stages taken from an earlier run
    ran: list[str]  # stages run this time
    seconds: dict[str, float]  # per stage, this run
    files: dict[str, Path] = field(default_factory=dict)  # what the page shows


# =========================================================================================================
# Threads
# =========================================================================================================


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None where there is none."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [float(v) for v in fields[:8]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    return sum(values) - idle, sum(values)


def idle_cores(interval: float = 0.5) -> float | None:
    """How many cores sat idle over the next `interval` seconds (None where it cannot be measured)."""
    before = _cpu_times()
    if before is None:
        return None
    time.sleep(interval)
    after = _cpu_times()
    if after is None or after[1] <= before[1]:
        return None
    busy_fraction = (after[0] - before[0]) / (after[1] - before[1])
    return (os.cpu_count() or 1) * (1.0 - busy_fraction)


def choose_threads(requested: int = 0) -> int:
    """torch threads for the demo: `requested`, else $OMP_NUM_THREADS, else the cores idle right now
    (at least 1). On a CPU shared with other jobs, more threads than free cores is many times slower
    (docs/training.md, "CPU threads")."""
    if requested > 0:
        return requested
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    free = idle_cores()
    if free is None:
        return cores
    return max(1, min(cores, int(free + 0.3)))


# =========================================================================================================
# Stage records
# =========================================================================================================


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples become lists), so that settings compare equal after a round trip."""
    return json.loads(json.dumps(value))


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


class _Stages:
    """Runs stages in order, each unless an earlier run left a matching record (work/<stage>.done.json)."""

    def __init__(self, work: Path, log: Callable[[str], None]):
        self.work = work
        self.log = log
        self.digests: dict[str, str] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.reused: list[str] = []
        self.ran: list[str] = []
        self.seconds: dict[str, float] = {}

    def record_path(self, stage: str) -> Path:
        return self.work / f"{stage}{DONE_SUFFIX}"

    def previous(self, stage: str) -> dict[str, Any] | None:
        try:
            record = json.loads(self.record_path(stage).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return record if isinstance(record, dict) else None

    def run(
        self,
        stage: str,
        title: str,
        settings: dict[str, Any],
        inputs: Sequence[str],
        outputs: Callable[[dict[str, Any]], Iterable[Path]],
        action: Callable[[dict[str, Any] | None], dict[str, Any]],
        always: bool = False,
    ) -> dict[str, Any]:
        """Reuse the stage if its record has these settings and inputs and its outputs exist; else run
        `action(previous record)`, which returns the details to record (file names, numbers)."""
        number = STAGES.index(stage) + 1
        started = time.monotonic()
        wanted_inputs = {name: self.digests[name] for name in inputs}
        previous = self.previous(stage)
        if (
            not always
            and previous is not None
            and previous.get("settings") == settings
            and previous.get("inputs") == wanted_inputs
            and all(Path(p).exists() for p in outputs(previous.get("details", {})))
        ):
            self.log(f"[{number}/{len(STAGES)}] {title}: reusing the result of {previous.get('finished')}")
            self.reused.append(stage)
            record = previous
        else:
            why = "" if previous is None or always else " (settings or inputs changed)"
            self.log(f"[{number}/{len(STAGES)}] {title}{why}")
            self.record_path(stage).unlink(missing_ok=True)
            details = action(previous)
            record = {
                "stage": stage,
                "settings": settings,
                "inputs": wanted_inputs,
                "details": _plain(details),
                "seconds": round(time.monotonic() - started, 1),
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
            record["digest"] = _digest({k: record[k] for k in ("stage", "settings", "inputs", "details")})
            atomic_write_text(self.record_path(stage), json.dumps(record, indent=1) + "\n")
            self.ran.append(stage)
        self.seconds[stage] = round(time.monotonic() - started, 1)
        self.digests[stage] = record["digest"]
        self.records[stage] = record
        return record


def _claim_folder(folder: Path, settings: dict[str, Any]) -> bool:
    """Make `folder` hold work for `settings`: keep it (True) when it was started with the same settings,
    else empty it (False). The settings are written into it before any work."""
    marker = folder / FOLDER_MARKER
    settings = _plain(settings)
    try:
        kept = json.loads(marker.read_text()) == settings
    except (OSError, json.JSONDecodeError):
        kept = False
    if not kept and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps(settings, indent=1) + "\n")
    return kept


# =========================================================================================================
# The demo
# =========================================================================================================


def experiment_config(settings: DemoSettings) -> Any:
    """The model's ExperimentConfig: the preset with the overrides and the training budget applied."""
    from metahead.config import apply_overrides, preset

    cfg = apply_overrides(preset(settings.preset), list(settings.overrides))
    cfg.train.time_limit_minutes = settings.train_minutes
    cfg.train.steps = settings.train_steps
    return cfg


def finetune_steps(settings: DemoSettings, cfg: Any) -> int:
    """Fine-tuning steps of the demo's FT avatars (and the from-scratch baseline): the setting, else the
    model config's."""
    return cfg.finetune.steps if settings.finetune_steps is None else settings.finetune_steps


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
    stages = _Stages(work, log)
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
        lambda previous: _make_corpus(corpus, drivers, settings, cfg.model.image_size, threads),
    )
    people = corpus_record["details"]

    # --- 2 train --------------------------------------------------------------------------------------------
    stages.run(
        "train",
        f"meta-training ({settings.train_minutes:g} min or {settings.train_steps} steps)",
        settings.stage_settings("train"),
        ["corpus"],
        lambda d: [model_path],
        lambda previous: _train(run_dir, corpus, cfg, stages.digests["corpus"], log),
    )

    # --- 3 avatar -------------------------------------------------------------------------------------------
    avatar_ft, avatar_ff = work / "person.ft.avatar", work / "person.ff.avatar"
    stages.run(
        "avatar",
        f"avatar of an unseen person from T={settings.shots} frames (fine-tuned and feed-forward)",
        settings.stage_settings("avatar"),
        ["train"],
        lambda d: [avatar_ft, avatar_ff],
        lambda previous: _make_avatars(
            model_path,
            corpus / "videos" / people["avatar_video"],
            settings,
            finetune_steps(settings, cfg),
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
        lambda previous: _animate(out, avatar_ft, avatar_ff, drivers, people, settings),
    )

    # --- 5 evaluate -----------------------------------------------------------------------------------------
    evaluation = work / "evaluation"
    eval_settings = settings.stage_settings("evaluate")
    evaluate_record = stages.run(
        "evaluate",
        f"evaluation on {settings.eval_videos} test videos (T={', '.join(map(str, settings.eval_shots))}): "
        "FT, FF, nearest shot, from scratch",
        eval_settings,
        ["train", "corpus"],
        lambda d: [evaluation / "report.json"],
        lambda previous: _evaluate(
            evaluation, model_path, corpus, settings, cfg, threads, eval_settings, stages.digests["train"]
        ),
    )

    # --- 6 page ---------------------------------------------------------------------------------------------
    page = out / "index.html"
    page_record = stages.run(
        "page",
        "the page",
        {},
        list(STAGES[:-1]),
        lambda d: [page],
        lambda previous: _write_page(
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


# --- 1 corpus -----------------------------------------------------------------------------------------------


def _make_corpus(corpus: Path, drivers: Path, settings: DemoSettings, size: int, workers: int) -> dict:
    """The corpus (resumable), and one new clip each of two test people for driving the avatar."""
    from metahead.config import SynthConfig
    from metahead.data.format import DatasetInfo, VideoRecord, write_info, write_manifest, write_video
    from metahead.data.synthetic import generate_corpus, identity_name, make_video, video_name

    synth = SynthConfig(
        identities=settings.identities,
        videos_per_identity=settings.videos_per_identity,
        frames=settings.frames,
        size=size,
        seed=settings.seed,
        test_fraction=settings.test_fraction,
    )
    _claim_folder(corpus, _plain(dataclasses.asdict(synth)))
    records = generate_corpus(corpus, synth, workers=workers, progress=settings.progress)
    test = sorted({r.identity for r in records if r.split == "test"})
    train = sorted({r.identity for r in records if r.split == "train"})
    if not test:
        raise ValueError("the demo corpus has no test identity: raise identities or test_fraction")
    # The avatar is a test person; the other driver another test person when there is one (else a
    # training person: their driving clip is new all the same).
    avatar_person = test[0]
    other_person = test[1] if len(test) > 1 else train[0]

    def index(name: str) -> int:
        return int(name.removeprefix("synth"))

    # Driving clips: each person's first video, continued past the frames the corpus holds. A synthetic
    # video's motion is a function of time, so frames after the corpus' last are motion no stage has
    # seen, in the same setting (background, clothing, light, framing) as the avatar's shots.
    driver_paths, driver_records = {}, []
    _claim_folder(drivers, {**_plain(dataclasses.asdict(synth)), "driver_frames": settings.driver_frames})
    write_info(drivers, DatasetInfo(image_size=size, frame_codec="jpeg", source="synthetic"))
    for role, person in (("own", avatar_person), ("other", other_person)):
        name = f"{video_name(index(person), 0)}_continued"
        rel = f"{identity_name(index(person))}/{name}"
        if not (drivers / "videos" / rel / "landmarks.npy").is_file():
            total = settings.frames + settings.driver_frames
            renderer, motion = make_video(settings.seed, index(person), 0, total, size)
            frames = (f.image for n, f in enumerate(renderer.render(motion)) if n >= settings.frames)
            write_video(drivers, rel, frames, renderer.landmarks(motion)[settings.frames :], codec="jpeg")
        driver_paths[role] = rel
        driver_records.append(VideoRecord(person, name, "test", settings.driver_frames, rel))
    write_manifest(drivers, driver_records)
    avatar_video = f"{identity_name(index(avatar_person))}/{video_name(index(avatar_person), 0)}"
    return {
        "train_videos": sum(r.split == "train" for r in records),
        "test_videos": sum(r.split == "test" for r in records),
        "test_people": test,
        "avatar_person": avatar_person,
        "avatar_video": avatar_video,
        "other_person": other_person,
        "drivers": driver_paths,
    }


# --- 2 train ------------------------------------------------------------------------------------------------


def _train(run_dir: Path, corpus: Path, cfg: Any, corpus_digest: str, log: Callable[[str], None]) -> dict:
    """Meta-train into run_dir; continue a run started with the same model and data (an interrupted or
    time-extended one), start afresh otherwise."""
    from metahead.training import checkpoint
    from metahead.training.meta import train

    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, data=str(corpus), out=str(run_dir)))
    what = cfg.to_dict()
    for budget in ("steps", "time_limit_minutes", "out", "data"):
        what["train"].pop(budget)
    resumed = _claim_folder(run_dir, {"config": what, "corpus": corpus_digest})
    if resumed and checkpoint.latest_state(run_dir) is not None:
        log(f"continuing the training in {run_dir} from {checkpoint.latest_state(run_dir).name}")
    train(cfg, resume=True)
    states = checkpoint.list_states(run_dir)
    return {"steps": states[-1][0] if states else 0, "run": str(run_dir)}


# --- 3 avatar -----------------------------------------------------------------------------------------------


def _make_avatars(
    model: Path, video: Path, settings: DemoSettings, steps: int, ft_path: Path, ff_path: Path
) -> dict:
    from metahead.avatar import Avatar
    from metahead.training.finetune import loss_curve_paths

    curve_json, _ = loss_curve_paths(ft_path)
    ft = Avatar.create(
        model, video=video, shots=settings.shots, finetune=True, steps=steps,
        progress=settings.progress, curve_path=curve_json,
    )  # fmt: skip
    ft.save(ft_path)
    ff = Avatar.create(model, video=video, shots=settings.shots, finetune=False, progress=False)
    ff.save(ff_path)
    summary = ft.info.get("finetune", {})
    return {
        "shots": int(ft.info["shots"]),
        "finetune_steps": int(summary.get("steps", 0)),
        "content_first": summary.get("content_first"),
        "content_last": summary.get("content_last"),
        "video": str(video),
    }


# --- 4 animate ----------------------------------------------------------------------------------------------


def _label_bar(width: int, labels: Sequence[str], panel: int, height: int = 16) -> np.ndarray:
    """A white strip with one label centred over each panel (uint8 (height, width, 3))."""
    from PIL import Image, ImageDraw

    bar = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(bar)
    for i, text in enumerate(labels):
        text_width = draw.textlength(text)
        draw.text((i * panel + (panel - text_width) / 2, 2), text, fill="black")
    return np.asarray(bar)


def _write_videos(out: Path, stem: str, frames: np.ndarray, labels: Sequence[str], scale: int) -> dict:
    """frames (F, S, n·S, 3): n panels side by side -> OUT/videos/<stem>.mp4 (enlarged) and .gif."""
    from PIL import Image

    from metahead.data.video_io import enlarge_frames, write_video_file

    size = frames.shape[1]
    big = enlarge_frames(frames, scale)
    bar = _label_bar(big.shape[2], labels, size * scale)
    labelled = np.concatenate([np.broadcast_to(bar, (len(big), *bar.shape)), big], axis=1)
    mp4 = out / "videos" / f"{stem}.mp4"
    gif = out / "videos" / f"{stem}.gif"
    write_video_file(mp4, labelled, VIDEO_FPS)
    # Pillow's default (median-cut) palette takes ~1 s per frame; octree ~15 ms.
    images = [Image.fromarray(f).quantize(256, method=Image.Quantize.FASTOCTREE) for f in labelled]
    with atomic_path(gif) as tmp:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / VIDEO_FPS), loop=0
        )
    return {
        "mp4": mp4.relative_to(out).as_posix(),
        "gif": gif.relative_to(out).as_posix(),
        "frames": len(frames),
    }


def _animate(
    out: Path, ft_path: Path, ff_path: Path, drivers: Path, people: dict, settings: DemoSettings
) -> dict:
    from tqdm import tqdm

    from metahead.avatar import Avatar

    ft, ff = Avatar.load(ft_path), Avatar.load(ff_path)
    size = ft.image_size
    scale = settings.video_scale or max(1, round(192 / size))
    videos = {}
    # own: the person's own landmarks as they are (the paper's self-reenactment; the first panel is the
    # ground truth). other: another person's pose and expression moved onto the avatar's face shape,
    # placed where the avatar's frames have the face (a model trained for minutes renders faces well only
    # near the framing it was fine-tuned on).
    setups = {
        "own": ({"retarget": False}, ["real frames (held out)", "landmarks", "FT avatar", "FF avatar"]),
        "other": (
            {"retarget": True, "anchor": "avatar"},
            ["driver (another person)", "retargeted landmarks", "FT avatar", "FF avatar"],
        ),
    }
    for role, (options, labels) in setups.items():
        driver = drivers / "videos" / people["drivers"][role]
        animation = ft.animate(driver, side_by_side=True, **options)
        frames = list(
            tqdm(animation, total=len(animation), unit="frame", desc=f"animate ({role})",
                 disable=not settings.progress, dynamic_ncols=True)
        )  # fmt: skip
        # driver | landmark image | FT, then the FF avatar on the same landmarks: what fine-tuning adds
        frames = np.concatenate([np.stack(frames), ff.render(animation.landmarks)], axis=2)
        stem = "own-motion" if role == "own" else "puppeteering"
        videos[role] = {
            **_write_videos(out, stem, frames, labels, scale),
            **animation.summary(),
            "labels": labels,
        }
    return {"videos": videos, "scale": scale}


# --- 5 evaluate ---------------------------------------------------------------------------------------------


def _evaluate(
    folder: Path,
    model: Path,
    corpus: Path,
    settings: DemoSettings,
    cfg: Any,
    threads: int,
    eval_settings: dict[str, Any],
    model_digest: str,
) -> dict:
    from tqdm import tqdm

    from metahead.evaluation.protocol import METHODS, ProtocolConfig, evaluate

    _claim_folder(folder, {**eval_settings, "model": model_digest})  # results of another model: start over
    workers = settings.eval_workers or threads
    protocol = ProtocolConfig(
        model=str(model), data=str(corpus), out=str(folder), shots=tuple(settings.eval_shots),
        eval_frames=settings.eval_frames, max_videos=settings.eval_videos, methods=tuple(METHODS),
        metrics=tuple(settings.eval_metrics) if settings.eval_metrics else None,
        finetune_steps=finetune_steps(settings, cfg), cross_identity_pairs=settings.eval_cross_pairs,
        seed=settings.seed, device="cpu", workers=workers,
    )  # fmt: skip
    bar = None

    def progress(key: str, done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(
                total=total, unit="job", desc="evaluate", disable=not settings.progress, dynamic_ncols=True
            )
        bar.set_postfix_str(key[-48:], refresh=False)
        bar.update(done - bar.n)

    try:
        run = evaluate(protocol, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    if run.summary.failed:
        first = next(iter(run.summary.failed.items()))
        raise RuntimeError(
            f"{len(run.summary.failed)} evaluation job(s) failed (rerun the demo to retry them); "
            f"first: {first[0]}: {first[1][-500:]}"
        )
    return {"videos": [p.name for p in run.plans], "jobs": len(run.summary.results)}


# --- 6 page -------------------------------------------------------------------------------------------------


def _copy(source: Path, target: Path) -> Path | None:
    if not source.is_file():
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return target


def _shots_strip(avatar_path: Path, target: Path) -> Path | None:
    """The avatar's T frames side by side (enlarged 2x) as PNG."""
    from PIL import Image

    from metahead.avatar import Avatar
    from metahead.data.video_io import enlarge_frames

    frames = Avatar.load(avatar_path).source_frames
    if frames is None:
        return None
    strip = enlarge_frames(np.concatenate(list(frames), axis=1)[None], 2)[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        Image.fromarray(strip).save(tmp, format="PNG")
    return target


def _leading_number(text: str) -> float | None:
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return None


def metrics_table_html(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table with the best value of each ↑/↓ column in bold."""
    best: dict[int, float] = {}
    for c, name in enumerate(header):
        values = [v for v in (_leading_number(r[c]) for r in rows) if v is not None]
        if values and ("↑" in name or "↓" in name):
            best[c] = max(values) if "↑" in name else min(values)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for c, cell in enumerate(row):
            text = html.escape(cell)
            if c in best and _leading_number(cell) == best[c]:
                text = f"<b>{text}</b>"
            cells.append(f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(src: str, caption: str, alt: str, width: int | None = None) -> str:
    style = f" style='max-width:{width}px'" if width else ""
    return (
        f"<figure><img src='{html.escape(src)}' alt='{html.escape(alt)}'{style}>"
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _video_block(entry: dict, caption: str) -> str:
    mp4, gif = html.escape(entry["mp4"]), html.escape(entry["gif"])
    return (
        "<div class='video'>"
        f"<video src='{mp4}' controls autoplay loop muted playsinline></video>"
        f"<p class='caption'>{caption} <a href='{mp4}'>mp4</a> · <a href='{gif}'>GIF</a></p>"
        f"<details><summary>the same as an animated GIF</summary><img src='{gif}' alt='{gif}'></details>"
        "</div>"
    )


PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#222}"
    "h1{margin-bottom:0}table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}"
    "figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}"
    "figcaption,.caption{font-size:90%;color:#555;max-width:800px}"
    "img,video{max-width:100%;image-rendering:auto}code{background:#f4f4f4;padding:0 3px}"
    ".note{background:#fff8e0;border-left:4px solid #e0b000;padding:.4em .8em}"
)


def _write_page(
    out: Path,
    stages: _Stages,
    settings: DemoSettings,
    cfg: Any,
    threads: int,
    people: dict,
    animate_record: dict,
    evaluate_record: dict,
    started: float,
) -> dict:
    """OUT/index.html and the images it shows (copied into OUT/images), all linked relatively."""
    import torch

    from metahead.evaluation.report import cross_table, main_table
    from metahead.training.logging import CURVES_FILE, LOG_FILE, SAMPLES_DIR, discriminator_balance, read_log

    work = out / WORK
    images = out / "images"
    files: dict[str, Path] = {}
    evaluation = work / "evaluation"
    report = json.loads((evaluation / "report.json").read_text())
    header, rows = main_table(report)
    cross_header, cross_rows = cross_table(report)
    grid_shots = max(settings.eval_shots)
    for name, source in {
        "sample_grid": evaluation / f"grid_T{grid_shots}.png",
        "training_curves": work / "run" / CURVES_FILE,
        "finetune_curve": work / "person.ft.avatar.finetune.png",
    }.items():
        copied = _copy(source, images / f"{name.replace('_', '-')}.png")
        if copied:
            files[name] = copied
    samples = sorted((work / "run" / SAMPLES_DIR).glob("step-*.png"))
    if samples:
        files["training_samples"] = _copy(samples[-1], images / "training-samples.png")
    strip = _shots_strip(work / "person.ft.avatar", images / "avatar-shots.png")
    if strip:
        files["avatar_shots"] = strip
    for source, name in (
        (evaluation / "report.csv", "metrics.csv"),
        (evaluation / "report.md", "metrics.md"),
    ):
        copied = _copy(source, out / name)
        if copied:
            files[name.replace(".", "_")] = copied
    videos = animate_record["details"]["videos"]
    for role, entry in videos.items():
        files[f"{role}_mp4"], files[f"{role}_gif"] = out / entry["mp4"], out / entry["gif"]

    def rel(key: str) -> str:
        return files[key].relative_to(out).as_posix()

    train_details = stages.records["train"]["details"]
    avatar_details = stages.records["avatar"]["details"]
    balance = discriminator_balance(read_log(work / "run" / LOG_FILE))
    size = cfg.model.image_size
    own, other = videos["own"], videos["other"]
    parts = [
        "<!doctype html><html lang='en'><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>metahead demo</title><style>{PAGE_STYLE}</style>",
        "<h1>metahead demo</h1>",
        "<p>Few-shot talking-head avatars after Zakharov et al. 2019, run end to end on this machine's CPU: "
        f"a synthetic corpus of {settings.identities} people, a model meta-trained on "
        f"{people['train_videos']} of their videos for {train_details['steps']} steps "
        f"({stages.records['train']['seconds'] / 60:.1f} min), and an avatar of a person the model never saw "
        f"(<code>{html.escape(people['avatar_person'])}</code>, a test-split identity) made from "
        f"T = {avatar_details['shots']} frames of one video and fine-tuned for "
        f"{avatar_details['finetune_steps']} steps.</p>",
        "<p class='note'>What to expect: the networks are small and trained for minutes at "
        f"{size}×{size} pixels on two CPU cores, so the results are blurry approximations of the person — "
        "the point is the whole pipeline and the comparison with the baselines, not image quality. The "
        "paper trained for days on VoxCeleb2 with 8 GPUs at 256×256.</p>",
        "<h2>The person's own held-out motion</h2>",
        _video_block(
            own,
            f"The avatar's video (<code>{html.escape(people['avatar_video'])}</code>) continued past the "
            "frames the corpus holds: motion no stage has seen, in the same setting. Its landmarks drive "
            "the FT and FF avatars; the first panel is the real frames, i.e. the ground truth. "
            f"Panels: {', '.join(own['labels'])}.",
        ),
        "<h2>Puppeteering by another person (retargeted)</h2>",
        _video_block(
            other,
            f"Another unseen person, <code>{html.escape(people['other_person'])}</code>, drives the avatar. "
            "Their pose and expression, relative to their neutral frame, are moved onto the avatar's own "
            "landmark geometry (retargeting), so the driver's face shape does not leak into the result "
            f"(face-shape distance driver→avatar: {other['shape_distance']:.2f} eye distances), and placed "
            f"where the avatar's frames have the face. Panels: {', '.join(other['labels'])}.",
        ),
        "<h2>The avatar's T frames</h2>",
    ]
    if "avatar_shots" in files:
        parts.append(
            _figure(rel("avatar_shots"), f"The {avatar_details['shots']} frames of "
                    f"<code>{html.escape(people['avatar_video'])}</code> the avatar was made from.", "shots")
        )  # fmt: skip
    parts += [
        "<h2>Evaluation: the paper's protocol against the baselines</h2>",
        f"<p>For each of {len(report['videos'])} test videos (people unseen in meta-training): an avatar "
        f"from T frames, judged on {settings.eval_frames} other (held-out) frames of the video, rendered "
        "from their landmarks. <b>FT</b>: fine-tuned avatar; <b>FF</b>: feed-forward (no fine-tuning); "
        "<b>nearest shot</b>: the shot whose landmarks are closest to the target's; <b>from scratch</b>: the "
        "same networks randomly initialised and trained on the T frames for the same steps (the role "
        "Pix2pixHD plays in the paper). Mean over videos ± spread across videos; best in bold. The "
        "identity FD is a Fréchet distance on face-recognition features, not FID (no Inception weights "
        "offline). <a href='metrics.md'>metrics.md</a> · <a href='metrics.csv'>metrics.csv</a></p>",
        metrics_table_html(header, rows),
        "<p>How to read it: FT should beat FF and from scratch. The nearest shot wins here because the "
        "held-out frames come from the same short, steady synthetic video as the shots, so a shot in a "
        "similar pose is almost the answer; it cannot show a pose it was not given (the animations above). "
        "A dash: the metric could not score those frames (e.g. dlib finds no face in a blurry rendering; "
        "see metrics.md).</p>",
    ]
    if cross_rows:
        parts += ["<h3>Cross-identity (no ground truth)</h3>", metrics_table_html(cross_header, cross_rows)]
    if "sample_grid" in files:
        parts.append(
            _figure(rel("sample_grid"), "Sample grid: shots, the real held-out frame, and each method's "
                    "rendering of it from its landmarks.", "sample grid")
        )  # fmt: skip
    parts.append("<h2>Meta-training and fine-tuning</h2>")
    if "training_samples" in files:
        parts.append(
            _figure(rel("training_samples"), "Meta-training samples at the last step, one training "
                    "episode per row: landmark image | K input frames | generated | ground truth.", "samples")
        )  # fmt: skip
    parts.append(
        "<p>Is D playing? Over the last fifth of meta-training "
        f"(from step {balance['from_step']:.0f}) D scored real frames {balance['score_gap']:.2f} above "
        "generated ones on average, and its hinge loss L_DSC "
        f"averaged {balance['discriminator_loss']:.2f} (2 = it tells them apart no better than chance).</p>"
    )
    if "training_curves" in files:
        parts.append(_figure(rel("training_curves"), "Meta-training curves.", "training curves", 840))
    if "finetune_curve" in files:
        parts.append(
            _figure(rel("finetune_curve"), "Fine-tuning the avatar: losses per step.", "fine-tuning", 640)
        )
    timing_rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{'reused' if name in stages.reused else 'ran'}</td>"
        f"<td>{stages.records[name]['seconds']:.0f} s</td>"
        f"<td>{html.escape(stages.records[name]['finished'])}</td></tr>"
        for name in STAGES[:-1]
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    parts += [
        "<h2>How this page was made</h2>",
        f"<p><code>metahead demo</code>: config preset <code>{html.escape(settings.preset)}</code>, torch "
        f"{html.escape(torch.__version__)}, {threads} thread(s), {os.cpu_count()} CPU(s), load average "
        f"{load:.1f} when the page was written. The time each stage took when it ran:</p>",
        f"<table><tr><th>stage</th><th>this run</th><th>time</th><th>finished</th></tr>{timing_rows}</table>",
        f"<p>Everything the stages made is under <code>{WORK}/</code> (the corpus, the training run with "
        "its checkpoints, TensorBoard logs and samples, the avatar files, the full evaluation report). "
        "Rerunning the demo reuses it; see README.md for the same steps as separate commands.</p>",
        "</html>",
    ]
    page = out / "index.html"
    atomic_write_text(page, "\n".join(parts) + "\n")
    return {"files": {k: v.relative_to(out).as_posix() for k, v in files.items()}}


def main_for_cli(out: str, quick: bool, changes: dict[str, Any]) -> int:
    """What `metahead demo` runs (cli.py parses the arguments)."""
    settings = DemoSettings.quick(**changes) if quick else DemoSettings.full(**changes)
    try:
        run_demo(out, settings)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue where it stopped", file=sys.stderr)
        return 130
    return 0
