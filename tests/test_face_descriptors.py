"""training/face_descriptors.py: E's identity prior computes a training frame's descriptor once."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch

from conftest import StandInFaceNetwork, random_images
from metahead.config import preset
from metahead.models import Embedder, embed_person
from metahead.models.embedder import FaceDescriptorPrior
from metahead.training import face_descriptors as cache_module
from metahead.training.face_descriptors import FrameDescriptorCache, measure_standardisation

pytestmark = pytest.mark.usefixtures("one_thread")


def _video_frames(num_videos: int = 3, frames: int = 5, size: int = 32) -> torch.Tensor:
    return random_images(num_videos * frames, size, 7).view(num_videos, frames, 3, size, size)


def _episode(videos: torch.Tensor, video_index: list[int], frame_indices: list[list[int]]):
    index = torch.tensor(video_index)
    frames = torch.tensor(frame_indices)
    return videos[index[:, None], frames], index, frames


def test_cache_returns_the_priors_descriptors_and_computes_each_frame_once() -> None:
    torch.manual_seed(0)
    network = StandInFaceNetwork()
    prior = FaceDescriptorPrior(32, 16, network=network)
    videos = _video_frames()
    cache = FrameDescriptorCache(prior, [5, 5, 5])
    shots, index, frames = _episode(videos, [0, 2], [[0, 3], [4, 1]])
    first = cache(shots, index, frames)
    torch.testing.assert_close(first, prior.descriptors(shots.flatten(0, 1)).view(2, 2, -1))
    assert network.chips == 4 + 4 and cache.computed == 4  # 4 in the cache, 4 in the check above
    # the same frames again, in another episode with one new frame: only the new one is computed
    shots2, index2, frames2 = _episode(videos, [2, 0], [[1, 2], [3, 0]])
    second = cache(shots2, index2, frames2)
    assert cache.computed == 5 and cache.looked_up == 8
    torch.testing.assert_close(second[0, 0], first[1, 1])
    torch.testing.assert_close(second[1], first[0].flip(0))
    torch.testing.assert_close(second, prior.descriptors(shots2.flatten(0, 1)).view(2, 2, -1))


def test_augmented_episodes_are_computed_afresh_and_not_kept() -> None:
    prior = FaceDescriptorPrior(32, 16, network=StandInFaceNetwork())
    videos = _video_frames()
    cache = FrameDescriptorCache(prior, [5, 5, 5])
    shots, index, frames = _episode(videos, [1], [[0, 1]])
    mirrored = shots.flip(-1)
    got = cache(mirrored, index, frames, augmented=torch.tensor([True]))
    torch.testing.assert_close(got[0], prior.descriptors(mirrored[0]))
    assert not cache.known.any()
    plain = cache(shots, index, frames, augmented=torch.tensor([False]))
    torch.testing.assert_close(plain[0], prior.descriptors(shots[0]))
    assert not torch.allclose(plain, got)  # the mirrored frames' descriptors did not stand in
    assert int(cache.known.sum()) == 2 and cache.computed == 4


def test_cache_refuses_frames_outside_its_videos_and_is_off_without_a_prior_or_for_huge_sets(monkeypatch):
    prior = FaceDescriptorPrior(32, 16, network=StandInFaceNetwork())
    cache = FrameDescriptorCache(prior, [5, 2])
    shots, _, _ = _episode(_video_frames(), [0], [[0, 1]])
    with pytest.raises(ValueError, match="beyond its video"):
        cache(shots, torch.tensor([1]), torch.tensor([[0, 2]]))
    with pytest.raises(ValueError, match="frame_indices"):
        cache(shots, torch.tensor([0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="at least one"):
        FrameDescriptorCache(prior, [])
    assert FrameDescriptorCache.for_training(None, [5, 2], "cpu") is None
    assert FrameDescriptorCache.for_training(prior, [5, 2], "cpu") is not None
    monkeypatch.setattr(cache_module, "MAX_CACHED_FRAMES", 6)
    assert FrameDescriptorCache.for_training(prior, [5, 2], "cpu") is None


def test_embedder_takes_given_descriptors_as_its_own() -> None:
    cfg = dataclasses.replace(preset("tiny").model, identity_prior="dlib")
    torch.manual_seed(0)
    embedder = Embedder(cfg, face_network=StandInFaceNetwork()).eval()
    with torch.no_grad():
        embedder.identity_prior.projection.weight.normal_()
    frames, landmarks = random_images(4, 32, 1), random_images(4, 32, 2)
    shape = (2, 2, 3, 32, 32)
    descriptors = embedder.identity_prior.descriptors(frames)
    with torch.no_grad():
        computed, _ = embed_person(embedder, frames.view(shape), landmarks.view(shape))
        given, _ = embed_person(
            embedder, frames.view(shape), landmarks.view(shape), descriptors.view(2, 2, -1)
        )
        other, _ = embed_person(
            embedder, frames.view(shape), landmarks.view(shape), descriptors.flip(0).view(2, 2, -1)
        )
    torch.testing.assert_close(given, computed)
    assert not torch.allclose(other, computed)  # the given descriptors are what E used
    with pytest.raises(ValueError, match="face descriptors of shape"):
        embedder(frames, landmarks, face_descriptors=descriptors[:3])
    with pytest.raises(ValueError, match="no identity prior"):
        Embedder(preset("tiny").model)(frames, landmarks, face_descriptors=descriptors)


def test_standardised_prior_projects_descriptors_minus_their_mean_over_their_spread() -> None:
    torch.manual_seed(0)
    prior = FaceDescriptorPrior(32, 16, network=StandInFaceNetwork(), standardised=True)
    with torch.no_grad():
        prior.projection.weight.normal_()
    descriptors = torch.randn(6, 128) * torch.linspace(0.5, 2.0, 128) + 3.0
    images = random_images(6, 32, 3)  # stand-ins: the descriptors are given
    # until it is measured the standardisation is the identity: a fresh model renders as one without it
    torch.testing.assert_close(prior(images, descriptors), prior.projection(descriptors))
    prior.set_standardisation(descriptors)
    standardised = (descriptors - descriptors.mean(0)) / descriptors.std(0)
    torch.testing.assert_close(prior(images, descriptors), prior.projection(standardised))
    torch.testing.assert_close(standardised.mean(0), torch.zeros(128), atol=1e-5, rtol=0)
    # the measured statistics are part of the model (saved and loaded), and only in a standardised prior
    assert {"descriptor_mean", "descriptor_scale"} <= set(prior.state_dict())
    plain = FaceDescriptorPrior(32, 16, network=StandInFaceNetwork())
    assert not any(k.startswith("descriptor_") for k in plain.state_dict())
    with pytest.raises(ValueError, match="no standardisation"):
        plain.set_standardisation(descriptors)
    with pytest.raises(ValueError, match="at least 2 frames"):
        prior.set_standardisation(descriptors[:1])
    constant = descriptors.clone()
    constant[:, 0] = 1.0  # a component that never varies is not divided by ~0
    prior.set_standardisation(constant)
    assert torch.isfinite(prior(images, constant)).all()


class _CountingFrames:
    """A stand-in training set: `records` with frame counts, and read_frames that records what it read."""

    def __init__(self, frame_counts: list[int]) -> None:
        self.records = [types.SimpleNamespace(num_frames=n) for n in frame_counts]
        self.read: list[tuple[int, list[int]]] = []

    def read_frames(self, index: int, frame_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        self.read.append((index, list(frame_ids)))
        return random_images(len(frame_ids), 32, index), torch.zeros(len(frame_ids), 68, 2)


def test_standardisation_reads_frames_spread_over_every_video_and_caps_a_large_corpus() -> None:
    prior = FaceDescriptorPrior(32, 16, network=StandInFaceNetwork(), standardised=True)
    small = _CountingFrames([10, 3, 7])
    assert measure_standardisation(prior, small, batch_size=5) == 4 + 3 + 4
    assert small.read == [(0, [0, 3, 6, 9]), (1, [0, 1, 2]), (2, [0, 2, 4, 6])]
    # more videos than max_frames / frames_per_video: fewer frames each, then one frame of spread videos
    large = _CountingFrames([10] * 12)
    assert measure_standardisation(prior, large, max_frames=24) == 24
    assert [frames for _, frames in large.read] == [[0, 9]] * 12
    huge = _CountingFrames([10] * 50)
    assert measure_standardisation(prior, huge, max_frames=10) == 10
    assert [index for index, _ in huge.read] == [0, 5, 11, 16, 22, 27, 33, 38, 44, 49]
    assert {tuple(frames) for _, frames in huge.read} == {(0,)}
