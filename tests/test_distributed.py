"""Multi-process training: `torchrun --nproc_per_node=2 -m metahead train` with gloo on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_gloo_ranks, torchrun_tiny_training
from metahead.config import ExperimentConfig
from metahead.training import checkpoint, distributed
from test_training import make_tiny_dataset


def test_ranks_that_differ_are_reported():
    distributed.check_ranks_agree(["a", "a", "a"])
    with pytest.raises(RuntimeError, match=r"ranks \[2\]"):
        distributed.check_ranks_agree(["a", "a", "b"])
    parts = [{"embedder": "e", "discriminator": "d"}] * 2 + [{"embedder": "e", "discriminator": "x"}]
    with pytest.raises(RuntimeError, match=r"ranks \[2\] hold different network weights \(discriminator\)"):
        distributed.check_ranks_agree(["a", "a", "b"], parts)


def test_fingerprint_sees_one_changed_number():
    net = torch.nn.Linear(3, 2)
    net.register_buffer("scale", torch.tensor(2.0))  # 0-dim tensors count too
    before = distributed.fingerprint(net)
    net.scale.fill_(3.0)
    assert distributed.fingerprint(net) != before
    before = distributed.fingerprint(net)
    with torch.no_grad():
        net.weight[1, 2] = torch.nextafter(net.weight[1, 2], torch.tensor(10.0))
    assert distributed.fingerprint(net) != before


def _rank_checks_its_loss(rank: int, world: int, out: str) -> None:
    """Rank 1 lacks the VGG19 file rank 0 has (an environment variable missing on one node)."""
    from metahead.losses import content_loss_differences

    ctx = distributed.DistributedContext(rank, rank, world, torch.device("cpu"))
    terms = {"vgg19": {"weight": 0.01}} if rank == 0 else {"pixel": {"weight": 1.0}}
    record = {"terms": terms, "sha256": {"vgg19": "ab12"} if rank == 0 else {}, "paths": {}}
    try:
        distributed.check_same_on_every_rank(record, ctx, "content loss", content_loss_differences)
        message = "no error"
    except RuntimeError as err:
        message = str(err)
    Path(out, f"rank{rank}.txt").write_text(message)


def test_a_rank_with_another_content_loss_stops_every_rank(tmp_path):
    run_gloo_ranks(_rank_checks_its_loss, tmp_path / "rendezvous", str(tmp_path))
    messages = [(tmp_path / f"rank{rank}.txt").read_text() for rank in range(2)]
    assert messages[0] == messages[1]
    assert messages[0].startswith(
        "rank 1 has another content loss than rank 0: sha256: {'vgg19': 'ab12'} -> {}"
    )
    assert "terms: {'vgg19'" in messages[0]


def test_single_process_context_without_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = distributed.setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed) == (0, 1, True, False)
    net = torch.nn.Linear(2, 2)
    assert distributed.wrap(net, ctx) is net
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        distributed.setup("cpu")


def test_torchrun_two_ranks_gloo_agree_and_share_w(tmp_path):
    """Two CPU processes, a different video each per step: both W rows move on both ranks, and the ranks'
    weights are byte-identical at every checkpoint (train checks that before rank 0 writes it)."""
    data = make_tiny_dataset(tmp_path / "data", videos=4)
    run = tmp_path / "run"
    settings = ("train.steps=3", "train.checkpoint_every=1", "train.keep_checkpoints=0", "train.device=cpu",
                "loss.identity_network=none", "train.num_workers=0")  # fmt: skip
    result = torchrun_tiny_training(data, run, 2, settings, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    states = [checkpoint.load_state(path) for _, path in checkpoint.list_states(run)]
    assert [s["step"] for s in states] == [1, 2, 3]
    from metahead.models import Discriminator, Embedder, Generator

    for state in states:
        assert state["world_size"] == 2 and len(state["rng"]) == 2
        # The recorded fingerprint (agreed by both ranks) is the one of the weights rank 0 saved.
        cfg = ExperimentConfig.from_dict(state["config"])
        nets = Embedder(cfg.model), Generator(cfg.model), Discriminator(cfg.model, state["num_videos"])
        for net, key in zip(nets, ("embedder", "generator", "discriminator")):
            net.load_state_dict(state["networks"][key])
        assert distributed.fingerprint(*nets) == state["fingerprint"]
    # Batch 1 per rank: each step moves exactly two rows of W, one from each rank's episode.
    w = [s["networks"]["discriminator"]["video_embeddings.weight"] for s in states]
    for before, after in zip(w, w[1:]):
        assert (after != before).any(dim=1).sum() == 2
    # Rank 0 alone logs: one record per step.
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
