"""Checkpoints: the full training state (to resume) and the smaller model file (to make avatars).

    RUN/checkpoints/state-00001000.pt   E, G (with P), D (with W), the optimisers, step, RNG states, config
    RUN/model.pt                        E, G (with P), D without W (V, w0, b), config, num_videos

Both are plain dicts of tensors and Python numbers/strings/lists: they load with
torch.load(weights_only=True), so a checkpoint file cannot run code. Every file is written to a temporary
name and renamed (metahead.fileio.atomic_path), so a crash never leaves half a checkpoint; only the
last `keep` training states are kept.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metahead.config import ExperimentConfig
from metahead.fileio import UnreadableFile, atomic_path, read_weights_file
from metahead.losses import content_loss_differences

STATE_FORMAT = "metahead-training-state"
MODEL_FORMAT = "metahead-model"
FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.pt"
_STATE_NAME = re.compile(r"^state-(\d{8,})\.pt$")
# D's per-video embedding matrix W (one row per training video): in the training state, not the model file.
VIDEO_EMBEDDINGS_PREFIX = "video_embeddings."


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def state_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"state-{step:08d}.pt"


def list_states(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of the training states in RUN/checkpoints, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _STATE_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_state(run_dir: str | os.PathLike) -> Path | None:
    states = list_states(run_dir)
    return states[-1][1] if states else None


# --- RNG states -----------------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """This process's Python, NumPy and torch (CPU and CUDA) generator states, as weights_only-safe values."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- Training state ----------------------------------------------------------------------------------


def save_state(
    run_dir: str | os.PathLike,
    step: int,
    *,
    cfg: ExperimentConfig,
    networks: dict[str, nn.Module],
    optimizers: dict[str, Any],
    num_videos: int,
    rng_states: list[dict[str, Any]],
    keep: int,
    world_size: int = 1,
    fingerprint: str = "",
    averaged: dict[str, Any] | None = None,
    content_loss: dict[str, Any] | None = None,
) -> Path:
    """Write RUN/checkpoints/state-STEP.pt atomically and delete all but the newest `keep` states
    (keep <= 0: keep all).

    networks: {"embedder": E, "generator": G, "discriminator": D}; optimizers: name -> anything with
    state_dict(). rng_states: one entry per rank (rank r resumes with entry r). fingerprint: the weights'
    hash that all `world_size` ranks agreed on (distributed.fingerprint), for the record. content_loss:
    the run's resolved content loss (ContentLoss.record), which a resume must match.
    """
    state = {
        "format": STATE_FORMAT,
        "version": FORMAT_VERSION,
        "step": step,
        "config": cfg.to_dict(),
        "num_videos": num_videos,
        "networks": {name: net.state_dict() for name, net in networks.items()},
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "rng": rng_states,
        "world_size": world_size,
        "fingerprint": fingerprint,
        "averaged": averaged or {},  # the EMA of E and G (training/ema.py), when the run keeps one
        "content_loss": content_loss,
    }
    path = state_path(run_dir, step)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    if keep > 0:
        for _, old in list_states(run_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training state written by save_state (weights only: no code runs)."""
    state = _load(path, map_location, (STATE_FORMAT,))
    for key in ("step", "config", "networks", "optimizers", "rng", "num_videos"):
        if key not in state:
            raise CheckpointError(f"{path}: training state lacks {key!r}")
    return state


def newest_readable_state(
    run_dir: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any], list[str]] | None:
    """(path, state, why each newer state was passed over) for the newest training state in RUN/checkpoints
    that loads, e.g. past one cut short by a full disk or a lost node; None when there is none. Raises
    CheckpointError when there are states but none is readable."""
    passed_over: list[str] = []
    for _, path in reversed(list_states(run_dir)):
        try:
            return path, load_state(path, map_location), passed_over
        except CheckpointError as err:
            passed_over.append(str(err))
    if passed_over:
        raise CheckpointError(f"{run_dir}: no training state there is readable: {'; '.join(passed_over)}")
    return None


def check_content_loss(
    state: dict[str, Any], record: dict[str, Any], path: str | os.PathLike, allow_change: bool = False
) -> list[str] | None:
    """Refuse to resume from `state` with another content loss than it was trained with (ContentLoss.record:
    terms, weights, weight files' checksums), unless `allow_change` (a deliberate change, e.g. a term added
    to a trained model). The differences allowed ([] when none); None when the state predates the record
    (cannot check)."""
    saved = state.get("content_loss")
    if saved is None:
        return None
    differences = content_loss_differences(saved, record)
    if differences and not allow_change:
        raise CheckpointError(
            f"{path}: was trained with another content loss than this run would use now: "
            f"{'; '.join(differences)}. Resume with the loss it started with (the same weight files, terms "
            "and weights: RUN/content_loss.json), start a new run, or change it on purpose (--change-loss)"
        )
    return differences


# --- Model file ----------------------------------------------------------------------------------------


def model_state(
    cfg: ExperimentConfig,
    embedder: nn.Module,
    generator: nn.Module,
    discriminator: nn.Module,
    num_videos: int,
    step: int,
    content_loss: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The model file's contents: E, G (with P), D's V, w0 and b; W (num_videos × N) left out; the content
    loss it was trained with (ContentLoss.record), for the record."""
    weights = {
        "embedder": embedder.state_dict(),
        "generator": generator.state_dict(),
        "discriminator": discriminator.state_dict(),
    }
    return _model_contents(cfg.to_dict(), weights, num_videos, step, content_loss)


def _on_cpu(value: Any) -> Any:
    return value.cpu() if isinstance(value, torch.Tensor) else value


def _model_contents(
    config: dict[str, Any],
    weights: dict[str, dict[str, Any]],
    num_videos: int,
    step: int,
    content_loss: dict[str, Any] | None,
) -> dict[str, Any]:
    """model_state's dict from the networks' state dicts (D's W dropped here), its tensors on the CPU: a
    model trained on a GPU loads on a machine without one, also through a plain torch.load."""
    weights = {name: {k: _on_cpu(v) for k, v in net.items()} for name, net in weights.items()}
    return {
        "format": MODEL_FORMAT,
        "version": FORMAT_VERSION,
        "step": step,
        "config": config,
        "content_loss": content_loss,
        "num_videos": num_videos,
        "embedder": weights["embedder"],
        "generator": weights["generator"],
        "discriminator": {
            k: v for k, v in weights["discriminator"].items() if not k.startswith(VIDEO_EMBEDDINGS_PREFIX)
        },
    }


def save_model(
    path: str | os.PathLike,
    cfg: ExperimentConfig,
    embedder: nn.Module,
    generator: nn.Module,
    discriminator: nn.Module,
    num_videos: int,
    step: int = 0,
    content_loss: dict[str, Any] | None = None,
) -> Path:
    """Write the model file atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(model_state(cfg, embedder, generator, discriminator, num_videos, step, content_loss), tmp)
    return path


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, nn.Module, nn.Module, ExperimentConfig]:
    """(E, G, D-lite, cfg) from a model file, all in eval mode on `map_location`.

    A training state (RUN/checkpoints/state-STEP.pt) is read as the model file its step would have written,
    so that any kept step can be evaluated or made into avatars. D-lite is a Discriminator whose W has a
    single placeholder row: it is meant for forward_with_embedding (fine-tuning's w' = w0 + ê_NEW), never
    for a training video's W_i.
    """
    from metahead.models.discriminator import Discriminator
    from metahead.models.embedder import Embedder
    from metahead.models.generator import Generator

    state = _load(path, map_location, (MODEL_FORMAT, STATE_FORMAT))
    if state["format"] == STATE_FORMAT:
        state = _model_state_of_training_state(state, path)
    try:
        cfg = ExperimentConfig.from_dict(state["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable config: {err}") from err
    embedder = Embedder(cfg.model)
    generator = Generator(cfg.model)
    discriminator = Discriminator(cfg.model, num_videos=1)
    try:
        embedder.load_state_dict(state["embedder"])
        generator.load_state_dict(state["generator"])
        missing, unexpected = discriminator.load_state_dict(state["discriminator"], strict=False)
    except (KeyError, RuntimeError) as err:
        raise CheckpointError(f"{path}: weights do not fit the networks its config describes: {err}") from err
    missing = [k for k in missing if not k.startswith(VIDEO_EMBEDDINGS_PREFIX)]
    if missing or unexpected:
        raise CheckpointError(f"{path}: discriminator weights missing {missing}, unexpected {unexpected}")
    for net in (embedder, generator, discriminator):
        net.to(map_location).eval()
    return embedder, generator, discriminator, cfg


def _model_state_of_training_state(state: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """What save_model writes at a training state's step: E and G as the run renders them (their running
    averages when it keeps them), D without W."""
    try:
        weights = dict(state["networks"])
        for name, averaged in (state.get("averaged") or {}).items():
            weights[name] = _unwrap_average(averaged)
        return _model_contents(
            state["config"], weights, state["num_videos"], state["step"], state.get("content_loss")
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: training state lacks its networks ({err!r})") from err


def _unwrap_average(averaged: dict[str, Any]) -> dict[str, Any]:
    """An AveragedModel's state dict as the averaged network's own (no `module.` prefix, no count)."""
    return {k.removeprefix("module."): v for k, v in averaged.items() if k.startswith("module.")}


def _load(
    path: str | os.PathLike, map_location: str | torch.device, expected_formats: tuple[str, ...]
) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = read_weights_file(path, map_location=map_location)
    except UnreadableFile as err:
        raise CheckpointError(f"{path}: not a readable metahead checkpoint: {err}") from None
    if not isinstance(state, dict) or state.get("format") not in expected_formats:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path}: format is {found!r}, expected {' or '.join(map(repr, expected_formats))}"
        )
    if state.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {state['version']} is newer than this metahead ({FORMAT_VERSION})"
        )
    return state
