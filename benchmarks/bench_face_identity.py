"""The PyTorch dlib face-recognition network against dlib itself. Prints JSON.

speed:     faces/s (fp32 and bf16 autocast, batch 1 and 32; network alone and with alignment) against
           dlib's compute_face_descriptor, on skimage's astronaut.
agreement: descriptor L2 to dlib's on real faces (astronaut, the real-dev stills, frames 0/30/60/90 of
           every real-dev clip): (a) our network on dlib's chips, (b) our alignment + network, with and
           without 8-bit quantisation.

    .venv/bin/python benchmarks/bench_face_identity.py [--what speed|agreement|both] [--device cuda]
        [--data ../shared/data/real-dev] [--out results.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import dlib
import numpy as np
import skimage.data
import torch
from PIL import Image

from metahead.fileio import atomic_write_text
from metahead.models.face_align import align_face_chips, face_chip_similarity
from metahead.models.face_identity import DLIB_SHAPE_PREDICTOR_68, FaceIdentityNet, default_dlib_model_path

REPO = Path(__file__).resolve().parents[1]
FRAMES = (0, 30, 60, 90)


def faces_per_second(run: Callable[[], object], faces: int, repeats: int, sync: Callable[[], None]) -> float:
    run()  # warm-up
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - start)
    return faces / best


def speed(net: FaceIdentityNet, models: tuple, device: torch.device, repeats: int) -> dict[str, float]:
    detector, predictor, recogniser = models
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    image = skimage.data.astronaut()
    shapes = [predictor(image, face) for face in detector(image, 1)]
    shapes = (shapes * 32)[:32]
    dlib_chips = [dlib.get_face_chip(image, shape, size=150, padding=0.25) for shape in shapes]
    chips = torch.from_numpy(np.stack(dlib_chips)).permute(0, 3, 1, 2).float().contiguous().to(device)
    images = torch.from_numpy(image).permute(2, 0, 1)[None].float().to(device).repeat(32, 1, 1, 1)
    landmarks = torch.tensor([[[p.x, p.y] for p in shape.parts()] for shape in shapes], dtype=torch.float32)
    expected = np.array([np.array(d) for d in recogniser.compute_face_descriptor(dlib_chips)])

    results: dict[str, float] = {}
    with torch.no_grad():
        for precision in ("fp32", "bf16"):
            autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
            with autocast:
                descriptors = net(chips).float().cpu().numpy()
            results[f"{precision}_max_l2_vs_dlib"] = float(
                np.linalg.norm(descriptors - expected, axis=1).max()
            )
            for batch in (1, 32):

                def network_only(batch: int = batch, autocast=autocast) -> None:
                    with autocast:
                        net(chips[:batch])

                def with_alignment(batch: int = batch, autocast=autocast) -> None:
                    aligned = align_face_chips(images[:batch], landmarks[:batch])
                    with autocast:
                        net(aligned)

                n = repeats * (3 if batch == 1 else 1)
                results[f"ours_{precision}_network_b{batch}_faces_per_s"] = faces_per_second(
                    network_only, batch, n, sync
                )
                results[f"ours_{precision}_aligned_b{batch}_faces_per_s"] = faces_per_second(
                    with_alignment, batch, n, sync
                )
    for batch in (1, 32):
        detections = dlib.full_object_detections(shapes[:batch])
        results[f"dlib_image_b{batch}_faces_per_s"] = faces_per_second(
            lambda detections=detections: recogniser.compute_face_descriptor(image, detections),
            batch,
            repeats,
            lambda: None,
        )
        results[f"dlib_chips_b{batch}_faces_per_s"] = faces_per_second(
            lambda batch=batch: recogniser.compute_face_descriptor(dlib_chips[:batch]),
            batch,
            repeats,
            lambda: None,
        )
    return results


def real_images(data: Path) -> Iterator[tuple[str, np.ndarray]]:
    yield "astronaut", skimage.data.astronaut()
    for path in sorted((data / "image").glob("*")):
        if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
            yield path.name, np.array(Image.open(path).convert("RGB"))
    for path in sorted((data / "video").glob("*.mp4")):
        with av.open(str(path)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index in FRAMES:
                    yield f"{path.name}#{index}", frame.to_ndarray(format="rgb24")
                if index >= max(FRAMES):
                    break


def pyramid_levels(landmarks: torch.Tensor, size: int = 150) -> int:
    rotation_scale, _ = face_chip_similarity(landmarks.double())
    side, levels = size * rotation_scale.abs().item(), 0
    while ((side + 1) / 2) ** 2 > size * size:
        side, levels = (side + 1) / 2, levels + 1
    return levels


def agreement(net: FaceIdentityNet, models: tuple, device: torch.device, data: Path) -> dict[str, object]:
    detector, predictor, recogniser = models
    worst: dict[str, tuple[float, str]] = {}
    levels: collections.Counter[int] = collections.Counter()
    images = faces = identical_chips = 0
    for name, image in real_images(data):
        images += 1
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().to(device)
        for face in detector(image, 1):
            faces += 1
            shape = predictor(image, face)
            landmarks = torch.tensor([[[p.x, p.y] for p in shape.parts()]], dtype=torch.float32)
            levels[pyramid_levels(landmarks)] += 1
            expected = np.array(recogniser.compute_face_descriptor(image, shape))
            dlib_chip = dlib.get_face_chip(image, shape, size=150, padding=0.25)
            quantized = align_face_chips(pixels, landmarks, quantize=True)
            identical_chips += int(np.array_equal(quantized[0].permute(1, 2, 0).cpu().numpy(), dlib_chip))
            chips = {
                "network_on_dlib_chips": torch.from_numpy(dlib_chip)
                .permute(2, 0, 1)[None]
                .float()
                .to(device),
                "end_to_end_quantized": quantized,
                "end_to_end_continuous": align_face_chips(pixels, landmarks),
            }
            with torch.no_grad():
                for key, chip in chips.items():
                    error = float(np.linalg.norm(net(chip)[0].double().cpu().numpy() - expected))
                    if error >= worst.get(key, (-1.0, ""))[0]:
                        worst[key] = (error, name)
    return {
        "data": str(data),
        "images": images,
        "faces": faces,
        "chips_identical_to_dlib": identical_chips,
        "faces_by_pyramid_levels": dict(sorted(levels.items())),
        **{f"worst_l2_{key}": value for key, (value, _) in worst.items()},
        **{f"worst_l2_{key}_at": where for key, (_, where) in worst.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", choices=("speed", "agreement", "both"), default="speed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "real-dev")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    device = torch.device(args.device)
    load_before = os.getloadavg()
    models = (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(default_dlib_model_path(DLIB_SHAPE_PREDICTOR_68))),
        dlib.face_recognition_model_v1(str(default_dlib_model_path())),
    )
    net = FaceIdentityNet.from_dlib_file().to(device)
    report: dict[str, object] = {
        "benchmark": "face_identity",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "dlib": dlib.__version__,
    }
    if args.what in ("speed", "both"):
        report["note"] = (
            "faces/s = best of repeats; 'aligned' includes align_face_chips from the full 512x512 image; "
            "dlib_image = compute_face_descriptor(image, shapes) (alignment included), "
            "dlib_chips = on its chips"
        )
        report.update({k: float(f"{v:.4g}") for k, v in speed(net, models, device, args.repeats).items()})
    if args.what in ("agreement", "both"):
        if not args.data.is_dir():
            raise SystemExit(f"{args.data}: real-dev data folder not found (--data)")
        report["agreement"] = agreement(net, models, device, args.data)
    report["load_average_before"] = [round(x, 2) for x in load_before]
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
