"""Synthetic talking-head corpus: 3D parametric heads with exact 68-point landmarks (docs/synthetic.md).

Identities differ in face geometry (so landmarks carry identity), skin, hair, eyes, brows, lips, ears
and build; each identity's videos differ in background, clothing, lighting and framing; within a video
the head turns in 3D, talks, blinks, smiles and raises its brows along smooth random trajectories.

    identity.py  who: FaceShape, Looks, HairStyle, sample_identity
    face.py      the head surface and the 68 landmarks on it, posed by an Expression
    meshes.py    triangle meshes of head, hair, ears, nose, neck, torso and per-frame features
    motion.py    smooth random pose and expression trajectories
    scene.py     per-video background, clothing, lighting, framing
    raster.py    a vectorised numpy z-buffer rasteriser
    render.py    VideoRenderer: pose, project, rasterise (supersampled), shade, composite
    corpus.py    generate_corpus: the dataset format, split by identity, workers, resumable
    grid.py      a contact sheet of identities x frames (docs/images/synthetic-grid.png)
"""

from metahead.data.synthetic.corpus import (
    generate_corpus,
    identity_name,
    make_identity,
    make_video,
    render_video,
    split_identities,
    video_name,
)
from metahead.data.synthetic.face import Expression
from metahead.data.synthetic.identity import Identity, sample_identity
from metahead.data.synthetic.meshes import FACE_MATERIALS, Material
from metahead.data.synthetic.motion import Motion, sample_motion
from metahead.data.synthetic.render import BACKGROUND_LABEL, Frame, VideoRenderer
from metahead.data.synthetic.scene import VideoStyle, sample_video_style

__all__ = [
    "BACKGROUND_LABEL",
    "Expression",
    "FACE_MATERIALS",
    "Frame",
    "Identity",
    "Material",
    "Motion",
    "VideoRenderer",
    "VideoStyle",
    "generate_corpus",
    "identity_name",
    "make_identity",
    "make_video",
    "render_video",
    "sample_identity",
    "sample_motion",
    "sample_video_style",
    "split_identities",
    "video_name",
]
