"""Shared test helpers: one intra-op thread, tiny model configs, random images, open attention; and no
METAHEAD_* settings of the user's for any test.

Plain helpers are imported as `from conftest import ...` (tests/ has no __init__.py, so pytest puts it on
sys.path); a module opts into one thread with `pytestmark = pytest.mark.usefixtures("one_thread")`.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from metahead.config import ModelConfig, preset

# Settings of the browser test itself (tests/test_app_browser.py), which metahead never reads.
TEST_SETTINGS = ("METAHEAD_APP_MODEL", "METAHEAD_APP_SCREENSHOTS", "METAHEAD_LIVE_SECONDS")


@pytest.fixture(scope="session", autouse=True)
def without_user_settings():
    """The whole session runs without the METAHEAD_* variables of the user's shell (the weights files of
    the losses and of FID, the allocator switch: README, "Weight files"), so every test sees metahead's
    defaults; a test that wants one sets it itself. Session-wide, so module fixtures and the processes
    tests start see the same. The browser test's own settings stay."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("METAHEAD_") and n not in TEST_SETTINGS]:
            patch.delenv(name)
        yield


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests: on the shared, loaded 2-core machine tiny tensors run much
    faster on one thread than on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model_config(name: str = "cpu-64", channels: int = 8) -> ModelConfig:
    """The preset's resolutions and block structure with very few channels (fast on CPU)."""
    return dataclasses.replace(
        preset(name).model, base_channels=4, max_channels=channels, embedding_dim=channels
    )


class StandInFaceNetwork(nn.Module):
    """A small stand-in for dlib's face network: 150² chips in 0..255 -> 128 values; counts the chips."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 128, 15, stride=15)
        self.chips = 0

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        assert chips.shape[1:] == (3, 150, 150)
        self.chips += len(chips)
        return self.conv(chips / 255).mean(dim=(2, 3))


def random_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Uniform noise images in [-1, 1], (batch, 3, size, size), reproducible from the seed."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g) * 2 - 1


def open_attention(net: nn.Module) -> None:
    """γ starts at 0 (attention off); open it so that the attention path counts."""
    for name, p in net.named_parameters():
        if name.endswith("gamma"):
            nn.init.constant_(p, 0.5)


def _gloo_rank(rank: int, world: int, rendezvous: str, fn, args: tuple) -> None:
    import torch.distributed as torch_dist

    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
    finally:
        torch_dist.destroy_process_group()


def run_gloo_ranks(fn, rendezvous, *args, world: int = 2) -> None:
    """fn(rank, world, *args) in `world` CPU processes joined in a gloo process group (rendezvous: a file
    path that does not exist yet). fn must be a module-level function (the processes are spawned)."""
    import torch.multiprocessing as mp

    mp.spawn(_gloo_rank, args=(world, str(rendezvous), fn, args), nprocs=world, join=True)


def torchrun_tiny_training(
    data, run, processes: int, settings: tuple[str, ...], timeout: float
) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=processes -m metahead train --config tiny` on `data` into
    `run`, each of `settings` passed as --set, in a fresh interpreter with this checkout's src/ on the path;
    returns the finished process (its output captured)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "metahead", "train", "--config", "tiny", "--data", str(data), "--out", str(run),
               "--no-progress"]  # fmt: skip
    for setting in settings:
        command += ["--set", setting]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
