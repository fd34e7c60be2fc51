"""Scale of the offline content loss's terms on real faces: the multi-scale pixel L1 and the dlib
identity-feature L1 (unweighted), for a blurred copy, another frame of the same person, and a different
person. Used to choose LossConfig.identity_weight (docs/losses.md). Needs ../shared/data/real-train
(next to the repository); prints JSON.

    .venv/bin/python benchmarks/calibrate_identity_weight.py [--size 128] [--videos 6]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
from pathlib import Path

import av
import dlib
import numpy as np
import torch
import torch.nn.functional as F

from metahead.config import LossConfig
from metahead.losses import dlib_identity_loss, multiscale_l1

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-train" / "video"


def frames_of(path: Path, picks: tuple[int, ...]) -> list[np.ndarray]:
    out = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in picks:
                out.append(frame.to_ndarray(format="rgb24"))
            if i >= max(picks):
                break
    return out


def square_face(
    image: np.ndarray, detector, predictor, size: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A square crop around the detected face resized to size², and its 68 landmarks in crop pixels."""
    faces = detector(image, 1)
    if not faces:
        return None
    box = max(faces, key=lambda r: r.width() * r.height())
    cx, cy = (box.left() + box.right()) / 2, (box.top() + box.bottom()) / 2
    half = min(1.0 * max(box.width(), box.height()), cx, cy, image.shape[1] - cx, image.shape[0] - cy)
    x0, y0 = int(cx - half), int(cy - half)
    crop = image[y0 : y0 + int(2 * half), x0 : x0 + int(2 * half)]
    shape = predictor(image, box)
    points = np.array([[p.x - x0, p.y - y0] for p in shape.parts()], dtype=np.float32) * size / crop.shape[0]
    tensor = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1
    return F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True), torch.from_numpy(
        points
    )[None]


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(3 * sigma)
    taps = torch.exp(-(torch.arange(-radius, radius + 1).float() ** 2) / (2 * sigma**2))
    taps = (taps / taps.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), taps, groups=3)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), taps.transpose(2, 3), groups=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--videos", type=int, default=6)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(json.dumps({"skipped": f"{DATA} not found"}))
        return
    models = (
        Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0]) / "models"
    )
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
    identity = dlib_identity_loss()
    people = []
    for path in sorted(DATA.glob("*.mp4"))[:: max(1, len(list(DATA.glob("*.mp4"))) // args.videos)][
        : args.videos
    ]:
        faces = [square_face(f, detector, predictor, args.size) for f in frames_of(path, (0, 40))]
        if all(f is not None for f in faces):
            people.append((path.name, faces))
    scale = args.size / 256
    rows: dict[str, list[tuple[float, float]]] = {"blur_sigma2@256": [], "same_person_other_frame": [],
                                                   "different_person": []}  # fmt: skip
    with torch.no_grad():
        for i, (_, ((a, la), (a2, la2))) in enumerate(people):
            pairs = {
                "blur_sigma2@256": (blur(a, 2.0 * scale), la),
                "same_person_other_frame": (a2, la2),
                "different_person": people[(i + 1) % len(people)][1][0],
            }
            for name, (fake, fake_lm) in pairs.items():
                pixel = multiscale_l1(fake, a, LossConfig().pixel_scales).item()
                ident = identity(fake, a, fake_lm, la).item()
                rows[name].append((pixel, ident))
    summary = {
        name: {
            "pixel": round(statistics.mean(p for p, _ in vals), 4),
            "identity": round(statistics.mean(i for _, i in vals), 4),
            "pixel_over_identity": round(statistics.mean(p / i for p, i in vals), 4),
        }
        for name, vals in rows.items()
    }
    print(
        json.dumps(
            {"size": args.size, "videos": [n for n, _ in people], "terms_unweighted": summary}, indent=1
        )
    )


if __name__ == "__main__":
    main()
