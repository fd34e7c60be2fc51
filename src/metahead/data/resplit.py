"""A new split of a prepared dataset without preparing it again: e.g. a validation set of training people.

The new folder holds its own description and manifest and links to the source's videos, so it costs no
disk and no face tracking; the split is drawn as `prepare` draws it (sources.assign_splits), so
`prepare --test-fraction F --seed S` over the same inputs would give the same people.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from metahead.data.format import (
    MANIFEST,
    VIDEOS,
    DataError,
    read_info,
    read_manifest,
    write_info,
    write_manifest,
)
from metahead.data.sources import assign_splits


def resplit_dataset(
    source: str | os.PathLike,
    out: str | os.PathLike,
    split_of: dict[str, str] | None = None,
    test_fraction: float = 0.0,
    seed: int = 0,
    only_split: str | None = None,
) -> dict[str, dict[str, int]]:
    """Write OUT: SOURCE's videos (linked) with every identity's split drawn again, from `split_of` or
    `test_fraction` of the identities (see sources.assign_splits). only_split keeps only the videos SOURCE
    has in that split (e.g. "train": hold out some training people, leaving SOURCE's test people out).
    Returns {split: {"identities": n, "videos": n}}."""
    source, out = Path(source), Path(out)
    info = read_info(source)
    records = read_manifest(source, only_split)
    if not records:
        where = f"split {only_split!r} of " if only_split else ""
        raise DataError(f"{source / MANIFEST}: {where}the manifest lists no videos")
    if not (source / VIDEOS).is_dir():
        raise DataError(f"{source / VIDEOS}: missing; {source} has no videos folder to link to")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # SOURCE itself included
        raise DataError(f"{out}: exists and is not an empty folder; choose a new one")
    records = assign_splits(records, split_of, test_fraction, seed)

    out.mkdir(parents=True, exist_ok=True)
    link = out / VIDEOS
    try:
        # Relative, so the pair of folders can move together.
        link.symlink_to(os.path.relpath((source / VIDEOS).resolve(), out.resolve()), target_is_directory=True)
    except OSError as err:
        raise DataError(f"{link}: cannot link to {source / VIDEOS}: {err}") from err
    write_info(out, replace(info, source=f"metahead resplit of {source}"))
    write_manifest(out, records)  # last: a folder without a manifest is not a dataset yet
    counts: dict[str, dict[str, int]] = {}
    for split in sorted({rec.split for rec in records}):
        chosen = [rec for rec in records if rec.split == split]
        counts[split] = {"identities": len({rec.identity for rec in chosen}), "videos": len(chosen)}
    return counts
