"""The 68-point landmark scheme (iBUG 300-W / dlib / FAN order) split into the parts the paper draws."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FacePart:
    name: str
    start: int  # first landmark index
    stop: int  # one past the last landmark index
    closed: bool  # drawn as a closed polyline (eyes, lips)
    color: tuple[int, int, int]  # RGB, 0-255


# Each part gets its own colour so the generator can tell the parts apart (paper, Sec. 3.2).
FACE_PARTS: tuple[FacePart, ...] = (
    FacePart("jaw", 0, 17, False, (255, 255, 255)),
    FacePart("right_brow", 17, 22, False, (255, 128, 0)),
    FacePart("left_brow", 22, 27, False, (255, 200, 0)),
    FacePart("nose_bridge", 27, 31, False, (0, 128, 255)),
    FacePart("nostrils", 31, 36, False, (0, 255, 255)),
    FacePart("right_eye", 36, 42, True, (0, 255, 0)),
    FacePart("left_eye", 42, 48, True, (128, 255, 0)),
    FacePart("outer_lips", 48, 60, True, (255, 0, 0)),
    FacePart("inner_lips", 60, 68, True, (255, 0, 255)),
)

NUM_LANDMARKS = 68
RIGHT_EYE = slice(36, 42)  # the subject's right eye: image left in a frontal view
LEFT_EYE = slice(42, 48)


def _mirror_order() -> tuple[int, ...]:
    """MIRROR_ORDER[i]: the landmark that point i becomes in a horizontally mirrored face (the subject's
    right brow is the mirrored face's left brow, and so on), so mirrored points re-indexed by it follow the
    scheme again."""
    pairs = [(i, 16 - i) for i in range(17)]  # jaw, walked from the other side
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(27 + i, 27 + i) for i in range(4)]  # nose bridge: on the axis
    pairs += [(31 + i, 35 - i) for i in range(5)]  # nostrils
    # Eyes run clockwise in the image from their image-left corner (36 outer, 42 inner): outer to outer, inner
    # to inner, upper lid to upper lid.
    pairs += list(zip(range(36, 42), (45, 44, 43, 42, 47, 46)))
    pairs += [(48 + i, 54 - i) for i in range(7)]  # upper outer lip, corner to corner
    pairs += [(55 + i, 59 - i) for i in range(5)]  # lower outer lip
    pairs += [(60 + i, 64 - i) for i in range(5)]  # upper inner lip
    pairs += [(65 + i, 67 - i) for i in range(3)]  # lower inner lip
    order = dict(pairs) | {b: a for a, b in pairs}
    return tuple(order[i] for i in range(NUM_LANDMARKS))


MIRROR_ORDER = _mirror_order()


def segments() -> list[tuple[int, int, int]]:
    """All line segments as (part index, landmark a, landmark b)."""
    out = []
    for p, part in enumerate(FACE_PARTS):
        idx = list(range(part.start, part.stop))
        if part.closed:
            idx.append(part.start)
        out.extend((p, a, b) for a, b in zip(idx[:-1], idx[1:]))
    return out
