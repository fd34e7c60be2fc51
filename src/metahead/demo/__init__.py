"""The demo (pipeline.py while this package is being split)."""

from metahead.demo.pipeline import *  # noqa: F403
