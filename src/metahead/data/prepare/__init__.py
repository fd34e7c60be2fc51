"""`metahead prepare` (process.py while this package is being split)."""

from metahead.data.prepare.process import *  # noqa: F403
