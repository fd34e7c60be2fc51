"""The demo's stage records: OUT/work/<stage>.done.json, which let a rerun reuse a finished stage, and the
settings marker that decides whether a stage's folder is kept or started afresh."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from metahead.fileio import atomic_write_text

STAGES = ("corpus", "train", "avatar", "animate", "evaluate", "page")
WORK = "work"
# WORK's evaluation folders: the full protocol on a few test videos, FF and the nearest shot on more
EVALUATION, FEED_FORWARD_EVALUATION = "evaluation", "evaluation-without-finetuning"
DONE_SUFFIX = ".done.json"
FOLDER_MARKER = "demo-settings.json"  # inside a stage's folder: the settings it was made with


def plain_json(value: Any) -> Any:
    """JSON's view of a value (tuples become lists), so that settings compare equal after a round trip."""
    return json.loads(json.dumps(value))


def digest(value: Any) -> str:
    """A short, stable hash of a JSON value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


class StageRunner:
    """Runs stages in order, each unless an earlier run left a matching record (work/<stage>.done.json)."""

    def __init__(self, work: Path, log: Callable[[str], None]):
        self.work = work
        self.log = log
        self.digests: dict[str, str] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.reused: list[str] = []
        self.ran: list[str] = []
        self.seconds: dict[str, float] = {}

    def record_path(self, stage: str) -> Path:
        return self.work / f"{stage}{DONE_SUFFIX}"

    def previous(self, stage: str) -> dict[str, Any] | None:
        try:
            record = json.loads(self.record_path(stage).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return record if isinstance(record, dict) else None

    def run(
        self,
        stage: str,
        title: str,
        settings: dict[str, Any],
        inputs: Sequence[str],
        outputs: Callable[[dict[str, Any]], Iterable[Path]],
        action: Callable[[dict[str, Any] | None], dict[str, Any]],
        always: bool = False,
    ) -> dict[str, Any]:
        """Reuse the stage if its record has these settings and inputs and its outputs exist; else run
        `action(previous record)`, which returns the details to record (file names, numbers)."""
        number = STAGES.index(stage) + 1
        started = time.monotonic()
        wanted_inputs = {name: self.digests[name] for name in inputs}
        previous = self.previous(stage)
        if (
            not always
            and previous is not None
            and previous.get("settings") == settings
            and previous.get("inputs") == wanted_inputs
            and all(Path(p).exists() for p in outputs(previous.get("details", {})))
        ):
            self.log(f"[{number}/{len(STAGES)}] {title}: reusing the result of {previous.get('finished')}")
            self.reused.append(stage)
            record = previous
        else:
            why = "" if previous is None or always else " (settings or inputs changed)"
            self.log(f"[{number}/{len(STAGES)}] {title}{why}")
            self.record_path(stage).unlink(missing_ok=True)
            details = action(previous)
            record = {
                "stage": stage,
                "settings": settings,
                "inputs": wanted_inputs,
                "details": plain_json(details),
                "seconds": round(time.monotonic() - started, 1),
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
            record["digest"] = digest({k: record[k] for k in ("stage", "settings", "inputs", "details")})
            atomic_write_text(self.record_path(stage), json.dumps(record, indent=1) + "\n")
            self.ran.append(stage)
        self.seconds[stage] = round(time.monotonic() - started, 1)
        self.digests[stage] = record["digest"]
        self.records[stage] = record
        return record


def claim_folder(folder: Path, settings: dict[str, Any]) -> bool:
    """Make `folder` hold work for `settings`: keep it (True) when it was started with the same settings,
    else empty it (False). The settings are written into it before any work."""
    marker = folder / FOLDER_MARKER
    settings = plain_json(settings)
    try:
        kept = json.loads(marker.read_text()) == settings
    except (OSError, json.JSONDecodeError):
        kept = False
    if not kept and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps(settings, indent=1) + "\n")
    return kept
