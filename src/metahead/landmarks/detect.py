"""Face detection and 68-point landmarks on real images, behind a small interface.

A detector finds face boxes (`detect_boxes`) and fits the 68 landmarks inside a given box (`fit`).
Keeping the two apart is what makes tracking cheap: on video, `landmarks.track.LandmarkTracker` places
the next frame's box from the last frame's landmarks and only calls `detect_boxes` when it must.

Implementations:
- `DlibLandmarkDetector` (default, offline): dlib's HOG frontal face detector and the 68-point shape
  predictor of the `face-recognition-models` package.
- `FanLandmarkDetector`: a hook for FAN (Bulat & Tzimiropoulos, the `face-alignment` package the paper
  used) where a user has it and its weights installed. Imported lazily; never downloads.

All coordinates are image pixels with pixel centres at integers; boxes are (x0, y0, x1, y1).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from metahead.landmarks.parts import LEFT_EYE, NUM_LANDMARKS, RIGHT_EYE


@dataclass
class Face:
    box: np.ndarray  # float64 (4,): x0, y0, x1, y1
    landmarks: np.ndarray  # float32 (68, 2): x, y
    score: float  # the detector's confidence for the box (tracked frames carry their last detection's)


@runtime_checkable
class LandmarkDetector(Protocol):
    """What prepare and the tracker need from a face/landmark detector."""

    name: str

    def detect_boxes(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Face boxes in an RGB uint8 image (H, W, 3), each (box (4,), score), best first."""
        ...

    def fit(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The 68 landmarks (68, 2) float32 of the face inside `box`."""
        ...

    def detect(self, image: np.ndarray) -> list[Face]:
        """detect_boxes, then fit in each box."""
        ...


def box_area(box: np.ndarray) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.concatenate([np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])])
    overlap = box_area(inter)
    union = box_area(a) + box_area(b) - overlap
    return overlap / union if union > 0 else 0.0


def eye_distance(landmarks: np.ndarray) -> float:
    """Inter-ocular distance: between the centres of the two eyes' six points."""
    pts = np.asarray(landmarks, dtype=np.float64)
    return float(np.linalg.norm(pts[LEFT_EYE].mean(0) - pts[RIGHT_EYE].mean(0)))


def select_face(faces: list[Face], image_shape: tuple[int, ...], policy: str = "largest") -> Face | None:
    """Pick one face: the largest box, or the one whose centre is nearest the image centre."""
    if not faces:
        return None
    if policy == "largest":
        return max(faces, key=lambda f: box_area(f.box))
    if policy == "central":
        centre = np.array([image_shape[1] - 1, image_shape[0] - 1], dtype=np.float64) / 2
        return min(faces, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)))
    raise ValueError(f"unknown face selection policy {policy!r} (use 'largest' or 'central')")


def _check_image(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"images must be HxWx3 uint8 RGB, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


class BoxThenFitDetector:
    """`detect` for any detector that has `detect_boxes` and `fit`."""

    def detect(self, image: np.ndarray) -> list[Face]:
        return [
            Face(box=box, landmarks=self.fit(image, box), score=score)  # type: ignore[attr-defined]
            for box, score in self.detect_boxes(image)  # type: ignore[attr-defined]
        ]


def face_recognition_model_path(filename: str) -> Path:
    """A model file of the face-recognition-models package, found without importing it (its __init__
    imports pkg_resources, which current setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{filename}: the face-recognition-models package is not installed "
            "(pip install face-recognition-models)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the face-recognition-models package")
    return path


class DlibLandmarkDetector(BoxThenFitDetector):
    """dlib's HOG frontal face detector + 68-point shape predictor (iBUG 300-W scheme, like FAN).

    detect_max_side: images are scaled down to this longer side for detection (HOG's cost grows with the
        pixel count; landmarks are always fitted at full resolution). If that finds nothing, a second
        pass looks at twice that resolution (large photos with a small face).
    upsample_when_empty: if still nothing is found in an image that needed no scaling down, look again
        at twice its resolution (HOG's smallest face is about 80 px; this finds faces down to about
        40 px, and more false ones: off by default, prepare drops faces that small anyway).
    score_threshold: added to dlib's detection threshold (negative finds more, less certain faces).
    """

    name = "dlib"

    def __init__(
        self,
        predictor_path: str | os.PathLike | None = None,
        detect_max_side: int = 640,
        upsample_when_empty: bool = False,
        score_threshold: float = 0.0,
    ):
        import dlib  # imported here so that the package imports without dlib present

        path = (
            Path(predictor_path)
            if predictor_path
            else face_recognition_model_path("shape_predictor_68_face_landmarks.dat")
        )
        if not path.is_file():
            raise FileNotFoundError(f"{path}: shape predictor file not found")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(path))
        self.detect_max_side = int(detect_max_side)
        self.upsample_when_empty = upsample_when_empty
        self.score_threshold = float(score_threshold)

    def detect_boxes(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        image = _check_image(image)
        longest = max(image.shape[:2])
        scale = min(1.0, self.detect_max_side / longest)
        found = self._run(image, scale, 0)
        if not found and scale < 1.0:
            found = self._run(image, min(1.0, 2 * scale), 0)
        elif not found and self.upsample_when_empty:
            found = self._run(image, 1.0, 1)
        found.sort(key=lambda bs: -bs[1])
        return found

    def _run(self, image: np.ndarray, scale: float, upsample: int) -> list[tuple[np.ndarray, float]]:
        small = image
        if scale < 1.0:
            h, w = image.shape[:2]
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        # dlib maps detections on an upsampled image back to `small`'s coordinates itself.
        rects, scores, _ = self._detector.run(small, upsample, self.score_threshold)
        out = []
        for rect, score in zip(rects, scores):
            # dlib's rectangles are inclusive pixel indices; map back to full-resolution pixel centres.
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float64)
            out.append(((box + 0.5) / scale - 0.5, float(score)))
        return out

    def fit(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        image = _check_image(image)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        shape = self._predictor(image, self._dlib.rectangle(x0, y0, x1, y1))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


class FanLandmarkDetector(BoxThenFitDetector):
    """FAN through the `face-alignment` package, for users who have it (the paper's landmarks).

    Never downloads: face-alignment fetches its weights into torch hub's cache on first use, so this
    checks that cache (or `weights_dir`) first and raises FileNotFoundError if they are not there; run
    face-alignment once yourself to fetch them where you allow downloads. Untested here (not installed).
    """

    name = "fan"
    _WEIGHT_PREFIXES = ("2DFAN4", "s3fd")

    def __init__(self, device: str = "cpu", weights_dir: str | os.PathLike | None = None):
        try:
            import face_alignment  # noqa: F401  (optional dependency)
        except ImportError as err:
            raise ImportError(
                "the FAN detector needs the face-alignment package (pip install face-alignment)"
            ) from err
        if weights_dir is None:
            import torch

            weights_dir = Path(torch.hub.get_dir()) / "checkpoints"
        weights_dir = Path(weights_dir)
        present = [p.name for p in weights_dir.glob("*")] if weights_dir.is_dir() else []
        missing = [pre for pre in self._WEIGHT_PREFIXES if not any(n.startswith(pre) for n in present)]
        if missing:
            raise FileNotFoundError(
                f"{weights_dir}: FAN weights {missing} not found; metahead never downloads them. Run "
                "face-alignment once where downloads are allowed, or point weights_dir at the files."
            )
        landmarks_type = (
            getattr(face_alignment.LandmarksType, "TWO_D", None) or face_alignment.LandmarksType._2D
        )
        self._fa = face_alignment.FaceAlignment(landmarks_type, device=device, flip_input=False)

    def detect_boxes(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        image = _check_image(image)
        found = self._fa.face_detector.detect_from_image(image[..., ::-1].copy()) or []  # S3FD wants BGR
        out = [(np.asarray(d[:4], dtype=np.float64), float(d[4]) if len(d) > 4 else 1.0) for d in found]
        out.sort(key=lambda bs: -bs[1])
        return out

    def fit(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        image = _check_image(image)
        result = self._fa.get_landmarks_from_image(image, detected_faces=[np.asarray(box, dtype=np.float32)])
        if not result:
            return np.full((NUM_LANDMARKS, 2), np.nan, dtype=np.float32)
        return np.asarray(result[0], dtype=np.float32)[:, :2]


DETECTORS = {"dlib": DlibLandmarkDetector, "fan": FanLandmarkDetector}


def make_detector(name: str = "dlib", **options: Any) -> LandmarkDetector:
    """Build a detector by name ("dlib" or "fan"); worker processes call this with a picklable name."""
    try:
        cls = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown landmark detector {name!r}; choose from {sorted(DETECTORS)}") from None
    return cls(**options)
