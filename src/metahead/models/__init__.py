"""The paper's networks: embedder E, generator G (+ projection P), discriminator D (+ W, w0, b), and the
perceptual networks used by the content loss. Blocks shared by all live in `blocks`."""

from metahead.models.discriminator import Discriminator
from metahead.models.embedder import Embedder, embed_person
from metahead.models.generator import Generator

__all__ = ["Discriminator", "Embedder", "Generator", "embed_person"]
