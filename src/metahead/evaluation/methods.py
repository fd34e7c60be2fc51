"""The protocol's methods and what a job keeps of its frames: shared by protocol.py (which runs jobs) and
report.py (which tables them), so that neither imports the other."""

from __future__ import annotations

# name -> label in the report's tables
METHODS: dict[str, str] = {
    "ft": "FT",  # the avatar fine-tuned on the T frames (paper's "Ours-FT")
    "ff": "FF",  # feed-forward: ψ = P ê, no fine-tuning (paper's "Ours-FF")
    "nearest_shot": "nearest shot",
    "from_scratch": "from scratch",
}
MODEL_METHODS = ("ft", "ff")
SAMPLE_FRAMES = 2  # generated frames kept per job (for the report's image grids)
