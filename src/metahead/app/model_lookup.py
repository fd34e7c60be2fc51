"""The app's model: the one `--model` names, or the one `make demo` trains (looked for under the folder the
app is started in, then under the source checkout), loaded once, or the reason there is none."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metahead.fileio import read_weights_file


def demo_model_path(out: str | os.PathLike) -> Path:
    """Where `metahead demo --out OUT` writes its meta-trained model (OUT/work/run/model.pt)."""
    from metahead.demo import WORK

    return Path(out) / WORK / "run" / "model.pt"


DEMO_OUTPUT = "demo-output"  # `make demo` runs `metahead demo --out demo-output` in the checkout
# Where the app looks for `make demo`'s model when no --model is given, in this order (docs/app.md).
STARTED_IN = "the folder the app was started in"
IN_CHECKOUT = "the source checkout metahead runs from"


def source_checkout() -> Path | None:
    """The source checkout this package runs from (`make install`, `pip install -e .` or PYTHONPATH=src);
    None for an installed package, which has none."""
    root = Path(__file__).resolve().parents[3]  # src/metahead/app/model_lookup.py -> the checkout
    return root if (root / "pyproject.toml").is_file() and (root / "Makefile").is_file() else None


def demo_model_candidates(cwd: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """(model file, where) for each place the model `make demo` trains is looked for, in order:
    demo-output/ under the folder the app is started in (`cwd`), then under the source checkout (when
    metahead runs from one and it is another folder), so an app started elsewhere still finds the model
    `make demo` trained in the clone."""
    here = (Path(cwd) if cwd is not None else Path.cwd()).resolve()
    candidates = [(demo_model_path(here / DEMO_OUTPUT), STARTED_IN)]
    checkout = source_checkout()
    if checkout is not None and checkout != here:
        candidates.append((demo_model_path(checkout / DEMO_OUTPUT), IN_CHECKOUT))
    return candidates


@dataclass
class ModelInfo:
    """The model the app makes avatars with, or why there is none."""

    path: Path
    is_demo_default: bool  # no --model given: the model `make demo` trains
    found_in: str | None = None  # the default's place (STARTED_IN, IN_CHECKOUT); None: not found or given
    networks: tuple | None = None  # (E, G, D, cfg) as checkpoint.load_model returns, when it loaded
    step: int | None = None
    error: str | None = None  # why it cannot be used

    @property
    def ok(self) -> bool:
        return self.networks is not None

    @property
    def cfg(self) -> Any:
        return None if self.networks is None else self.networks[3]

    def shown_path(self) -> str:
        """The path as the page shows it: relative to the folder the app was started in, when inside it."""
        try:
            return str(self.path.relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(self.path)

    def describe(self) -> str:
        """One Markdown paragraph for the page."""
        origin = (
            f"the model `make demo` trains, found in {self.found_in} (no `--model` given)"
            if self.is_demo_default
            else "given by `--model`"
        )
        if self.ok:
            size = self.cfg.model.image_size
            step = f", meta-trained {self.step} steps" if self.step else ""
            shape = f"{size}×{size} pixels, preset `{self.cfg.preset}`{step}"
            return f"**Model:** `{self.shown_path()}` — {origin}; {shape}."
        return f"**No model to make avatars with.** {self.error}"


def load_model_info(path: Path | None, device: str) -> ModelInfo:
    """Load the model once for the whole app; a missing or unusable file becomes an error message.
    path None: the first of demo_model_candidates that exists."""

    from metahead.training import checkpoint

    is_default, found_in = path is None, None
    if is_default:
        candidates = demo_model_candidates()
        found = next(((file, where) for file, where in candidates if file.is_file()), None)
        if found is None:
            looked = " nor at ".join(f"`{file}` ({where})" for file, where in candidates)
            error = (
                f"No `--model` given, and `make demo` has made no model at {looked}. Run `make demo` in "
                "the checkout first (about 10 minutes on two cores), or start the app with "
                "`metahead app --model RUN/model.pt`. You can still open avatar files made earlier."
            )
            return ModelInfo(candidates[0][0], True, error=error)
        path, found_in = found
    else:
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            error = f"`{path}`: no such model file (`--model`). You can still open avatar files made earlier."
            return ModelInfo(path, False, error=error)
    try:
        networks = checkpoint.load_model(path, map_location=device)
        step = read_weights_file(path, mmap=True).get("step")
    except (checkpoint.CheckpointError, OSError, ValueError, KeyError) as err:
        which = f"`{path}` (the model `make demo` trains, found in {found_in}): " if is_default else ""
        return ModelInfo(path, is_default, found_in, error=f"{which}this model file cannot be used: {err}")
    return ModelInfo(
        path, is_default, found_in, networks=networks, step=int(step) if step is not None else None
    )
