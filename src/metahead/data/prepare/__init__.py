"""`metahead prepare`: real videos and photo folders into the dataset format (data.format).

Per source (a video file, or a folder of photos treated as one "video"): decode (sampled to --fps),
find and track the face's 68 landmarks, drop frames without landmarks, with too small a face or with
an implausible landmark jump, choose a stable square crop over the clip, resize to --size, store the
frames and the landmarks in crop coordinates (write_video: the folder appears only when complete).

At scale: `workers` processes; `shard=(i, n)` takes a hash share of the sources so a job array can
split VoxCeleb2 across machines; every finished source appends one JSON line to
DATA/progress/shard-i-of-n.jsonl, so a rerun skips what is done and a crash loses only the sources in
flight. Without shards, the run ends by writing manifest.csv, rejects.csv and prepare-summary.json;
with shards, `merge_shards` does that once all shards are done. Bad input never stops the run: it is
counted by reason and listed in rejects.csv.

config.py   PrepareConfig, the options a resumed run must keep, the default detector
process.py  one source: track, judge, crop, store (process_item -> ItemResult)
records.py  progress files, the options file, manifest.csv and rejects.csv, summaries
run.py      prepare_dataset (one process or a pool, sharded, resumable) and merge_shards
"""

from metahead.data.prepare.config import PrepareConfig, default_detector_factory
from metahead.data.prepare.process import (
    FRAME_DROP_REASONS,
    MAX_TRACKING_GAP_SECONDS,
    REJECT_REASONS,
    ItemResult,
    process_item,
)
from metahead.data.prepare.records import (
    OPTIONS_FILE,
    PROGRESS_DIR,
    REJECTS_FILE,
    SUMMARY_FILE,
    format_summary,
    progress_path,
    read_progress,
    summarise,
    write_outputs,
)
from metahead.data.prepare.run import merge_shards, prepare_dataset

__all__ = [
    "FRAME_DROP_REASONS",
    "MAX_TRACKING_GAP_SECONDS",
    "OPTIONS_FILE",
    "PROGRESS_DIR",
    "REJECTS_FILE",
    "REJECT_REASONS",
    "SUMMARY_FILE",
    "ItemResult",
    "PrepareConfig",
    "default_detector_factory",
    "format_summary",
    "merge_shards",
    "prepare_dataset",
    "process_item",
    "progress_path",
    "read_progress",
    "summarise",
    "write_outputs",
]
