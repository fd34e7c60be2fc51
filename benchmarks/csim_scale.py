"""What a CSIM value means on a prepared dataset: dlib's identity cosine between real frames of the same
video, of the same person's other videos, and of different people. Prints a table.

CSIM (docs/face-identity.md) is high for any two faces: a result's 0.90 is far from the same person's 0.96
and not far above two strangers'. This gives the scale the results tables are read against, e.g. where FF's
CSIM sits between "another person" and "the same person in another video".

    .venv/bin/python benchmarks/csim_scale.py /work/data/real-dev-128 [--frames 4] [--split test]
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch
import torch.nn.functional as F

from metahead.data.format import VideoReader, read_manifest
from metahead.evaluation.csim import face_descriptors
from metahead.models.face_identity import FaceIdentityNet, default_dlib_model_path


def video_descriptors(root: str, split: str | None, frames: int) -> dict[str, tuple[str, torch.Tensor]]:
    """{video: (person, unit descriptors (frames, 128))} of `frames` frames spread over each video."""
    net = FaceIdentityNet.from_dlib_file(default_dlib_model_path()).eval()
    found = {}
    for record in read_manifest(root, split):
        reader = VideoReader(root, record.path)
        indices = np.linspace(0, len(reader) - 1, frames).round().astype(int).tolist()
        images = torch.from_numpy(reader.read_frames(indices)).permute(0, 3, 1, 2).float()
        landmarks = torch.from_numpy(reader.read_landmarks(indices)).float()
        descriptors = face_descriptors(net, images, landmarks, value_range=(0.0, 255.0))
        found[record.video] = (record.identity, F.normalize(descriptors.double(), dim=1))
    return found


RELATIONS = ("same video", "same person, other video", "different people")


def csim_by_relation(descriptors: dict[str, tuple[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    """Every pair of frames' CSIM, grouped: same video (distinct frames), same person, different people."""
    groups: dict[str, list[float]] = {name: [] for name in RELATIONS}
    for a, b in itertools.combinations_with_replacement(sorted(descriptors), 2):
        (person_a, frames_a), (person_b, frames_b) = descriptors[a], descriptors[b]
        cosines = frames_a @ frames_b.T
        if a == b:
            groups[RELATIONS[0]] += cosines[~torch.eye(len(frames_a), dtype=torch.bool)].tolist()
        elif person_a == person_b:
            groups[RELATIONS[1]] += cosines.flatten().tolist()
        else:
            groups[RELATIONS[2]] += cosines.flatten().tolist()
    return {name: np.array(values) for name, values in groups.items() if values}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", help="a prepared dataset (`metahead prepare`)")
    parser.add_argument("--split", default=None, help="only this split (default: every video)")
    parser.add_argument("--frames", type=int, default=4, help="frames per video, spread over it")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    descriptors = video_descriptors(args.data, args.split, args.frames)
    people = len({person for person, _ in descriptors.values()})
    print(f"{args.data}: {len(descriptors)} videos of {people} people, {args.frames} frames each")
    print("| frames compared | CSIM mean | sd | 5th pct | 95th pct | pairs |")
    print("|---|---|---|---|---|---|")
    for name, values in csim_by_relation(descriptors).items():
        low, high = np.percentile(values, [5, 95])
        spread = f"{values.mean():.3f} | {values.std():.3f} | {low:.3f} | {high:.3f}"
        print(f"| {name} | {spread} | {len(values)} |")


if __name__ == "__main__":
    main()
