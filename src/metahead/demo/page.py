"""The demo's last stage: OUT/index.html with its videos, images, metrics tables and curves."""

from __future__ import annotations

import html
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metahead.demo.records import EVALUATION, FEED_FORWARD_EVALUATION, STAGES, WORK, StageRunner
from metahead.demo.settings import DemoSettings
from metahead.fileio import atomic_path, atomic_write_text


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


def write_page(
    out: Path,
    stages: StageRunner,
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
    evaluation = work / EVALUATION
    report = json.loads((evaluation / "report.json").read_text())
    header, rows = main_table(report)
    cross_header, cross_rows = cross_table(report)
    feed_forward_report = None
    if evaluate_record["details"].get("feed_forward_videos"):
        feed_forward = work / FEED_FORWARD_EVALUATION
        feed_forward_report = json.loads((feed_forward / "report.json").read_text())
        copied = _copy(feed_forward / "report.md", out / "metrics-without-finetuning.md")
        if copied:
            files["metrics_without_finetuning_md"] = copied
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
        f"{avatar_details['finetune_steps']} steps"
        + (f" ({avatar_details['finetune_seconds']:.0f} s)" if avatar_details.get("finetune_seconds") else "")
        + ".</p>",
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
    if feed_forward_report is not None:
        parts += [
            f"<h3>Without fine-tuning, on {len(feed_forward_report['videos'])} test videos</h3>",
            "<p>FF and the nearest shot take seconds a video, so they are scored on more test videos than "
            "the table above: a steadier figure for FF, whose quality varies much from person to person. "
            "<a href='metrics-without-finetuning.md'>metrics-without-finetuning.md</a></p>",
            metrics_table_html(*main_table(feed_forward_report)),
        ]
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
