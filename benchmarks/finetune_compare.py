"""FT vs FF vs from-scratch on held-out frames of unseen identities; prints JSON.

For each test-split video of DATA: T frames make an avatar three ways, and the other frames of the video
(held out) are rendered from their landmarks and compared with the real ones (L1 in [-1, 1], SSIM; and the
SSIM of the T shots themselves re-rendered, "shot_ssim": how closely the avatar reproduces its own frames):
- ft: the meta-trained model, fine-tuned on the T frames for S steps (paper Sec. 3.3)
- ff: the meta-trained model, feed-forward (ψ = P ê, no fine-tuning)
- scratch: the same networks freshly initialised, fine-tuned the same S steps on the T frames
With --steps-list, FT is measured after each of several step counts (to choose finetune.steps). With
--curve N, one FT run per video of the largest step count records the L1 of the T shots and of the held-out
frames every N steps ("curve": the mean over videos), so one run shows where held-out frames stop improving.

    python benchmarks/finetune_compare.py --model RUN/model.pt --data DATA --shots 4 --steps 40
    python benchmarks/finetune_compare.py --model RUN/model.pt --data DATA --shots 8 --steps 400 --curve 20 \
        --methods ft --set finetune.schedule=cosine
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np
import torch

from metahead.avatar import Avatar, evenly_spaced, resize_crops
from metahead.config import apply_overrides
from metahead.data.episodes import FewShotDataset
from metahead.data.format import Dataset
from metahead.evaluation.baselines import from_scratch_networks
from metahead.evaluation.metrics import sharpness, ssim
from metahead.losses import ContentLoss
from metahead.training import finetune as ft
from metahead.training.checkpoint import load_model


def held_out_scores(avatar: Avatar, frames: np.ndarray, landmarks: np.ndarray) -> dict[str, float]:
    """L1 (images in [-1, 1]), SSIM (in [0, 1]) and sharpness (detail on the face box over the real
    frame's) of the avatar's renderings of the held-out frames."""
    fake = torch.from_numpy(avatar.render(landmarks)).permute(0, 3, 1, 2).float() / 255
    real = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    detail = sharpness(fake, real, torch.from_numpy(landmarks).float())
    return {
        "l1": float((fake - real).abs().mean() * 2),
        "ssim": float(ssim(fake, real).mean()),
        "sharpness": float(np.nanmean(detail.numpy())),
    }


def compare(
    model_path: str,
    data: str,
    shots: int,
    steps_list: list[int],
    max_videos: int,
    held_out: int,
    methods: list[str],
    overrides: list[str] = (),
    seed: int = 0,
    curve_every: int = 0,
) -> dict:
    model = load_model(model_path)
    cfg = apply_overrides(model[3], list(overrides))
    dataset = Dataset(data)
    videos = dataset.split("test")[:max_videos]
    if not videos:
        raise SystemExit(f"{data}: no test-split videos")
    content_loss = ContentLoss(cfg.loss)
    results: dict[str, list[dict]] = {}
    curves: list[list[dict]] = []
    for record in videos:
        reader = dataset.reader(record)
        order = evenly_spaced(len(reader), min(len(reader), shots + held_out))
        shot_ids, target_ids = (
            order[::2][:shots],
            [i for i in order if i not in order[::2][:shots]][:held_out],
        )
        shot_frames, shot_marks = reader.read_frames(shot_ids), reader.read_landmarks(shot_ids)
        target_frames, target_marks = reader.read_frames(target_ids), reader.read_landmarks(target_ids)
        size = cfg.model.image_size
        if target_frames.shape[1] != size:
            target_frames, target_marks = resize_crops(target_frames, target_marks, size)

        if curve_every:
            curves.append(held_out_curve(model, cfg, content_loss, shot_frames, shot_marks, target_frames,
                                         target_marks, max(steps_list), curve_every))  # fmt: skip
        runs = [("ff", model, False, 0)] if "ff" in methods else []
        for steps in steps_list:
            if "ft" in methods:
                runs.append((f"ft_{steps}", model, True, steps))
            if "scratch" in methods:
                runs.append((f"scratch_{steps}", from_scratch_networks(cfg, seed), True, steps))
        for name, networks, finetune, steps in runs:
            started = time.perf_counter()
            avatar = Avatar.create(
                networks, frames=shot_frames, landmarks=shot_marks, finetune=finetune, steps=steps,
                config=cfg.finetune, content_loss=content_loss, progress=False,
            )  # fmt: skip
            entry = {
                "video": f"{record.identity}/{record.video}",
                "seconds": round(time.perf_counter() - started, 1),
            }
            entry.update(held_out_scores(avatar, target_frames, target_marks))
            entry["shot_ssim"] = held_out_scores(avatar, *resize_crops(shot_frames, shot_marks, size))["ssim"]
            results.setdefault(name, []).append(entry)
    summary = {
        name: {
            "l1": round(float(np.mean([e["l1"] for e in entries])), 4),
            "ssim": round(float(np.mean([e["ssim"] for e in entries])), 4),
            "sharpness": round(float(np.mean([e["sharpness"] for e in entries])), 4),
            "shot_ssim": round(float(np.mean([e["shot_ssim"] for e in entries])), 4),
            "seconds": round(float(np.mean([e["seconds"] for e in entries])), 1),
        }
        for name, entries in results.items()
    }
    out = {"summary": summary, "per_video": results}
    if curves:
        out["curve"] = [
            {key: round(float(np.mean([c[i][key] for c in curves])), 4) for key in curves[0][i]}
            for i in range(min(len(c) for c in curves))
        ]
        out["curve"][-1].update(
            {k: round(float(np.mean([c[-1][k] for c in curves])), 4) for k in ("shots_ssim", "held_out_ssim")}
        )
    return out


def held_out_curve(model, cfg, content_loss, shot_frames, shot_marks, target_frames, target_marks, steps: int,
                   every: int) -> list[dict]:  # fmt: skip
    """One fine-tuning run of `steps` steps: the L1 (in [-1, 1]) of the T shots and of the held-out frames,
    G in eval mode, every `every` steps."""
    embedder, generator, discriminator, _ = model
    size = cfg.model.image_size
    shots = FewShotDataset(shot_frames, shot_marks, image_size=size)
    targets = FewShotDataset(target_frames, target_marks, image_size=size)
    run_cfg = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, steps=steps))
    result = ft.finetune(
        embedder, generator, discriminator,
        ft.FewShotFrames(shots.images, shots.landmark_images, shots.landmarks), run_cfg,
        content_loss=content_loss, progress=False, evaluate_every=every,
        held_out=ft.FewShotFrames(targets.images, targets.landmark_images, targets.landmarks),
    )  # fmt: skip
    curve = [
        {"step": r["step"], "shots_l1": r["reconstruction_l1"], "held_out_l1": r["held_out_l1"]}
        for r in result.history
        if "held_out_l1" in r
    ]
    with torch.no_grad():  # the last point also gets SSIM (in [0, 1]) of the shots and held-out frames
        for name, frames in (("shots_ssim", shots), ("held_out_ssim", targets)):
            fake = result.generator(frames.landmark_images, adain_params=result.adain_params)
            curve[-1][name] = float(ssim((fake.clamp(-1, 1) + 1) / 2, (frames.images + 1) / 2).mean())
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument(
        "--steps", type=int, nargs="+", default=[40], help="fine-tuning step counts to measure"
    )
    parser.add_argument("--videos", type=int, default=4, help="test videos used")
    parser.add_argument("--held-out", type=int, default=8, help="held-out frames per video")
    parser.add_argument("--methods", nargs="+", default=["ft", "ff", "scratch"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--curve", type=int, default=0, help="also record L1 curves every N steps")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="finetune.FIELD=VALUE"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out = compare(
        args.model,
        args.data,
        args.shots,
        args.steps,
        args.videos,
        args.held_out,
        args.methods,
        args.overrides,
        curve_every=args.curve,
    )
    out["settings"] = vars(args)
    out["seconds"] = round(time.perf_counter() - started, 1)
    out["load_average"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
