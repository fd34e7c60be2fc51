"""Avatars: a person made from a few photos or a video with a meta-learned model, then rendered and animated.

    avatar = Avatar.create("runs/cpu64/model.pt", images=["me1.jpg", "me2.jpg"], finetune=True)
    avatar.save("me.avatar")
    frame = Avatar.load("me.avatar").render(landmarks)          # (68, 2) -> (S, S, 3) uint8
    for frame in avatar.animate("driver.mp4"): ...               # retargeted onto the avatar's face

core.py        the Avatar object (create, render, animate, save, load) and Animation
faces.py       its inputs: photos, a video or a dataset video -> T face crops with landmarks (FaceFrames)
driving.py     drivers: landmarks, dataset videos or video files -> a DrivingSequence
render.py      G with spectral norm folded in, landmark checks, frames to uint8
fileformat.py  the avatar file: format, version, reading it back with every check (AvatarError)

Everything below is importable from `metahead.avatar`.
"""

from metahead.avatar.core import Animation, Avatar
from metahead.avatar.driving import (
    DEFAULT_FPS,
    DrivingSequence,
    driving_from_dataset_video,
    driving_from_video,
    driving_sequence,
    hold_last_pose,
)
from metahead.avatar.faces import (
    FaceFrames,
    InputWarning,
    dataset_video_root,
    evenly_spaced,
    faces_from_dataset_video,
    faces_from_photos,
    faces_from_video,
    is_dataset_video,
    rescale_landmarks,
    resize_crop,
    resize_crops,
)
from metahead.avatar.fileformat import AVATAR_FORMAT, AVATAR_VERSION, MODES, AvatarError
from metahead.avatar.render import fold_spectral_norm, to_uint8

__all__ = [
    "AVATAR_FORMAT",
    "AVATAR_VERSION",
    "DEFAULT_FPS",
    "MODES",
    "Animation",
    "Avatar",
    "AvatarError",
    "DrivingSequence",
    "FaceFrames",
    "InputWarning",
    "dataset_video_root",
    "driving_from_dataset_video",
    "driving_from_video",
    "driving_sequence",
    "evenly_spaced",
    "faces_from_dataset_video",
    "faces_from_photos",
    "faces_from_video",
    "fold_spectral_norm",
    "hold_last_pose",
    "is_dataset_video",
    "rescale_landmarks",
    "resize_crop",
    "resize_crops",
    "to_uint8",
]
