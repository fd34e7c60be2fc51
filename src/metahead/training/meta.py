"""Meta-learning (paper Sec. 3.2): episodes of K+1 frames of one training video teach E, G, P and D.

Every step, for a batch of episodes:

    E embeds the K frames              ê(k) = E(x(s_k), y(s_k))          ê = mean_k ê(k)
    G renders the target frame          x̂ = G(y(t), P ê)
    E, G, P step on                     L_CNT(x̂, x(t)) + L_ADV(x̂) (+ L_MCH(ê(k), W_i) for the FT model)
    (train.ema_decay > 0: the running average of E and G, which samples and the model file use, follows)
    D steps (train.discriminator_steps) on L_DSC = max(0, 1 + D(x̂)) + max(0, 1 - D(x(t)))

The two updates have their own backward passes (one shared backward, as in the public ports, lets G's
loss push D and D's loss push G). While E, G and P step, D's parameters are frozen: D is the critic, not a
player, in that step.

Who moves W (D's per-video embeddings)? W belongs to D and moves in D's update, at D's learning rate.
It has two pulls: L_DSC, and in the FT model L_MCH, which ties ê(k) and W_i together. L_MCH is L1,
symmetric in its arguments, so we split it: E gets L_MCH(ê(k), W_i.detach()) in its step, W gets
L_MCH(ê(k).detach(), W_i) added to D's first update of the step. Each side gets exactly the gradient a
joint backward would give it, through its own optimiser, and G's loss never reaches D (nor D's loss G).
Only the rows W_i of the step's videos have gradient, so W has sparse gradients and its own optimiser,
RowwiseAdam (exactly dense Adam for the default β1 = 0), and the ranks exchange just those rows instead
of DDP all-reducing the whole table (training/video_embeddings.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import default_collate

from metahead import perf
from metahead.config import ExperimentConfig, LossConfig
from metahead.data.episodes import EpisodeDataset
from metahead.fileio import atomic_write_text
from metahead.losses import (
    ContentLoss,
    adversarial_loss,
    content_loss_differences,
    discriminator_loss,
    matching_loss,
)
from metahead.models import Discriminator, Embedder, Generator, embed_person
from metahead.training import checkpoint, distributed
from metahead.training.ema import WeightAverage
from metahead.training.face_descriptors import FrameDescriptorCache, measure_standardisation
from metahead.training.logging import RunLogger, sample_grid
from metahead.training.video_embeddings import (
    RowwiseAdam,
    broadcast_video_embeddings,
    check_video_embedding_init,
    exchange_row_gradients,
    initialise_video_embeddings,
    row_gradients,
)

CONFIG_FILE = "config.json"
CONTENT_LOSS_FILE = "content_loss.json"  # the resolved L_CNT (ContentLoss.record); checkpoints hold it too
NUM_SAMPLE_EPISODES = 4
AMP_MODES = ("none", "bf16", "auto")
VIDEO_EMBEDDINGS = "video_embeddings.weight"  # W's name in D


class TrainingDiverged(RuntimeError):
    """A loss became NaN or inf; the run stopped without writing a checkpoint of that state."""


def train(
    cfg: ExperimentConfig, resume: bool = False, progress: bool = True, change_loss: bool = False
) -> Path:
    """Meta-learn E, G, P and D as `cfg` says; return the run folder (cfg.train.out).

    resume=True continues from the newest training state in RUN/checkpoints (exactly: same episodes,
    same random numbers), or starts afresh when there is none. Without it, a run folder that already
    holds checkpoints is refused rather than overwritten. A resume with another content loss than the
    state was trained with is refused unless change_loss=True (the log then says what changed).
    progress=False: no progress bars (the log and TensorBoard are written all the same).
    """
    _check_config(cfg)
    ctx = distributed.setup(cfg.train.device)
    try:
        return _train(cfg, resume, ctx, progress, change_loss)
    finally:
        distributed.cleanup(ctx)


def _train(
    cfg: ExperimentConfig,
    resume: bool,
    ctx: distributed.DistributedContext,
    progress: bool,
    change_loss: bool,
) -> Path:
    tc = cfg.train
    run_dir = Path(tc.out)
    device = ctx.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed image sizes: let cuDNN pick the fastest kernels

    # --- The run folder: resume from its newest readable state, or start it ------------------------------
    # Rank 0 decides, so that all ranks resume from the same file (RUN must be readable by every node).
    state_file, state, passed_over = _resume_state(run_dir, resume, ctx)
    if state is not None:
        _check_resumable(cfg, state, state_file)

    # --- Episodes: K frames to embed + 1 target frame per training video ---------------------------------
    dataset = EpisodeDataset(
        tc.data,
        split="train",
        shots=tc.shots,
        image_size=cfg.model.image_size,
        seed=tc.seed,
        mirror_probability=tc.mirror_probability,
        colour_jitter_probability=tc.colour_jitter_probability,
    )
    num_videos = dataset.num_videos
    if state is not None and state["num_videos"] != num_videos:
        raise ValueError(
            f"{state_file}: trained with {state['num_videos']} videos (rows of W), but {tc.data} now has "
            f"{num_videos} training videos"
        )

    # --- Networks and optimisers (identical initial weights on every rank) -------------------------------
    distributed.seed_everything(tc.seed)
    memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
    embedder = Embedder(cfg.model)  # E
    generator = Generator(cfg.model)  # G, with P
    discriminator = Discriminator(cfg.model, num_videos, sparse_grad=True)  # D: V, W, w0, b
    networks = {"embedder": embedder, "generator": generator, "discriminator": discriminator}
    for net in networks.values():
        net.to(device, memory_format=memory_format)
    video_embeddings = discriminator.video_embeddings.weight  # W
    content_loss = ContentLoss(cfg.loss).to(device)  # L_CNT
    # The loss a run started with is the loss it resumes with, on every rank.
    distributed.check_same_on_every_rank(
        content_loss.record, ctx, "content loss (weight files, terms or weights)", content_loss_differences
    )
    loss_changes = (
        checkpoint.check_content_loss(state, content_loss.record, state_file, allow_change=change_loss)
        if state is not None
        else []
    )
    if ctx.is_main:  # after every check that can refuse the run, so that a refused resume changes nothing
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2) + "\n")
        atomic_write_text(run_dir / CONTENT_LOSS_FILE, json.dumps(content_loss.record, indent=2) + "\n")
    optimizer_generator = torch.optim.Adam(  # E, G and P (not E's frozen face network, model.identity_prior)
        [p for p in (*embedder.parameters(), *generator.parameters()) if p.requires_grad],
        lr=tc.lr_generator,
        betas=tc.adam_betas,
    )
    optimizer_discriminator = torch.optim.Adam(  # D without W
        [p for p in discriminator.parameters() if p is not video_embeddings],
        lr=tc.lr_discriminator,
        betas=tc.adam_betas,
    )
    optimizer_video_embeddings = RowwiseAdam(video_embeddings, lr=tc.lr_discriminator, betas=tc.adam_betas)
    optimizers = {
        "generator": optimizer_generator,
        "discriminator": optimizer_discriminator,
        "video_embeddings": optimizer_video_embeddings,
    }
    step = 0
    if state is not None:
        for name, net in networks.items():
            net.load_state_dict(state["networks"][name])
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        step = state["step"]
    prior = embedder.identity_prior
    standardised_on = 0  # frames the prior's standardisation is measured on (a resumed run keeps its own)
    if state is None and prior is not None and prior.standardised:
        standardised_on = measure_standardisation(prior, dataset)
    if state is None and tc.finetunable:  # where W starts: train.video_embedding_init
        initialise_video_embeddings(
            video_embeddings, tc.video_embedding_init, embedder, dataset, ctx, seed=tc.seed,
            num_workers=tc.num_workers, progress=ctx.is_main and progress,
        )  # fmt: skip
    broadcast_video_embeddings(video_embeddings, ctx)  # fresh or resumed: rank 0's W on every rank
    average = WeightAverage({"embedder": embedder, "generator": generator}, tc.ema_decay)  # for rendering
    if state is not None and average.enabled and state.get("averaged"):
        average.load_state_dict(state["averaged"])  # (an older state without one: the average starts here)
    # E's identity prior sees each training frame's descriptor once, not once per episode that draws it.
    frames_per_video = [r.num_frames for r in dataset.records]
    face_descriptors = FrameDescriptorCache.for_training(prior, frames_per_video, device)
    sample_episodes = _sample_episodes(dataset, tc.seed) if ctx.is_main else None
    if tc.compile:
        for net in (embedder, generator, discriminator):
            net.compile()
    # DDP wrappers average gradients over ranks; the bare networks stay at hand for D's frozen use as the
    # critic in E/G's step, for W, for samples and for checkpoints.
    embedder_ddp = distributed.wrap(embedder, ctx)
    generator_ddp = distributed.wrap(generator, ctx)
    discriminator_ddp = distributed.wrap(discriminator, ctx, ignore=(VIDEO_EMBEDDINGS,))

    # Each rank its own random numbers from here on; a resumed rank continues its saved ones.
    if state is not None and len(state["rng"]) == ctx.world_size:
        checkpoint.restore_rng_state(state["rng"][ctx.rank])
    else:
        distributed.seed_everything(distributed.rank_seed(tc.seed, ctx.rank) + step)
    episodes = iter(
        distributed.episode_loader(dataset, ctx, tc.batch_size, tc.num_workers, tc.seed, start_batch=step)
    )
    amp = perf.resolve_amp(tc.amp, device)  # "auto": bf16 only where the hardware computes it natively
    autocast = perf.autocast_context(amp, device)
    logger = RunLogger(run_dir, enabled=ctx.is_main, total_steps=tc.steps, start_step=step, progress=progress)
    logger.message(
        f"metahead train: {'FT' if tc.finetunable else 'FF'} model, {num_videos} training videos, "
        f"{ctx.world_size} process(es) on {device.type}, amp {amp}, steps {step} -> {tc.steps}; "
        f"{content_loss.description}"
    )
    if face_descriptors is not None:
        logger.message(
            f"identity prior: each of the {len(face_descriptors.table):,} training frames' face descriptors "
            "is computed once and kept"
        )
    if standardised_on:
        logger.message(f"identity prior: descriptors standardised on {standardised_on:,} training frames")
    if state_file is not None:
        logger.message(f"resumed from {state_file}")
        for reason in passed_over:
            logger.message(f"warning: passed over a newer training state: {reason}")
        if loss_changes is None:
            logger.message(f"warning: {state_file} predates recorded content losses; not compared")
        elif loss_changes:
            logger.message(f"content loss changed on purpose (--change-loss): {'; '.join(loss_changes)}")
    logger.text("config", "```\n" + json.dumps(cfg.to_dict(), indent=2) + "\n```")
    meter = _Throughput(tc.batch_size * ctx.world_size, tc.shots + 1)
    deadline = time.monotonic() + 60 * tc.time_limit_minutes if tc.time_limit_minutes > 0 else None

    try:
        while step < tc.steps:
            step += 1
            out_of_time = deadline is not None and distributed.broadcast_flag(
                time.monotonic() > deadline, ctx
            )
            last_step = step == tc.steps or out_of_time
            log_now = step % tc.log_every == 0 or last_step
            episode = Episode.from_batch(_to_device(next(episodes), device, memory_format))

            # --- E, G and P step: L_CNT + L_ADV (+ L_MCH) ---------------------------------------------------
            g_step = generator_losses(
                embedder_ddp,
                generator_ddp,
                discriminator,
                content_loss,
                cfg.loss,
                episode,
                autocast,
                tc.finetunable,
                face_descriptors,
            )
            loss_generator = g_step.total
            _check_finite(step, "E/G", loss_generator, g_step.losses)
            optimizer_generator.zero_grad(set_to_none=True)
            loss_generator.backward()
            if log_now:
                grad_norms = {
                    "grad_norm/embedder": _grad_norm(embedder),
                    "grad_norm/generator": _grad_norm(generator),
                }
            optimizer_generator.step()
            average.update()

            # --- D step(s): L_DSC on the real target and the (now fixed) rendering -------------------------
            for d_step in range(tc.discriminator_steps):
                d_step_losses = discriminator_losses(discriminator_ddp, episode, g_step.fake_image, autocast)
                loss_dsc, discriminator_terms = d_step_losses.total, d_step_losses.terms
                real_realism, fake_realism_d = d_step_losses.real_realism, d_step_losses.fake_realism
                loss_discriminator = loss_dsc
                if tc.finetunable and d_step == 0:
                    # L_MCH's pull on W_i (see the module docstring); once per episode, like E's.
                    loss_discriminator = loss_dsc + cfg.loss.match_weight * video_embedding_match_loss(
                        discriminator, g_step.frame_embeddings, episode.video_index
                    )
                _check_finite(step, "D", loss_discriminator, {"discriminator": loss_dsc})
                optimizer_discriminator.zero_grad(set_to_none=True)
                video_embeddings.grad = None
                loss_discriminator.backward()
                # W's few rows of gradient, averaged over ranks (DDP leaves W alone; see the docstring).
                rows, row_grads = exchange_row_gradients(*row_gradients(video_embeddings), ctx)
                if log_now and d_step == 0:
                    grad_norms["grad_norm/discriminator"] = _grad_norm(discriminator, extra=row_grads)
                optimizer_discriminator.step()
                optimizer_video_embeddings.step(rows, row_grads)

            # --- Log, sample, checkpoint --------------------------------------------------------------------
            meter.tick()
            logger.advance()
            if log_now:
                values = {
                    "loss/generator_total": loss_generator,
                    **{f"loss/{k}": v for k, v in g_step.losses.items()},
                    "loss/discriminator": loss_dsc,
                    "score/real": real_realism.mean(),
                    "score/fake": fake_realism_d.mean(),
                    **{f"content/{k}": v for k, v in g_step.content_terms.items()},
                    **{f"adversarial/{k}": v for k, v in g_step.adversarial_terms.items()},
                    **{f"discriminator/{k}": v for k, v in discriminator_terms.items()},
                }
                values = _mean_over_ranks(values, ctx)
                values.update(grad_norms)
                values.update(meter.rates())
                logger.scalars(step, values)
            if ctx.is_main and (step == 1 or step % tc.sample_every == 0 or last_step):
                logger.sample(
                    step,
                    _render_samples(
                        average["embedder"], average["generator"], sample_episodes, device, autocast
                    ),
                )
            if step % tc.checkpoint_every == 0 or last_step:
                _save_checkpoint(
                    run_dir, step, cfg, ctx, networks, optimizers, num_videos, content_loss.record, average
                )
                logger.curves()
            if out_of_time and step < tc.steps:
                logger.message(
                    f"time limit of {tc.time_limit_minutes:g} min reached at step {step}; "
                    "continue with --resume (and a new train.time_limit_minutes)"
                )
                break
    except TrainingDiverged as err:
        last = checkpoint.latest_state(run_dir)
        message = (
            f"{err}; training stopped before updating any weights. "
            + (f"The last good checkpoint is {last}; " if last else "No checkpoint was written yet; ")
            + "try a lower learning rate or train.amp=none, then resume with --resume."
        )
        logger.message(message)
        raise TrainingDiverged(message) from None
    finally:
        logger.close()
    return run_dir


# --- One step's losses (benchmarks/bench_networks.py times these too) --------------------------------------


@dataclass
class Episode:
    """A batch of episodes as the step uses it: frames 0..K-1 are embedded, frame K is the target."""

    shot_images: torch.Tensor  # x(s_k): (B, K, 3, S, S)
    shot_landmark_images: torch.Tensor  # y(s_k)
    target_image: torch.Tensor  # x(t): (B, 3, S, S)
    target_landmark_image: torch.Tensor  # y(t)
    target_landmarks: torch.Tensor  # (B, 68, 2): the identity term's chips
    video_index: torch.Tensor  # i: the row of W
    shot_frame_indices: torch.Tensor | None = None  # (B, K): the shots' frames in their videos
    augmented: torch.Tensor | None = None  # (B,) bool: frames mirrored or recoloured

    @classmethod
    def from_batch(cls, batch: dict[str, Any]) -> Episode:
        """From data/episodes.py's collated batch (images, landmark_images, landmarks, video_index, and
        frame_indices and augmented where present)."""
        images, landmark_images = batch["images"], batch["landmark_images"]
        frame_indices = batch.get("frame_indices")
        return cls(
            shot_images=images[:, :-1],
            shot_landmark_images=landmark_images[:, :-1],
            target_image=images[:, -1],
            target_landmark_image=landmark_images[:, -1],
            target_landmarks=batch["landmarks"][:, -1],
            video_index=batch["video_index"],
            shot_frame_indices=frame_indices[:, :-1] if frame_indices is not None else None,
            augmented=batch.get("augmented"),
        )


@dataclass
class GeneratorLosses:
    total: torch.Tensor  # what E, G and P step on
    losses: dict[str, torch.Tensor]  # content, adversarial (, match): the total's parts
    content_terms: dict[str, torch.Tensor]
    adversarial_terms: dict[str, torch.Tensor]
    fake_image: torch.Tensor  # x̂, for D's step
    frame_embeddings: torch.Tensor  # ê(k), for L_MCH's pull on W


def generator_losses(
    embedder: torch.nn.Module,
    generator: torch.nn.Module,
    discriminator: Discriminator,
    content_loss: ContentLoss,
    loss_cfg: LossConfig,
    episode: Episode,
    autocast: contextlib.AbstractContextManager,
    finetunable: bool,
    face_descriptors: FrameDescriptorCache | None = None,
) -> GeneratorLosses:
    """E, G and P's losses: L_CNT + L_ADV (+ L_MCH for the FT model). Freezes D's parameters first: here D
    is the critic, not a player. `discriminator` is the bare network (W_i is read from it).
    `face_descriptors`: where E's identity prior takes the shots' descriptors from (None: E computes them)."""
    discriminator.requires_grad_(False)
    target_landmark_image, video_index = episode.target_landmark_image, episode.video_index
    with autocast:
        shot_descriptors = (
            face_descriptors(episode.shot_images, video_index, episode.shot_frame_indices, episode.augmented)
            if face_descriptors is not None and episode.shot_frame_indices is not None
            else None
        )
        person_embedding, frame_embeddings = embed_person(
            embedder, episode.shot_images, episode.shot_landmark_images, shot_descriptors
        )
        fake_image = generator(target_landmark_image, person_embedding=person_embedding)  # x̂
        fake_realism, fake_features = discriminator(fake_image, target_landmark_image, video_index)
        with torch.no_grad():
            _, real_features = discriminator(episode.target_image, target_landmark_image, video_index)
        loss_content, content_terms = content_loss(
            fake_image,
            episode.target_image,
            fake_landmarks=episode.target_landmarks,
            real_landmarks=episode.target_landmarks,
        )
    loss_adversarial, adversarial_terms = adversarial_loss(
        fake_realism.float(),
        [f.float() for f in real_features],
        [f.float() for f in fake_features],
        loss_cfg.feature_matching_weight,
        loss_cfg.adversarial_weight,
    )
    losses = {"content": loss_content.float(), "adversarial": loss_adversarial}
    total = loss_content.float() + loss_adversarial
    if finetunable:
        video_embedding = discriminator.video_embeddings(video_index)  # W_i (frozen here)
        loss_match = matching_loss(frame_embeddings.float(), video_embedding.float())
        losses["match"] = loss_match
        total = total + loss_cfg.match_weight * loss_match
    return GeneratorLosses(total, losses, content_terms, adversarial_terms, fake_image, frame_embeddings)


@dataclass
class DiscriminatorLosses:
    total: torch.Tensor  # L_DSC
    terms: dict[str, torch.Tensor]
    real_realism: torch.Tensor  # D(x(t)), (B,)
    fake_realism: torch.Tensor  # D(x̂), (B,)


def discriminator_losses(
    discriminator: torch.nn.Module,
    episode: Episode,
    fake_image: torch.Tensor,
    autocast: contextlib.AbstractContextManager,
) -> DiscriminatorLosses:
    """L_DSC on the real target and the (fixed) rendering x̂. Unfreezes D's parameters first."""
    discriminator.requires_grad_(True)
    with autocast:
        # One forward over [real; fake]: D has no batch statistics, so this equals two passes.
        realism, _ = discriminator(
            torch.cat([episode.target_image, fake_image.detach()]),
            torch.cat([episode.target_landmark_image, episode.target_landmark_image]),
            torch.cat([episode.video_index, episode.video_index]),
        )
    real_realism, fake_realism = realism.float().chunk(2)
    total, terms = discriminator_loss(real_realism, fake_realism)
    return DiscriminatorLosses(total, terms, real_realism, fake_realism)


def video_embedding_match_loss(
    discriminator: Discriminator, frame_embeddings: torch.Tensor, video_index: torch.Tensor
) -> torch.Tensor:
    """L_MCH's pull on W_i: ê(k) held fixed (see the module docstring); weight it by loss.match_weight."""
    return matching_loss(
        frame_embeddings.detach().float(), discriminator.video_embeddings(video_index).float()
    )


# --- Helpers, in the order the loop uses them ------------------------------------------------------------


def _check_config(cfg: ExperimentConfig) -> None:
    tc = cfg.train
    if not tc.data:
        raise ValueError("train.data is empty: give the dataset folder (--data)")
    if not tc.out:
        raise ValueError("train.out is empty: give the run folder (--out)")
    if not 0.0 <= tc.ema_decay < 1.0:
        raise ValueError(f"train.ema_decay must lie in [0, 1), got {tc.ema_decay}")
    if tc.amp not in AMP_MODES:
        raise ValueError(f"train.amp={tc.amp!r}: choose one of {', '.join(AMP_MODES)}")
    for name in (
        "shots",
        "batch_size",
        "steps",
        "discriminator_steps",
        "log_every",
        "sample_every",
        "checkpoint_every",
    ):
        if getattr(tc, name) < 1:
            raise ValueError(f"train.{name} must be at least 1, got {getattr(tc, name)}")
    if tc.num_workers < 0 or tc.keep_checkpoints < 0:
        raise ValueError("train.num_workers and train.keep_checkpoints must not be negative")
    check_video_embedding_init(tc.video_embedding_init)


def _resume_state(
    run_dir: Path, resume: bool, ctx: distributed.DistributedContext
) -> tuple[Path | None, dict[str, Any] | None, list[str]]:
    """(state file, its state, why newer states were passed over), or (None, None, []) for a fresh start.

    Rank 0 decides, so that all ranks resume from the same file (RUN must be readable by every node): the
    newest state that loads (a truncated newest one is passed over, with a warning naming both).
    """
    decision: dict[str, Any] = {"refuse": False, "path": None, "passed_over": []}
    found = None
    if ctx.is_main:
        if checkpoint.latest_state(run_dir) and not resume:
            decision["refuse"] = True
        elif resume and (found := checkpoint.newest_readable_state(run_dir)):
            decision.update(path=str(found[0]), passed_over=found[2])
    decision = distributed.broadcast_object(decision, ctx)
    if decision["refuse"]:
        raise ValueError(f"{run_dir}: already holds checkpoints; pass --resume, or choose a new --out")
    if decision["path"] is None:
        return None, None, []
    path = Path(decision["path"])
    state = found[1] if found is not None else checkpoint.load_state(path, map_location="cpu")
    return path, state, decision["passed_over"]


def _check_resumable(cfg: ExperimentConfig, state: dict[str, Any], path: Path) -> None:
    """The networks must have the shapes the checkpoint's weights have; training settings may change, and
    so may model settings that no weight depends on (G's upsampling mode)."""
    saved = ExperimentConfig.from_dict(state["config"])
    if dataclasses.replace(saved.model, generator_upsampling=cfg.model.generator_upsampling) != cfg.model:
        raise ValueError(f"{path}: was trained with model config {saved.model}, not {cfg.model}")
    if saved.train.finetunable != cfg.train.finetunable:
        raise ValueError(
            f"{path}: train.finetunable was {saved.train.finetunable}; it cannot change on resume"
        )


def _sample_episodes(dataset: EpisodeDataset, seed: int) -> dict[str, Any]:
    """A few fixed episodes (same videos, same frames all run long) for the sample grids."""
    count = min(NUM_SAMPLE_EPISODES, len(dataset))
    indices = [round(i * (len(dataset) - 1) / max(1, count - 1)) for i in range(count)]
    seeded = distributed.SeededEpisodes(dataset)
    return default_collate([seeded[(index, seed + index)] for index in indices])


def _to_device(
    batch: dict[str, Any], device: torch.device, memory_format: torch.memory_format
) -> dict[str, Any]:
    moved = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if value.ndim == 4:
                value = value.contiguous(memory_format=memory_format)
        moved[key] = value
    return moved


def _check_finite(step: int, which: str, total: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
    """Raise TrainingDiverged before a NaN/inf loss reaches the weights."""
    if bool(torch.isfinite(total)):
        return
    shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in {"total": total, **terms}.items())
    raise TrainingDiverged(f"step {step}: the {which} loss is not finite ({shown})")


def _grad_norm(module: torch.nn.Module, extra: torch.Tensor | None = None) -> float:
    """L2 norm of the module's dense gradients (and of `extra`, e.g. W's rows)."""
    grads = [
        p.grad.detach().float().norm()
        for p in module.parameters()
        if p.grad is not None and not p.grad.is_sparse
    ]
    if extra is not None:
        grads.append(extra.detach().float().norm())
    return float(torch.stack(grads).norm()) if grads else 0.0


def _mean_over_ranks(
    values: dict[str, torch.Tensor], ctx: distributed.DistributedContext
) -> dict[str, float]:
    """The logged scalars, averaged over all ranks (one all-reduce, on log steps only)."""
    stacked = torch.stack(
        [torch.as_tensor(v, dtype=torch.float32, device=ctx.device).detach() for v in values.values()]
    )
    if ctx.is_distributed:
        torch.distributed.all_reduce(stacked)
        stacked /= ctx.world_size
    return dict(zip(values, stacked.tolist()))


class _Throughput:
    """Episodes and frames per second (all ranks together) since the last report."""

    def __init__(self, episodes_per_step: int, frames_per_episode: int):
        self.episodes_per_step, self.frames_per_episode = episodes_per_step, frames_per_episode
        self._start, self._steps = time.perf_counter(), 0

    def tick(self) -> None:
        self._steps += 1

    def rates(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        episodes = self._steps * self.episodes_per_step / elapsed
        self._steps_reported = self._steps
        self._start, self._steps = time.perf_counter(), 0
        return {
            "throughput/episodes_per_s": episodes,
            "throughput/images_per_s": episodes * self.frames_per_episode,
            "throughput/step_time_s": elapsed / max(self._steps_reported, 1),
        }


@torch.no_grad()
def _render_samples(
    embedder: torch.nn.Module,
    generator: torch.nn.Module,
    episodes: dict[str, Any],
    device: torch.device,
    autocast: contextlib.AbstractContextManager,
) -> torch.Tensor:
    images = episodes["images"].to(device)
    landmark_images = episodes["landmark_images"].to(device)
    embedder.eval()
    generator.eval()
    try:
        with autocast:
            person_embedding, _ = embed_person(embedder, images[:, :-1], landmark_images[:, :-1])
            generated = generator(landmark_images[:, -1], person_embedding=person_embedding)
    finally:
        embedder.train()
        generator.train()
    return sample_grid(landmark_images[:, -1], images[:, :-1], generated, images[:, -1])


def _save_checkpoint(
    run_dir: Path,
    step: int,
    cfg: ExperimentConfig,
    ctx: distributed.DistributedContext,
    networks: dict[str, torch.nn.Module],
    optimizers: dict[str, Any],
    num_videos: int,
    content_loss: dict[str, Any],
    average: WeightAverage,
) -> None:
    """Rank 0 writes the training state (with every rank's RNG state) and the model file (E and G: their
    running averages when train.ema_decay > 0), after checking that every rank holds the same weights."""
    fingerprint = distributed.fingerprint(*networks.values()) if ctx.is_distributed else ""
    parts = (
        {name: distributed.fingerprint(net) for name, net in networks.items()} if ctx.is_distributed else {}
    )
    gathered = distributed.all_gather_objects(
        {"rng": checkpoint.capture_rng_state(), "fingerprint": fingerprint, "parts": parts}, ctx
    )
    if not ctx.is_main:
        return
    distributed.check_ranks_agree([g["fingerprint"] for g in gathered], [g["parts"] for g in gathered])
    checkpoint.save_state(
        run_dir,
        step,
        cfg=cfg,
        networks=networks,
        optimizers=optimizers,
        num_videos=num_videos,
        rng_states=[g["rng"] for g in gathered],
        keep=cfg.train.keep_checkpoints,
        world_size=ctx.world_size,
        fingerprint=fingerprint,
        content_loss=content_loss,
        averaged=average.state_dict(),
    )
    checkpoint.save_model(
        run_dir / checkpoint.MODEL_FILE,
        cfg,
        average["embedder"],
        average["generator"],
        networks["discriminator"],
        num_videos,
        step=step,
        content_loss=content_loss,
    )
