"""W's own update: D's per-video embedding table (a row per training video), a few rows per step.

W has num_videos × N entries (~150k × 512 for VoxCeleb2), yet a step touches only the rows of its
episodes' videos. So D builds W with sparse gradients (`Discriminator(..., sparse_grad=True)`), DDP leaves
W alone, and every step:

1. each rank takes its rows' gradients from W.grad (a sparse tensor: a few rows);
2. the ranks exchange them (`exchange_row_gradients`: all-gather of B×N floats per rank, not an all-reduce
   of the whole table) and average them as DDP would: the sum over ranks divided by the world size;
3. every rank applies the same `RowwiseAdam` step to those rows, so W stays identical everywhere.

RowwiseAdam is exactly torch.optim.Adam on the dense table when β1 = 0 (the lab's betas, our default): an
unvisited row then has no first moment, so dense Adam leaves it in place and only decays its second
moment by β2 per step; RowwiseAdam applies that decay, β2^(steps since the last visit), when the row is
next visited. With β1 > 0 it is "lazy" Adam: a row moves only on visits (dense Adam would keep moving it
on its momentum). docs/networks.md has the measurements that motivated this.

Where W starts (train.video_embedding_init) is set up here too: `embed_training_videos` runs the initial E
over K frames of every training video, sharded over ranks and DataLoader workers, and returns the whole
table, identical on every rank; `initial_video_embeddings` applies the mode to it; and
`broadcast_video_embeddings` makes W rank 0's on every rank (once, after set-up or resume). From there the
row exchange keeps it identical: every rank applies the same rows and gradients in the same order.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from metahead.config import VIDEO_EMBEDDING_INITS
from metahead.models import Embedder, embed_person
from metahead.training.distributed import DistributedContext, SeededEpisodes


class RowwiseAdam:
    """Adam over the rows of one embedding table, touching only the rows given to `step`."""

    def __init__(self, weight: nn.Parameter, lr: float, betas: tuple[float, float], eps: float = 1e-8):
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Adam betas must lie in [0, 1), got {betas}")
        self.weight, self.lr, self.betas, self.eps = weight, lr, tuple(betas), eps
        self.step_count = 0
        self.exp_avg_sq = torch.zeros_like(weight, memory_format=torch.contiguous_format)
        self.exp_avg = torch.zeros_like(self.exp_avg_sq) if betas[0] > 0 else None
        self.last_step = torch.zeros(weight.shape[0], dtype=torch.long, device=weight.device)

    @torch.no_grad()
    def step(self, rows: torch.Tensor, grads: torch.Tensor) -> None:
        """One Adam step (for every row: it counts as a step of the whole table) with gradient `grads`
        (R, N) for the distinct `rows` (R,) and zero for all others."""
        self.step_count += 1
        if rows.numel() == 0:
            return
        beta1, beta2 = self.betas
        grads = grads.to(self.exp_avg_sq.dtype)
        # Steps since each row's last visit, this one included: the second moment decayed once per step.
        missed = (self.step_count - self.last_step[rows]).to(grads.dtype).unsqueeze(1)
        exp_avg_sq = self.exp_avg_sq[rows] * beta2**missed + (1 - beta2) * grads * grads
        self.exp_avg_sq[rows] = exp_avg_sq
        if self.exp_avg is None:
            exp_avg = grads
        else:
            exp_avg = self.exp_avg[rows] * beta1**missed + (1 - beta1) * grads
            self.exp_avg[rows] = exp_avg
        self.last_step[rows] = self.step_count
        # torch.optim.Adam's arithmetic, row by row.
        bias_correction1 = 1 - beta1**self.step_count
        bias_correction2_sqrt = (1 - beta2**self.step_count) ** 0.5
        denom = exp_avg_sq.sqrt() / bias_correction2_sqrt + self.eps
        self.weight[rows] = self.weight[rows] - (self.lr / bias_correction1) * exp_avg / denom

    def state_dict(self) -> dict[str, Any]:
        state = {"step": self.step_count, "exp_avg_sq": self.exp_avg_sq, "last_step": self.last_step,
                 "lr": self.lr, "betas": self.betas, "eps": self.eps}  # fmt: skip
        if self.exp_avg is not None:
            state["exp_avg"] = self.exp_avg
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore moments and step; lr/betas/eps stay as constructed (the config may have changed them)."""
        if state["exp_avg_sq"].shape != self.exp_avg_sq.shape:
            raise ValueError(
                f"saved W optimiser state has shape {tuple(state['exp_avg_sq'].shape)}, "
                f"W has {tuple(self.exp_avg_sq.shape)}"
            )
        self.step_count = int(state["step"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.last_step.copy_(state["last_step"])
        if self.exp_avg is not None:
            if "exp_avg" in state:
                self.exp_avg.copy_(state["exp_avg"])
            else:
                self.exp_avg.zero_()


def row_gradients(weight: nn.Parameter) -> tuple[torch.Tensor, torch.Tensor]:
    """(distinct rows (R,), their summed gradients (R, N)) from W.grad, sparse or dense; empty if none."""
    grad = weight.grad
    if grad is None:
        return torch.zeros(0, dtype=torch.long, device=weight.device), weight.new_zeros(0, weight.shape[1])
    if grad.is_sparse:
        grad = grad.coalesce()
        return grad.indices()[0], grad.values()
    rows = grad.abs().sum(dim=1).nonzero().squeeze(1)
    return rows, grad[rows]


def exchange_row_gradients(
    rows: torch.Tensor, grads: torch.Tensor, ctx: DistributedContext
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average W's row gradients over ranks as DDP averages dense gradients: rows touched on any rank,
    with the sum of all ranks' gradients for them divided by the world size."""
    if not ctx.is_distributed:
        return rows, grads
    # Ranks may hold different numbers of rows: pad to the largest count (row -1 marks padding).
    count = torch.tensor([rows.numel()], device=rows.device)
    torch_dist.all_reduce(count, op=torch_dist.ReduceOp.MAX)
    capacity = int(count.item())
    padded_rows = torch.full((capacity,), -1, dtype=torch.long, device=rows.device)
    padded_rows[: rows.numel()] = rows
    padded_grads = grads.new_zeros(capacity, grads.shape[1])
    padded_grads[: rows.numel()] = grads
    all_rows = padded_rows.new_empty(ctx.world_size * capacity)
    all_grads = padded_grads.new_empty(ctx.world_size * capacity, grads.shape[1])
    _all_gather_single(all_rows, padded_rows)
    _all_gather_single(all_grads, padded_grads)
    keep = all_rows >= 0
    unique_rows, position = torch.unique(all_rows[keep], return_inverse=True)
    # Sum rank by rank: a rank's rows are distinct, so each addition is race-free and every rank adds in
    # the same order (index_add_ on CUDA adds atomically, in no fixed order, and ranks would drift apart).
    summed = all_grads.new_zeros(unique_rows.numel(), grads.shape[1])
    kept_grads = all_grads[keep]
    kept_rank = torch.arange(ctx.world_size, device=rows.device).repeat_interleave(capacity)[keep]
    for rank in range(ctx.world_size):
        mine = kept_rank == rank
        summed[position[mine]] += kept_grads[mine]
    return unique_rows, summed / ctx.world_size


def _all_gather_single(output: torch.Tensor, local: torch.Tensor) -> None:
    # Newer torch calls all_gather_into_tensor all_gather_single (and warns on the old name).
    gather = getattr(torch_dist, "all_gather_single", None) or torch_dist.all_gather_into_tensor
    gather(output, local)


# --- Where W starts ------------------------------------------------------------------------------------


def video_share(num_videos: int, ctx: DistributedContext) -> list[int]:
    """The training videos this rank embeds: every world_size-th, from its rank on."""
    return list(range(ctx.rank, num_videos, ctx.world_size))


@torch.no_grad()
def embed_training_videos(
    embedder: Embedder,
    episodes: Dataset,
    ctx: DistributedContext,
    *,
    seed: int,
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """(num_videos, N): row i is E's ê_i, the mean embedding of K frames of training video i, the same
    table on every rank.

    `episodes`: the EpisodeDataset (item i: K+1 frames of video i, drawn with torch's RNG; the first K are
    embedded). Video i's frames are drawn with seed + i, so which frames are embedded depends neither on
    the number of ranks nor on the DataLoader workers. Each rank embeds its share (`video_share`), its
    workers decode, and one all-gather assembles the table: every row is computed once, by one rank, and
    copied to all. A progress bar on rank 0 counts its share.
    """
    num_videos = len(episodes)  # type: ignore[arg-type]
    share = video_share(num_videos, ctx)
    loader = DataLoader(
        SeededEpisodes(episodes),
        batch_size=batch_size,
        sampler=[(index, seed + index) for index in share],
        num_workers=num_workers,
        pin_memory=ctx.device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),  # leaves the global RNG alone
    )
    rows: list[torch.Tensor] = []
    from tqdm import tqdm

    with tqdm(
        total=len(share),
        unit="video",
        desc=f"W: embedding training videos (rank 0's {len(share)} of {num_videos})",
        disable=not (progress and ctx.is_main),
        dynamic_ncols=True,
    ) as bar:
        for batch in loader:
            images = batch["images"][:, :-1].to(ctx.device, non_blocking=True)
            landmark_images = batch["landmark_images"][:, :-1].to(ctx.device, non_blocking=True)
            person_embedding, _ = embed_person(embedder, images, landmark_images)
            rows.append(person_embedding.float())
            bar.update(len(person_embedding))
    dim = embedder.cfg.embedding_dim
    mine = torch.cat(rows) if rows else torch.zeros(0, dim, device=ctx.device)
    if not ctx.is_distributed:
        return mine
    # Rank r's j-th row is video r + j * world_size; pad every share to the longest for the all-gather.
    per_rank = -(-num_videos // ctx.world_size)
    padded = mine.new_zeros(per_rank, dim)
    padded[: len(mine)] = mine
    gathered = padded.new_empty(ctx.world_size * per_rank, dim)
    _all_gather_single(gathered, padded)
    by_rank = gathered.view(ctx.world_size, per_rank, dim).transpose(0, 1).reshape(-1, dim)
    return by_rank[:num_videos].contiguous()


def initial_video_embeddings(mode: str, embeddings: torch.Tensor) -> torch.Tensor:
    """W's starting rows from E's table ê (num_videos, N): "embedder" -> ê; "centred" -> ê minus its mean
    over the training videos. ("random" needs no table: W keeps nn.Embedding's init.)"""
    if mode == "embedder":
        return embeddings
    if mode == "centred":
        return embeddings - embeddings.mean(dim=0, keepdim=True)
    raise ValueError(f"train.video_embedding_init={mode!r} does not start from E's embeddings")


def check_video_embedding_init(mode: str) -> None:
    if mode not in VIDEO_EMBEDDING_INITS:
        raise ValueError(
            f"train.video_embedding_init={mode!r}: choose one of {', '.join(VIDEO_EMBEDDING_INITS)}"
        )


@torch.no_grad()
def broadcast_video_embeddings(weight: torch.Tensor, ctx: DistributedContext) -> None:
    """W <- rank 0's W on every rank. DDP's start-up broadcast skips W (DDP ignores it), and a rank's own
    computation may differ in the last bits (cuDNN picks kernels per process); after this W is
    bit-identical everywhere, and the row exchange keeps it so."""
    if ctx.is_distributed:
        torch_dist.broadcast(weight.data, src=0)


def initialise_video_embeddings(
    weight: torch.Tensor,
    mode: str,
    embedder: Embedder,
    episodes: Dataset,
    ctx: DistributedContext,
    *,
    seed: int,
    num_workers: int = 0,
    progress: bool = True,
) -> None:
    """A fresh FT run's W: the mode applied to E's table, or nn.Embedding's init kept ("random").
    Follow it with broadcast_video_embeddings."""
    check_video_embedding_init(mode)
    if mode != "random":
        table = embed_training_videos(
            embedder, episodes, ctx, seed=seed, num_workers=num_workers, progress=progress
        )
        with torch.no_grad():
            weight.copy_(initial_video_embeddings(mode, table).to(weight.dtype))
