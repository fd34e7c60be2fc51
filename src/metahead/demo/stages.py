"""The demo's first five stages, each through the layers' Python APIs: the synthetic corpus and driving
clips, meta-training, the FT and FF avatars, their animations (mp4 and GIF), the evaluation."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metahead.demo.records import claim_folder, plain_json
from metahead.demo.settings import DemoSettings
from metahead.fileio import atomic_path

VIDEO_FPS = 25.0


# --- 1 corpus -----------------------------------------------------------------------------------------------


def make_corpus(corpus: Path, drivers: Path, settings: DemoSettings, size: int, workers: int) -> dict:
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
    claim_folder(corpus, plain_json(dataclasses.asdict(synth)))
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
    claim_folder(drivers, {**plain_json(dataclasses.asdict(synth)), "driver_frames": settings.driver_frames})
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


def meta_train(
    run_dir: Path,
    corpus: Path,
    cfg: Any,
    corpus_digest: str,
    log: Callable[[str], None],
    progress: bool = True,
) -> dict:
    """Meta-train into run_dir; continue a run started with the same model and data (an interrupted or
    time-extended one), start afresh otherwise."""
    from metahead.training import checkpoint
    from metahead.training.meta import train

    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, data=str(corpus), out=str(run_dir)))
    what = cfg.to_dict()
    for budget in ("steps", "time_limit_minutes", "out", "data"):
        what["train"].pop(budget)
    resumed = claim_folder(run_dir, {"config": what, "corpus": corpus_digest})
    if resumed and checkpoint.latest_state(run_dir) is not None:
        log(f"continuing the training in {run_dir} from {checkpoint.latest_state(run_dir).name}")
    train(cfg, resume=True, progress=progress)
    states = checkpoint.list_states(run_dir)
    return {"steps": states[-1][0] if states else 0, "run": str(run_dir)}


# --- 3 avatar -----------------------------------------------------------------------------------------------


def make_avatars(
    model: Path, video: Path, settings: DemoSettings, steps: int | None, ft_path: Path, ff_path: Path
) -> dict:
    """The FT avatar (with its fine-tuning curve) and the FF avatar from T frames of `video`; `steps` None:
    the model config's fine-tuning steps for that T."""
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
        "finetune_seconds": summary.get("seconds"),
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


def animate_avatars(
    out: Path, ft_path: Path, ff_path: Path, drivers: Path, people: dict, settings: DemoSettings
) -> dict:
    """Both avatars driven by the person's own held-out motion and by another person (retargeted):
    side-by-side videos under OUT/videos."""
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


METHODS_WITHOUT_FINETUNING = ("ff", "nearest_shot")  # seconds a video: scored on more test videos


def run_evaluation(
    folder: Path,
    feed_forward_folder: Path,
    model: Path,
    corpus: Path,
    settings: DemoSettings,
    threads: int,
    eval_settings: dict[str, Any],
    model_digest: str,
) -> dict:
    """The paper's protocol (FT, FF and the baselines) on a few test videos into `folder`; then the methods
    that need no fine-tuning (FF, nearest shot: seconds a video) on more of them into `feed_forward_folder`,
    a steadier figure for FF than a few videos give. Resumable."""
    from metahead.evaluation.methods import METHODS

    claim = {**eval_settings, "model": model_digest}  # results of another model or settings: start over
    main = _evaluate(
        folder, model, corpus, settings, threads, claim,
        max_videos=settings.eval_videos, methods=tuple(METHODS),
    )  # fmt: skip
    record = {"videos": main, "feed_forward_videos": []}
    if settings.eval_feed_forward_videos is not None:
        record["feed_forward_videos"] = _evaluate(
            feed_forward_folder, model, corpus, settings, threads, claim,
            max_videos=settings.eval_feed_forward_videos or None, methods=METHODS_WITHOUT_FINETUNING,
        )  # fmt: skip
    return record


def _evaluate(
    folder: Path,
    model: Path,
    corpus: Path,
    settings: DemoSettings,
    threads: int,
    claim: dict[str, Any],
    max_videos: int | None,
    methods: tuple[str, ...],
) -> list[str]:
    """One protocol run into `folder` (emptied first when it holds another model's or settings' results);
    the names of the videos it scored."""
    from tqdm import tqdm

    from metahead.evaluation.protocol import ProtocolConfig, evaluate

    claim_folder(folder, claim)
    protocol = ProtocolConfig(
        model=str(model), data=str(corpus), out=str(folder), shots=tuple(settings.eval_shots),
        eval_frames=settings.eval_frames, max_videos=max_videos, methods=methods,
        metrics=tuple(settings.eval_metrics) if settings.eval_metrics else None,
        finetune_steps=settings.finetune_steps, cross_identity_pairs=settings.eval_cross_pairs,
        seed=settings.seed, device="cpu", workers=settings.eval_workers or threads,
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
    return [p.name for p in run.plans]
