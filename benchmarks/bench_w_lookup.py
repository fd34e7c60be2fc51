"""Cost of D's per-video embedding W (num_videos x N) at 150k videos vs 100, under three ways to update it.

Modes (W only; the rest of D always uses dense Adam):
  dense      nn.Embedding(sparse=False) + torch.optim.Adam: a dense (num_videos, N) gradient every step, and
             Adam reads and writes all num_videos rows of W and of its two moment buffers every step.
  sparse     nn.Embedding(sparse=True) + torch.optim.SparseAdam: only the episode's rows are touched;
             moments of other rows are frozen while unvisited (differs from dense Adam).
  rowwise    nn.Embedding(sparse=True) + `RowwiseAdam` below: touched rows only, and for Adam's β1 = 0 (the
             lab's betas) exactly dense Adam: the second moment of a row is decayed by β2^(steps since its
             last visit) when it is next visited; nothing else changes for unvisited rows under dense Adam.

For each mode and size: median time of a full D training step (forward, backward, optimiser step) on a
cpu-64 discriminator widened to N = 512 (the paper's W width), and the bytes held for W (weight + gradient +
optimiser state). Also checks RowwiseAdam against torch.optim.Adam. Prints JSON lines.

    .venv/bin/python benchmarks/bench_w_lookup.py [--steps 12] [--batch 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch

from metahead.config import preset
from metahead.models import Discriminator


class RowwiseAdam:
    """Adam over the rows of one embedding matrix, touching only rows with gradient. Exact dense Adam for
    β1 = 0 and no weight decay (proved in docs/networks.md); a prototype for training/."""

    def __init__(
        self, weight: torch.Tensor, lr: float, betas: tuple[float, float] = (0.0, 0.999), eps: float = 1e-8
    ):
        if betas[0] != 0.0:
            raise ValueError("RowwiseAdam is exact only for beta1 = 0")
        self.weight, self.lr, self.beta2, self.eps = weight, lr, betas[1], eps
        self.exp_avg_sq = torch.zeros_like(weight)
        self.last_step = torch.zeros(weight.shape[0], dtype=torch.long)
        self.step_count = 0

    @torch.no_grad()
    def step(self) -> None:
        grad = self.weight.grad
        if grad is None:
            return
        self.step_count += 1
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        missed = (self.step_count - self.last_step[rows]).to(values.dtype)
        sq = self.exp_avg_sq[rows] * self.beta2 ** missed.unsqueeze(1) + (1 - self.beta2) * values * values
        self.exp_avg_sq[rows] = sq
        self.last_step[rows] = self.step_count
        bias_correction2 = 1 - self.beta2**self.step_count
        self.weight[rows] -= self.lr * values / (sq.div(bias_correction2).sqrt() + self.eps)

    def state_bytes(self) -> int:
        return self.exp_avg_sq.numel() * self.exp_avg_sq.element_size() + self.last_step.numel() * 8


def tensor_bytes(t: torch.Tensor | None) -> int:
    if t is None:
        return 0
    if t.is_sparse:
        t = t.coalesce()
        return tensor_bytes(t.indices()) + tensor_bytes(t.values())
    return t.numel() * t.element_size()


def run(mode: str, num_videos: int, steps: int, batch: int, seed: int) -> dict:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(preset("cpu-64").model, embedding_dim=512)
    disc = Discriminator(cfg, num_videos, sparse_grad=mode != "dense")
    w = disc.video_embeddings.weight
    others = [p for n, p in disc.named_parameters() if n != "video_embeddings.weight"]
    opt_rest = torch.optim.Adam(others, lr=2e-4, betas=(0.0, 0.999))
    if mode == "dense":
        opt_w = torch.optim.Adam([w], lr=2e-4, betas=(0.0, 0.999))
    elif mode == "sparse":
        opt_w = torch.optim.SparseAdam([w], lr=2e-4, betas=(0.0, 0.999))
    else:
        opt_w = RowwiseAdam(w, lr=2e-4)
    size = cfg.image_size
    g = torch.Generator().manual_seed(seed)
    times, w_times = [], []
    for _ in range(steps):
        x = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
        y = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
        index = torch.randint(0, num_videos, (batch,), generator=g)
        start = time.perf_counter()
        opt_rest.zero_grad(set_to_none=True)
        w.grad = None
        realism, _ = disc(x, y, index)
        torch.relu(1 - realism).mean().backward()
        opt_rest.step()
        before_w = time.perf_counter()
        opt_w.step()
        end = time.perf_counter()
        times.append(end - start)
        w_times.append(end - before_w)
    state = (
        opt_w.state_bytes()
        if isinstance(opt_w, RowwiseAdam)
        else sum(
            tensor_bytes(v) for s in opt_w.state.values() for v in s.values() if isinstance(v, torch.Tensor)
        )
    )
    warm = slice(2, None)  # first steps allocate optimiser state
    return {
        "mode": mode,
        "num_videos": num_videos,
        "N": cfg.embedding_dim,
        "batch": batch,
        "step_ms_median": round(1e3 * statistics.median(times[warm]), 1),
        "w_optimizer_step_ms_median": round(1e3 * statistics.median(w_times[warm]), 2),
        "w_weight_mb": round(tensor_bytes(w) / 2**20, 1),
        "w_grad_mb": round(tensor_bytes(w.grad) / 2**20, 3),
        "w_optimizer_state_mb": round(state / 2**20, 1),
    }


def check_rowwise_equals_dense_adam(num_videos: int = 50, n: int = 16, steps: int = 30) -> float:
    """Max |W_rowwise - W_dense| after `steps` steps of random sparse batches (β1 = 0)."""
    torch.manual_seed(0)
    dense = torch.nn.Embedding(num_videos, n)
    sparse = torch.nn.Embedding(num_videos, n, sparse=True)
    sparse.weight.data.copy_(dense.weight.data)
    opt_dense = torch.optim.Adam(dense.parameters(), lr=1e-2, betas=(0.0, 0.999))
    opt_rows = RowwiseAdam(sparse.weight, lr=1e-2)
    for _ in range(steps):
        index = torch.randint(0, num_videos, (6,))
        target = torch.randn(6, n)
        for emb, opt in ((dense, opt_dense), (sparse, opt_rows)):
            emb.weight.grad = None
            ((emb(index) - target) ** 2).sum().backward()
            opt.step()
    return float((dense.weight - sparse.weight).detach().abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 150_000])
    parser.add_argument("--modes", nargs="+", default=["dense", "sparse", "rowwise"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps({"rowwise_vs_dense_adam_max_abs_diff": check_rowwise_equals_dense_adam()}), flush=True)
    for mode in args.modes:
        for num_videos in args.sizes:
            print(json.dumps(run(mode, num_videos, args.steps, args.batch, seed=0)), flush=True)


if __name__ == "__main__":
    main()
