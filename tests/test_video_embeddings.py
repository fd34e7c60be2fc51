"""Where W (D's per-video embeddings) starts, and that it is the same on every rank (issue 19, items 1-2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import run_gloo_ranks
from metahead.config import preset
from metahead.data.episodes import EpisodeDataset
from metahead.models import Embedder, embed_person
from metahead.training import distributed
from metahead.training.video_embeddings import (
    broadcast_video_embeddings,
    embed_training_videos,
    initial_video_embeddings,
    initialise_video_embeddings,
    video_share,
)
from test_training import make_tiny_dataset

pytestmark = pytest.mark.usefixtures("one_thread")
SEED = 3


def _ctx(rank: int = 0, world: int = 1) -> distributed.DistributedContext:
    return distributed.DistributedContext(rank, rank, world, torch.device("cpu"))


def _episodes(data: Path) -> EpisodeDataset:
    cfg = preset("tiny")
    return EpisodeDataset(data, split="train", shots=cfg.train.shots, image_size=cfg.model.image_size, seed=0)


def _embedder(seed: int = 0) -> Embedder:
    torch.manual_seed(seed)
    return Embedder(preset("tiny").model)


@pytest.fixture(scope="module")
def episodes(tmp_path_factory) -> EpisodeDataset:
    return _episodes(make_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny", videos=5))


def test_table_is_e_of_each_video_whatever_the_workers(episodes):
    embedder = _embedder()
    table = embed_training_videos(embedder, episodes, _ctx(), seed=SEED, batch_size=2, progress=False)
    assert table.shape == (5, preset("tiny").model.embedding_dim)
    # Row i: E's mean embedding of the K frames drawn for video i with seed SEED + i.
    item = distributed.SeededEpisodes(episodes)[(3, SEED + 3)]
    with torch.no_grad():
        expected, _ = embed_person(embedder, item["images"][None, :-1], item["landmark_images"][None, :-1])
    torch.testing.assert_close(table[3], expected[0])
    with_workers = embed_training_videos(
        embedder, episodes, _ctx(), seed=SEED, batch_size=2, num_workers=2, progress=False
    )
    # The same frames; the sums may round differently (even two passes in one process can: the CPU
    # convolutions' code path depends on the buffers' alignment).
    torch.testing.assert_close(with_workers, table, atol=1e-5, rtol=1e-5)


def test_modes(episodes):
    embedder = _embedder()
    table = embed_training_videos(embedder, episodes, _ctx(), seed=SEED, progress=False)
    assert torch.equal(initial_video_embeddings("embedder", table), table)
    centred = initial_video_embeddings("centred", table)
    # Zero up to float32 rounding of values this large (the summation order differs between CPUs).
    rounding = 16 * torch.finfo(table.dtype).eps * float(table.abs().max())
    torch.testing.assert_close(centred.mean(dim=0), torch.zeros(table.shape[1]), atol=rounding, rtol=0)
    torch.testing.assert_close(centred[1] - centred[0], table[1] - table[0])
    weight = torch.nn.Embedding(5, table.shape[1]).weight
    before = weight.detach().clone()
    initialise_video_embeddings(weight, "random", embedder, episodes, _ctx(), seed=SEED, progress=False)
    assert torch.equal(weight, before)
    initialise_video_embeddings(weight, "centred", embedder, episodes, _ctx(), seed=SEED, progress=False)
    torch.testing.assert_close(weight, centred, atol=1e-5, rtol=1e-5)  # another pass: rounding may differ
    with pytest.raises(ValueError, match="train.video_embedding_init='zeros'"):
        initialise_video_embeddings(weight, "zeros", embedder, episodes, _ctx(), seed=SEED)


def test_shares_cover_every_video_once():
    shares = [video_share(7, _ctx(rank, 3)) for rank in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert video_share(1, _ctx(1, 2)) == []  # more ranks than videos: an empty share


def _rank_sets_up_w(rank: int, world: int, data: str, out: str, mode: str) -> None:
    """One gloo rank: its own E (rank 1's differs in the last bits, as different cuDNN kernels would make
    it) and its own initial W; then the trainer's set-up. Saves the W it ends with."""
    ctx = _ctx(rank, world)
    embedder = _embedder()
    if rank == 1:
        with torch.no_grad():
            for p in embedder.parameters():
                p.copy_(torch.nextafter(p, torch.full_like(p, 10.0)))
    episodes = _episodes(Path(data))
    torch.manual_seed(100 + rank)  # W's nn.Embedding init differs between the ranks
    weight = torch.nn.Embedding(len(episodes), embedder.cfg.embedding_dim).weight
    initialise_video_embeddings(weight, mode, embedder, episodes, ctx, seed=SEED, progress=False)
    broadcast_video_embeddings(weight, ctx)
    torch.save(weight.detach().clone(), Path(out) / f"w{rank}.pt")


@pytest.mark.parametrize("mode", ["centred", "random"])
def test_two_gloo_ranks_end_set_up_with_identical_w(tmp_path, mode):
    data = make_tiny_dataset(tmp_path / "data", videos=5)
    run_gloo_ranks(_rank_sets_up_w, tmp_path / "rendezvous", str(data), str(tmp_path), mode)
    w0, w1 = (torch.load(tmp_path / f"w{rank}.pt", weights_only=True) for rank in range(2))
    assert torch.equal(w0, w1)
    if mode == "centred":  # rank 0's rows from rank 0's E, rank 1's from rank 1's: one table, centred
        table = embed_training_videos(_embedder(), _episodes(data), _ctx(), seed=SEED, progress=False)
        torch.testing.assert_close(w0[0::2], (table - table.mean(dim=0))[0::2], atol=1e-5, rtol=1e-4)
