"""What `prepare` is given: finding videos and photo folders, naming them, splitting them by identity.

Layouts (paths relative to each INPUT folder; a folder named like a VoxCeleb id, e.g. id00012, given
as INPUT counts as its own identity level):

    INPUT/clip.mp4                    identity = video = "clip"        (each loose file its own person)
    INPUT/person/clip.mp4             identity = "person", video = "clip"
    INPUT/id00012/21Uxsk56VDQ/00001.mp4   VoxCeleb2: identity = speaker id, one stored video per
                                      utterance, video = "YouTube id/utterance" (21Uxsk56VDQ/00001;
                                      the manifest needs (identity, video) unique)
    INPUT/id10001/1zcIwhmdeo4/*.jpg   VoxCeleb1 frame folders (and any photo folder): identity = first
                                      level, video = the folder holding the images, frames = the images;
                                      id/youtube-id/utterance/*.jpg gives video = "youtube-id/utterance"
    INPUT/*.jpg                       a folder of photos given directly: one "video" named after it

`--identity NAME` puts everything under one identity; `--identity-map FILE` names identities per file.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from metahead.data.video_io import is_image_file, is_video_file, list_images

VOXCELEB_ID = re.compile(r"^id\d{5}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SourceItem:
    kind: str  # "video" (one file) or "photos" (a folder of images, or one image)
    source: str  # absolute path of the file or folder
    identity: str
    video: str
    path: str  # where it is stored, relative to DATA/videos; unique
    split: str = "train"  # assign_splits sets it


def safe_name(name: str) -> str:
    """A path component made of letters, digits, '.', '_' and '-' only."""
    cleaned = _UNSAFE.sub("_", name).strip("._") or "_"
    return cleaned


def _video_item(root: Path, file: Path) -> SourceItem:
    parts = list(file.relative_to(root).parts) if file != root else [file.name]
    if VOXCELEB_ID.match(root.name) and file != root:
        parts = [root.name, *parts]
    stem = Path(parts[-1]).stem
    if len(parts) == 1:
        identity, video = stem, stem
    elif len(parts) == 2:
        identity, video = parts[0], stem
    else:
        identity, video = parts[0], f"{parts[-2]}/{stem}"
    path = "/".join(safe_name(p) for p in [*parts[:-1], stem])
    return SourceItem("video", str(file.resolve()), identity, video, path)


def _photos_item(root: Path, folder: Path) -> SourceItem:
    parts = list(folder.relative_to(root).parts)
    if VOXCELEB_ID.match(root.name) or not parts:
        parts = [root.name, *parts]
    # The folder of images plays the part of an utterance file: two levels deep it is the video, deeper
    # (VoxCeleb1: id/youtube-id/utterance/*.jpg) its parent is.
    identity, video = parts[0], parts[-1] if len(parts) <= 2 else f"{parts[-2]}/{parts[-1]}"
    path = "/".join(safe_name(p) for p in parts)
    return SourceItem("photos", str(folder.resolve()), identity, video, path)


def discover(inputs: Sequence[str | os.PathLike]) -> list[SourceItem]:
    """All videos and photo folders under the inputs, sorted by stored path.

    Raises FileNotFoundError for a missing input and ValueError when two sources would be stored at
    the same path (give them distinct folder names).
    """
    items: list[SourceItem] = []
    for raw in inputs:
        root = Path(raw)
        if not root.exists():
            raise FileNotFoundError(f"{root}: input not found")
        if root.is_file():
            if is_video_file(root):
                items.append(_video_item(root.parent, root))
            elif is_image_file(root):
                stem = root.stem
                items.append(SourceItem("photos", str(root.resolve()), stem, stem, safe_name(stem)))
            else:
                raise ValueError(f"{root}: not a video ({'/'.join(sorted(_exts()))}) or image file")
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            folder = Path(dirpath)
            visible = sorted(f for f in filenames if not f.startswith("."))
            for name in visible:
                if is_video_file(name):
                    items.append(_video_item(root, folder / name))
            if any(is_image_file(name) for name in visible):
                items.append(_photos_item(root, folder))
    seen: dict[str, str] = {}
    for item in items:
        if item.path in seen:
            raise ValueError(f"{item.source} and {seen[item.path]} would both be stored as {item.path!r}")
        seen[item.path] = item.source
    return unique_videos(sorted(items, key=lambda it: it.path))


def _exts() -> set[str]:
    from metahead.data.video_io import VIDEO_EXTENSIONS

    return {e.lstrip(".") for e in VIDEO_EXTENSIONS}


def photo_files(item: SourceItem) -> list[Path]:
    source = Path(item.source)
    return [source] if source.is_file() else list_images(source)


def read_identity_map(path: str | os.PathLike, key_column: str = "path", identity_column: str = "identity"):
    """A CSV/TSV naming identities: key_column holds a source's path (relative to its input), its file
    name or its stem; identity_column the person (e.g. real-dev's MANIFEST.tsv: file, person_id_guess)."""
    path = Path(path)
    text = path.read_text()
    dialect = "excel-tab" if "\t" in text.splitlines()[0] else "excel"
    rows = list(csv.DictReader(text.splitlines(), dialect=dialect))
    if not rows or key_column not in rows[0] or identity_column not in rows[0]:
        raise ValueError(f"{path}: needs columns {key_column!r} and {identity_column!r}")
    mapping: dict[str, str] = {}
    for row in rows:
        key, identity = (row[key_column] or "").strip(), (row[identity_column] or "").strip()
        if key and identity:
            mapping[key] = identity
    return mapping


def apply_identities(
    items: Iterable[SourceItem], identity: str | None = None, identity_map: dict[str, str] | None = None
) -> list[SourceItem]:
    """Override identities: one for all, or per source by relative path, file name or stem."""
    out = []
    for item in items:
        new = identity
        if new is None and identity_map:
            source = Path(item.source)
            candidates = [item.path, source.name, source.stem]
            candidates += ["/".join(source.parts[-k:]) for k in range(2, min(4, len(source.parts)) + 1)]
            new = next((identity_map[c] for c in candidates if c in identity_map), None)
        out.append(replace(item, identity=safe_identity(new)) if new else item)
    return unique_videos(out)


def unique_videos(items: Sequence[SourceItem]) -> list[SourceItem]:
    """The manifest needs (identity, video) unique: where renamed identities make two sources collide,
    their stored paths (unique) become their video names."""
    counts = Counter((it.identity, it.video) for it in items)
    return [replace(it, video=it.path) if counts[(it.identity, it.video)] > 1 else it for it in items]


def safe_identity(name: str) -> str:
    return name.replace(",", "_").replace("\n", " ").strip()


def read_split_file(path: str | os.PathLike) -> dict[str, str]:
    """Identity -> split from a VoxCeleb meta file (vox1_meta.csv, vox2_meta.csv: a row per identity with
    a dev/test column) or a plain list "identity split" per line. VoxCeleb's "dev" is our "train"."""
    path = Path(path)
    splits: dict[str, str] = {}
    names = {"dev": "train", "train": "train", "test": "test"}
    for line in path.read_text().splitlines():
        tokens = [t.strip() for t in re.split(r"[,\t ]+", line) if t.strip()]
        split = next((names[t.lower()] for t in tokens if t.lower() in names), None)
        ident = next((t for t in tokens if VOXCELEB_ID.match(t)), None)
        if ident is None and split is not None and len(tokens) == 2:
            ident = tokens[0] if tokens[1].lower() in names else tokens[1]
        if ident and split:
            splits[ident] = split
    if not splits:
        raise ValueError(
            f"{path}: no 'identity split' pairs found (expected VoxCeleb meta or 'id split' lines)"
        )
    return splits


def read_identity_list(path: str | os.PathLike) -> set[str]:
    """Identities, one per line (or separated by commas/whitespace); '#' starts a comment."""
    out = set()
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0]
        out.update(t for t in re.split(r"[,\s]+", line) if t)
    return out


Splittable = TypeVar("Splittable")  # a dataclass with `identity` and `split`: SourceItem, VideoRecord


def assign_splits(
    items: Sequence[Splittable],
    split_of: dict[str, str] | None = None,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> list[Splittable]:
    """Give every item its identity's split: from `split_of` (official splits; identities not listed
    are train) or, without it, `test_fraction` of the identities (at least one when > 0 and there are
    two or more) chosen by a seeded hash, so every shard of a run and every rerun agrees. A fraction of 1
    makes an evaluation-only dataset (every identity in test)."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test fraction must be in [0, 1], got {test_fraction}")
    if split_of is not None:
        return [replace(it, split=split_of.get(it.identity, "train")) for it in items]
    identities = sorted({it.identity for it in items})
    count = round(test_fraction * len(identities))
    if test_fraction > 0 and count == 0 and len(identities) >= 2:
        count = 1
    ranked = sorted(identities, key=lambda i: hashlib.sha1(f"{seed}:{i}".encode()).hexdigest())
    test = set(ranked[:count])
    return [replace(it, split="test" if it.identity in test else "train") for it in items]


def parse_shard(text: str) -> tuple[int, int]:
    """ "i/n" with 0 <= i < n (0-based, like most job arrays' task ids)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"shard must look like i/n (0-based), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {text!r}: need 0 <= i < n")
    return index, count


def shard_items(items: Sequence[SourceItem], index: int, count: int) -> list[SourceItem]:
    """This shard's share, by a hash of the stored path (stable when inputs are added)."""
    if count == 1:
        return list(items)
    return [it for it in items if int(hashlib.sha1(it.path.encode()).hexdigest(), 16) % count == index]
