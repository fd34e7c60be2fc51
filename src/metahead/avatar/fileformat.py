"""The avatar file: its format and version, reading it back with every check, and its error type.

`Avatar.save` writes it (torch.save of tensors and plain Python values only: it loads with
torch.load(weights_only=True)):

    format "metahead-avatar", version 1
    config            the model's ExperimentConfig as a dict (networks are rebuilt from it)
    mode              "ft" (fine-tuned) or "ff" (feed-forward)
    generator         G's state dict, spectral norm folded in (keys of Generator(spectral_norm=False))
    adain_params      ψ (1, num_adain_params) float32: ψ' (FT) or P ê_NEW (FF)
    person_embedding  ê_NEW (1, N) float32
    neutral_landmarks (68, 2) float32: the avatar's neutral face (retargeting's target shape)
    source_landmarks  (T, 68, 2) float32, source_frames (T, S, S, 3) uint8: the T crops it was made from
    info              dict of str/int/float: model file, its step, T, fine-tuning settings and losses, time

Written atomically; `read_avatar_file` (behind `Avatar.load`) checks format, version and that the
weights fit the config, and names the file in every error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from metahead.avatar.render import render_generator
from metahead.config import ExperimentConfig
from metahead.fileio import UnreadableFile, read_weights_file

AVATAR_FORMAT = "metahead-avatar"
AVATAR_VERSION = 1
MODES = ("ft", "ff")


class AvatarError(ValueError):
    """An avatar file that cannot be used; the message names the file and the problem."""


def plain_values(value: Any) -> Any:
    """Only str/int/float/bool/None in (nested) dicts and lists: what weights_only loading accepts."""
    if isinstance(value, dict):
        return {str(k): plain_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_values(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def read_avatar_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read an avatar file (weights only: no code runs) into the Avatar constructor's arguments (cfg,
    generator, adain_params and the keywords). AvatarError naming the file if it is not an avatar, comes
    from a newer metahead, or its weights do not fit its config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: avatar file not found")
    try:
        state = read_weights_file(path)
    except UnreadableFile as err:
        raise AvatarError(f"{path}: not a readable avatar file: {err}") from None
    if not isinstance(state, dict) or state.get("format") != AVATAR_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        hint = (
            " (a model file: make an avatar from it with `metahead avatar`)"
            if found == "metahead-model"
            else ""
        )
        raise AvatarError(f"{path}: format is {found!r}, expected {AVATAR_FORMAT!r}{hint}")
    version = state.get("version")
    if not isinstance(version, int) or version < 1:
        raise AvatarError(f"{path}: invalid avatar format version {version!r}")
    if version > AVATAR_VERSION:
        raise AvatarError(
            f"{path}: avatar format version {version} is newer than this metahead reads "
            f"({AVATAR_VERSION}); update metahead"
        )
    missing = [
        k for k in ("config", "mode", "generator", "adain_params", "neutral_landmarks") if k not in state
    ]
    if missing:
        raise AvatarError(f"{path}: avatar file lacks {missing}")
    try:
        cfg = ExperimentConfig.from_dict(state["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise AvatarError(f"{path}: its model config does not fit this metahead: {err}") from err
    try:
        generator = render_generator(cfg)
        generator.load_state_dict(state["generator"])
    except (RuntimeError, ValueError) as err:
        raise AvatarError(
            f"{path}: generator weights do not fit the networks its config describes: {err}"
        ) from err
    adain_params = state["adain_params"]
    if adain_params.ndim != 2 or adain_params.shape != (1, generator.num_adain_params):
        raise AvatarError(
            f"{path}: adain_params has shape {tuple(adain_params.shape)}, "
            f"G needs (1, {generator.num_adain_params})"
        )
    if state["mode"] not in MODES:
        raise AvatarError(f"{path}: unknown avatar mode {state['mode']!r}")
    source_landmarks = state.get("source_landmarks")
    source_frames = state.get("source_frames")
    return {
        "cfg": cfg,
        "generator": generator,
        "adain_params": adain_params,
        "neutral_landmarks": state["neutral_landmarks"].numpy(),
        "source_landmarks": None
        if source_landmarks is None or not len(source_landmarks)
        else source_landmarks.numpy(),
        "source_frames": None if source_frames is None or not len(source_frames) else source_frames.numpy(),
        "person_embedding": state.get("person_embedding"),
        "mode": state["mode"],
        "info": state.get("info") or {},
    }
