"""Atomic file writes (a temporary file in the same folder, fsync, then rename over the target), and
reading files of tensors without running code."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes the file private (0600); give it the permissions an ordinary new file would have.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class UnreadableFile(ValueError):
    """A file of tensors that cannot be read; the message says why in our words (no advice from torch)."""


def read_weights_file(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """torch.load(path, weights_only=True): tensors and plain values only, so reading never runs code.

    An unreadable file raises UnreadableFile saying what is wrong with it. Torch's own text is not passed
    on: for a file with code in it, it advises loading with weights_only=False, i.e. running that code.
    """
    import pickle

    import torch

    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise UnreadableFile(f"cannot open it ({err.strerror or type(err).__name__})") from None
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise UnreadableFile(
                "it holds Python objects besides tensors and plain values, and reading those could run "
                "code: it was not written by metahead, or it was changed since"
            ) from None
        raise UnreadableFile(_CORRUPT) from None
    except Exception:  # noqa: BLE001 -- torch raises RuntimeError, OSError, EOFError, KeyError, ...
        raise UnreadableFile(_CORRUPT) from None


_CORRUPT = (
    "it is truncated or damaged (not a complete file as torch.save writes it): cut short while being "
    "written or copied, or not a weights file at all"
)
