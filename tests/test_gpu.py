"""On a CUDA device (marker `gpu`, run on purpose: `pytest -m gpu`): meta-training in bf16 autocast, torchrun
with NCCL, fine-tuning, and a model trained on the GPU that renders the same on the CPU. Skipped without
CUDA."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import torchrun_tiny_training
from metahead import perf
from metahead.data.episodes import landmark_images
from metahead.landmarks.mean_face import random_faces
from metahead.models import Discriminator, Embedder, Generator
from metahead.training import checkpoint
from metahead.training.finetune import finetune
from test_finetune import few_shot_frames, tiny
from test_training import make_tiny_dataset, tiny_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")


def test_amp_auto_picks_bf16_on_a_cuda_device_that_has_it():
    expected = "bf16" if torch.cuda.is_bf16_supported() else "none"
    assert perf.resolve_amp("auto", torch.device("cuda")) == expected


def test_cuda_run_in_bf16_trains_and_its_model_renders_the_same_on_the_cpu(tiny_data, tmp_path):
    from metahead.training.meta import train

    run = train(
        tiny_config(tiny_data, tmp_path / "run", "train.device=cuda", "train.amp=bf16", "train.steps=6")
    )
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(r["loss/content"]) and math.isfinite(r["loss/discriminator"]) for r in records)

    # Written from CUDA tensors, the model file holds CPU ones: a plain torch.load works without CUDA.
    plain = torch.load(run / "model.pt", weights_only=True)
    assert all(v.device.type == "cpu" for net in ("embedder", "generator") for v in plain[net].values())
    # G computes on the CPU what it computes on the GPU (fp32 both, so only the kernels differ).
    embedder, generator, _, cfg = checkpoint.load_model(run / "model.pt", map_location="cpu")
    size = cfg.model.image_size
    landmarks = landmark_images(torch.from_numpy(random_faces(2, size, seed=3)), size)
    with torch.no_grad():
        embedding = embedder.eval()(landmarks, landmarks).mean(0, keepdim=True)
        on_cpu = generator.eval()(landmarks, embedding)
        on_gpu = generator.cuda()(landmarks.cuda(), embedding.cuda()).cpu()
    assert on_cpu.shape == (2, 3, size, size)
    assert torch.allclose(on_cpu, on_gpu, atol=2e-3), (on_cpu - on_gpu).abs().max()


def test_torchrun_one_rank_nccl(tiny_data, tmp_path):
    """The multi-GPU launch path (torchrun, NCCL, DDP) on the one GPU there is."""
    run = tmp_path / "run"
    settings = ("train.steps=3", "train.checkpoint_every=1", "train.device=cuda",
                "loss.identity_network=none", "train.num_workers=0")  # fmt: skip
    result = torchrun_tiny_training(tiny_data, run, 1, settings, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [s for s, _ in checkpoint.list_states(run)] == [1, 2, 3]
    state = checkpoint.load_state(checkpoint.latest_state(run))
    assert state["world_size"] == 1 and state["step"] == 3
    checkpoint.load_model(run / "model.pt")


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_finetuning_on_cuda_lowers_the_loss_on_its_frames(amp):
    torch.manual_seed(0)
    cfg = tiny("finetune.steps=12", "finetune.batch_size=2", "finetune.lr_generator=2e-3",
               "loss.adversarial_weight=0")  # fmt: skip
    nets = Embedder(cfg.model), Generator(cfg.model), Discriminator(cfg.model, num_videos=2)
    frames = few_shot_frames(2)
    result = finetune(*nets, frames, cfg, device="cuda", amp=amp, progress=False, evaluate_every=12)
    first, last = result.history[0]["reconstruction_l1"], result.history[-1]["reconstruction_l1"]
    assert last < 0.8 * first, (first, last)
    assert not any(p.requires_grad for p in result.generator.parameters())
