"""Avatars (the Avatar object is in core.py while this package is being split)."""

from metahead.avatar.core import *  # noqa: F403
