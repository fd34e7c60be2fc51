"""Process-group set-up for `torchrun` (one process per device, one or many nodes), and the episode stream.

Single process: `metahead train ...`. Several: `torchrun --nproc_per_node=N -m metahead train ...`; torchrun
sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT and this module reads them (the "env://" rendezvous),
so multi-node needs nothing beyond torchrun's own --nnodes/--rdzv-* arguments.
Only rank 0 writes logs and checkpoints; every rank draws its own episodes (DistributedSampler) with its
own seeds, and DDP averages the gradients.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as err:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from err


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` -> this process's GPU when there is one, else the CPU; `cuda` -> cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("train.device=cuda but no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(name)


def setup(device_name: str = "auto", timeout_minutes: float = 30.0) -> DistributedContext:
    """Read torchrun's environment; join the process group when there is more than one process.

    The backend is NCCL on CUDA and gloo on the CPU.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    device = pick_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not torch_dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch_dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(minutes=timeout_minutes),
        )
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def cleanup(ctx: DistributedContext) -> None:
    if ctx.is_distributed and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    if ctx.is_distributed:
        torch_dist.barrier()


def wrap(module: nn.Module, ctx: DistributedContext, ignore: tuple[str, ...] = ()) -> nn.Module:
    """DDP around `module` when distributed (gradients averaged over ranks in backward), else `module`.

    `ignore`: names of parameters DDP must leave alone (D's W, whose few-row sparse gradient the trainer
    exchanges itself: training/video_embeddings.py). Every other parameter of each wrapped network is used
    in the one backward pass that updates it, so find_unused_parameters stays off.
    """
    if not ctx.is_distributed:
        return module
    if ignore:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, list(ignore))
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def unwrap(module: nn.Module) -> nn.Module:
    """The network inside a DDP (and/or torch.compile) wrapper."""
    module = getattr(module, "module", module)
    return getattr(module, "_orig_mod", module)


def all_gather_objects(obj: Any, ctx: DistributedContext) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (a one-element list when not distributed)."""
    if not ctx.is_distributed:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    torch_dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, ctx: DistributedContext) -> Any:
    """Rank 0's `obj` on every rank."""
    if not ctx.is_distributed:
        return obj
    holder = [obj]
    torch_dist.broadcast_object_list(holder, src=0)
    return holder[0]


def fingerprint(*modules: nn.Module) -> str:
    """A hash of the modules' parameters and buffers (exact bytes), to check that all ranks agree."""
    digest = hashlib.blake2b(digest_size=16)
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_ranks_agree(fingerprints: list[str], parts: list[dict[str, str]] | None = None) -> None:
    """Raise when the ranks' networks differ: DDP keeps them identical, so a difference means a bug.
    `parts`: each rank's fingerprints per network ({"generator": ..., ...}), to say which differ."""
    differing = [rank for rank, f in enumerate(fingerprints) if f != fingerprints[0]]
    if differing:
        which = ""
        if parts:
            names = sorted(
                {name for rank in differing for name in parts[0] if parts[rank].get(name) != parts[0][name]}
            )
            which = f" ({', '.join(names)})" if names else ""
        raise RuntimeError(
            f"ranks {differing} hold different network weights{which} from rank 0: the processes fell out "
            "of sync"
        )


def check_same_on_every_rank(
    value: Any, ctx: DistributedContext, what: str, differences: Callable[[Any, Any], list[str]]
) -> None:
    """Raise on every rank when a rank's `value` differs from rank 0's; `differences(rank 0's, other)`
    says how, in words (e.g. another content loss because a node lacks an environment variable)."""
    gathered = all_gather_objects(value, ctx)
    for rank, other in enumerate(gathered[1:], start=1):
        found = differences(gathered[0], other)
        if found:
            raise RuntimeError(f"rank {rank} has another {what} than rank 0: {'; '.join(found)}")


def broadcast_flag(flag: bool, ctx: DistributedContext) -> bool:
    """Rank 0's `flag` on every rank (so that all ranks stop at the same step)."""
    if not ctx.is_distributed:
        return flag
    holder = torch.tensor([int(flag)], device=ctx.device)
    torch_dist.broadcast(holder, src=0)
    return bool(holder.item())


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and all GPUs)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """Each rank's own seed, so ranks draw different random numbers from one configured seed."""
    return seed + 1_000_003 * rank


# --- The episode stream ------------------------------------------------------------------------------
#
# Resuming must continue exactly, whatever the number of DataLoader workers. So nothing about an episode
# depends on which worker built it or on how far a generator had advanced: the sampler hands out
# (video index, episode seed) pairs, both functions of (seed, epoch, rank, position in the epoch) only,
# and the episode's frames are drawn with torch's generator seeded from the episode seed.


class SeededEpisodes(Dataset):
    """Wraps an episode dataset whose items draw their frames with torch's RNG: item (index, seed) is
    `dataset[index]` drawn with that seed. The caller's RNG state is left untouched."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class EpisodeSampler(Sampler):
    """Endless (video index, episode seed) pairs for this rank: epoch after epoch, DistributedSampler's
    shuffled, rank-sharded order, cut to whole batches, starting after `start_batch` batches."""

    def __init__(
        self, num_videos: int, ctx: DistributedContext, seed: int, batch_size: int, start_batch: int = 0
    ):
        self.batches_per_epoch = episodes_per_rank(num_videos, ctx.world_size) // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"the training split has {num_videos} videos: too few for batch_size={batch_size} on "
                f"{ctx.world_size} process(es); lower train.batch_size or add videos"
            )
        self._order = DistributedSampler(
            range(num_videos), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed
        )
        self._rank, self._seed, self._batch_size, self._start_batch = ctx.rank, seed, batch_size, start_batch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip = divmod(self._start_batch, self.batches_per_epoch)
        per_epoch = self.batches_per_epoch * self._batch_size
        while True:
            self._order.set_epoch(epoch)
            for position, index in enumerate(self._order):
                if position >= per_epoch:
                    break
                if position >= skip * self._batch_size:
                    yield index, _episode_seed(self._seed, epoch, self._rank, position)
            epoch, skip = epoch + 1, 0


def _episode_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    return int(
        np.random.SeedSequence([seed, epoch, rank, position]).generate_state(1, dtype=np.uint64)[0] >> 1
    )


def episodes_per_rank(num_videos: int, world_size: int) -> int:
    """How many episodes each rank draws per epoch (DistributedSampler pads to a multiple of the ranks)."""
    return -(-num_videos // world_size)


def episode_loader(
    dataset: Dataset,
    ctx: DistributedContext,
    batch_size: int,
    num_workers: int,
    seed: int,
    start_batch: int = 0,
) -> DataLoader:
    """An endless DataLoader of this rank's episode batches, resuming after `start_batch` batches.

    Each epoch visits every training video once across all ranks (a last partial batch is dropped);
    epoch = batch number // sampler.batches_per_epoch.
    """
    sampler = EpisodeSampler(len(dataset), ctx, seed, batch_size, start_batch)  # type: ignore[arg-type]
    return DataLoader(
        SeededEpisodes(dataset),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=True,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=num_workers > 0,
        # A private generator: creating the loader's iterator must not advance the global RNG.
        generator=torch.Generator().manual_seed(seed),
    )
