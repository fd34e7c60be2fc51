"""Landmark tracking on video: detect once, then follow the face with the landmark fitter alone.

Each frame's search box is placed from the previous frame's landmarks (the box-to-landmarks relation is
measured at the last detection, so it suits whatever detector made it), and the fitter alone gives
the new landmarks: a few milliseconds instead of a full-frame detection. The detector runs again
- every `redetect_every` frames, in a small window around the face (cheap), to re-anchor the box; if
  the window has no face, on the whole frame, where a face elsewhere means the track slid off it;
  after `max_missed_checks` checks in a row that find no face at all, the track is dropped;
- at once when the face moved fast (the fitter, started from the last box, falls short of it);
- when the new landmarks are implausible next to the last ones (a shape or scale jump): tracking is
  lost and a full-frame detection starts it again.
`follow` is the bare tracking step, used to track backwards from a later detection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from metahead.landmarks.detect import Face, LandmarkDetector, box_iou, eye_distance, select_face


@dataclass
class TrackerConfig:
    redetect_every: int = 10  # frames between detector checks near the face (0: detect every frame)
    max_shape_change: float = 0.25  # mean non-rigid landmark change per frame, in eye distances
    max_scale_change: float = 0.3  # relative face-size change per frame
    max_missed_checks: int = 3  # detector checks in a row that find no face before the track is dropped
    select: str = "largest"  # which face starts a track when a full detection finds several
    window_scale: float = 2.5  # the check window's side, in face-box sides
    window_face_px: int = 100  # the face box is resized to about this for the check (HOG sees >= 80 px)
    min_check_iou: float = 0.3  # a detection in the window must overlap the track this much
    # A face that moved more than this (eye distances) since the last frame is checked by the detector
    # at once; if it finds none, fitted again from a box on the new landmarks (up to max_refits times).
    fast_motion: float = 0.1
    max_refits: int = 2


@dataclass
class TrackResult:
    face: Face | None  # None: no face this frame
    detected: bool  # this frame's box came from the detector (full frame or check window)
    num_faces: int | None  # faces a full-frame detection saw this frame (None: none ran)


def similarity_residual(moving: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Mean distance left after the best rotation + scale + shift of `moving` onto `target`, and the
    scale of `moving` relative to `target`. Points are (N, 2); 2-D Procrustes via complex numbers."""
    z = moving[:, 0].astype(np.float64) + 1j * moving[:, 1]
    w = target[:, 0].astype(np.float64) + 1j * target[:, 1]
    z = z - z.mean()
    w = w - w.mean()
    zz = float(np.vdot(z, z).real)
    if zz <= 1e-12:
        return float("inf"), 0.0
    a = np.vdot(z, w) / zz  # best complex factor: rotation and scale
    residual = float(np.abs(a * z - w).mean())
    scale = 1.0 / abs(a) if abs(a) > 1e-12 else float("inf")
    return residual, scale


def _landmark_frame(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and RMS radius of a landmark set: a reference frame that moves and scales with the face."""
    pts = landmarks.astype(np.float64)
    centre = pts.mean(0)
    radius = float(np.sqrt(((pts - centre) ** 2).sum(1).mean()))
    return centre, max(radius, 1e-6)


def box_relation(box: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The box in the landmarks' own frame: (dx, dy, width, height) / radius, relative to their centre."""
    centre, radius = _landmark_frame(landmarks)
    box_centre = (box[:2] + box[2:]) / 2
    size = box[2:] - box[:2]
    return np.concatenate([(box_centre - centre) / radius, size / radius])


def box_from_landmarks(landmarks: np.ndarray, relation: np.ndarray) -> np.ndarray:
    centre, radius = _landmark_frame(landmarks)
    box_centre = centre + relation[:2] * radius
    half = relation[2:] * radius / 2
    return np.concatenate([box_centre - half, box_centre + half])


class LandmarkTracker:
    """Follows one face through consecutive frames; call `reset()` between clips."""

    def __init__(self, detector: LandmarkDetector, config: TrackerConfig | None = None):
        self.detector = detector
        self.config = config or TrackerConfig()
        self.reset()

    def reset(self) -> None:
        self._face: Face | None = None
        self._relation: np.ndarray | None = None
        self._last_box: np.ndarray | None = None  # survives a lost track, to pick the same person again
        self._since_check = 0
        self._missed_checks = 0
        self.stats = {
            "frames": 0,
            "full_detections": 0,
            "window_checks": 0,
            "tracked": 0,
            "lost": 0,
            "refits": 0,
        }

    def seed(self, face: Face, relation: np.ndarray | None = None) -> None:
        """Start following `face` (e.g. found in a later frame, to track backwards from it)."""
        self.reset()
        self._face = face
        self._relation = box_relation(face.box, face.landmarks) if relation is None else relation
        self._last_box = face.box

    @property
    def relation(self) -> np.ndarray | None:
        return self._relation

    def follow(self, image: np.ndarray) -> Face | None:
        """One tracking step without any detection: the next face, or None (and the track ends) when the
        landmarks are implausible next to the last ones."""
        if self._face is None:
            return None
        box = box_from_landmarks(self._face.landmarks, self._relation)
        landmarks = self.detector.fit(image, box)
        if not self._plausible(landmarks, image.shape):
            self._face = None
            return None
        self.stats["tracked"] += 1
        self._face = Face(box=box, landmarks=landmarks, score=self._face.score)
        return self._face

    def update(self, image: np.ndarray) -> TrackResult:
        self.stats["frames"] += 1
        if self._face is None or self.config.redetect_every <= 0:
            return self._acquire(image)
        box = box_from_landmarks(self._face.landmarks, self._relation)
        self._since_check += 1
        if self._since_check >= self.config.redetect_every:
            return self._check(image, box)
        landmarks = self.detector.fit(image, box)
        if not np.isfinite(landmarks).all():  # the fitter found no face in the box (FAN): look again
            self.stats["lost"] += 1
            return self._acquire(image)
        if self._moved(landmarks) > self.config.fast_motion:
            # A fast move leaves the fitter short of the face (it starts from the last frame's box):
            # let the detector place the box now.
            return self._check(image, box_from_landmarks(landmarks, self._relation), (landmarks, box))
        if not self._plausible(landmarks, image.shape):
            self.stats["lost"] += 1
            return self._acquire(image)
        self.stats["tracked"] += 1
        return self._keep(box, landmarks, self._face.score, detected=False)

    def _check(self, image: np.ndarray, box: np.ndarray, tracked=None) -> TrackResult:
        """Re-anchor the track on a detection near `box`; `tracked` = (landmarks, box) already fitted."""
        self._since_check = 0
        found = self._detect_near(image, box)
        if found is None:
            # Not near the track: if the full frame has a face elsewhere, the track had slid off it.
            self.stats["full_detections"] += 1
            boxes = self.detector.detect_boxes(image)
            found = self._best_overlap(boxes, box)
            if found is None and boxes:
                self.stats["lost"] += 1
                return self._acquire(image, boxes)
        if found is not None:
            self._missed_checks = 0
            box, score = found
            landmarks = self.detector.fit(image, box)
            self._relation = box_relation(box, landmarks)
            return self._keep(box, landmarks, score, detected=True)
        # No face anywhere (a turned head the frontal detector misses): keep following for a while.
        self._missed_checks += 1
        if self._missed_checks >= self.config.max_missed_checks:
            return self._drop()
        if tracked is None:
            landmarks = self.detector.fit(image, box)
        else:
            landmarks, box = self._refit(image, *tracked)
        if not self._plausible(landmarks, image.shape):
            return self._drop()
        self.stats["tracked"] += 1
        return self._keep(box, landmarks, self._face.score, detected=False)

    def _refit(self, image: np.ndarray, landmarks: np.ndarray, box: np.ndarray):
        """Fit again from a box on the new landmarks until they settle (up to max_refits times)."""
        eyes = max(eye_distance(self._face.landmarks), 1.0)
        for _ in range(self.config.max_refits):
            self.stats["refits"] += 1
            box = box_from_landmarks(landmarks, self._relation)
            refitted = self.detector.fit(image, box)
            if not np.isfinite(refitted).all():
                break
            change = float(np.linalg.norm(refitted.mean(0) - landmarks.mean(0))) / eyes
            landmarks = refitted
            if change <= self.config.fast_motion / 4:
                break
        return landmarks, box

    def _moved(self, landmarks: np.ndarray) -> float:
        """How far the face moved since the last frame, in eye distances (inf for a failed fit)."""
        if not np.isfinite(landmarks).all():
            return float("inf")
        eyes = max(eye_distance(self._face.landmarks), 1.0)
        return float(np.linalg.norm(landmarks.mean(0) - self._face.landmarks.mean(0))) / eyes

    def _keep(self, box: np.ndarray, landmarks: np.ndarray, score: float, detected: bool) -> TrackResult:
        self._face = Face(box=box, landmarks=landmarks, score=score)
        self._last_box = box
        return TrackResult(face=self._face, detected=detected, num_faces=None)

    def _drop(self) -> TrackResult:
        self.stats["lost"] += 1
        self._face = None
        return TrackResult(face=None, detected=True, num_faces=0)

    def _plausible(self, landmarks: np.ndarray, shape: tuple[int, ...]) -> bool:
        if not np.isfinite(landmarks).all():
            return False
        previous = self._face.landmarks
        residual, scale = similarity_residual(landmarks, previous)
        eyes = max(eye_distance(previous), 1.0)
        if residual / eyes > self.config.max_shape_change:
            return False
        if not 1 / (1 + self.config.max_scale_change) <= scale <= 1 + self.config.max_scale_change:
            return False
        centre = landmarks.mean(0)
        return bool(0 <= centre[0] < shape[1] and 0 <= centre[1] < shape[0])

    def _acquire(self, image: np.ndarray, boxes: list[tuple[np.ndarray, float]] | None = None) -> TrackResult:
        """Full-frame detection (or the boxes of one just made): start or restart the track."""
        if boxes is None:
            self.stats["full_detections"] += 1
            boxes = self.detector.detect_boxes(image)
        faces = [Face(box, self.detector.fit(image, box), score) for box, score in boxes]
        faces = [f for f in faces if np.isfinite(f.landmarks).all()]
        face = None
        if faces and self._last_box is not None:
            # After a loss, prefer the face where the track was over a stranger who happens to be larger.
            best = max(faces, key=lambda f: box_iou(f.box, self._last_box))
            if box_iou(best.box, self._last_box) > 0.2:
                face = best
        if face is None:
            face = select_face(faces, image.shape, self.config.select)
        self._face = face
        self._since_check = 0
        self._missed_checks = 0
        if face is not None:
            self._relation = box_relation(face.box, face.landmarks)
            self._last_box = face.box
        return TrackResult(face=face, detected=True, num_faces=len(faces))

    def _detect_near(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float] | None:
        """Run the detector on a window around `box`, scaled so the face is about window_face_px."""
        self.stats["window_checks"] += 1
        cfg = self.config
        h, w = image.shape[:2]
        side = float(max(box[2] - box[0], box[3] - box[1], 1.0))
        centre = (box[:2] + box[2:]) / 2
        half = cfg.window_scale * side / 2
        x0, y0 = (max(0, int(np.floor(c - half))) for c in centre)
        x1, y1 = min(w, int(np.ceil(centre[0] + half))), min(h, int(np.ceil(centre[1] + half)))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        window = image[y0:y1, x0:x1]
        scale = min(3.0, cfg.window_face_px / side)
        if abs(scale - 1.0) > 0.05:
            size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
            window = np.asarray(Image.fromarray(window).resize(size, Image.Resampling.BILINEAR))
        else:
            scale = 1.0
        offset = np.array([x0, y0, x0, y0], dtype=np.float64)
        boxes = [
            ((found + 0.5) / scale - 0.5 + offset, score)
            for found, score in self.detector.detect_boxes(window)
        ]
        return self._best_overlap(boxes, box)

    def _best_overlap(self, boxes: list[tuple[np.ndarray, float]], box: np.ndarray):
        """The detection overlapping `box` most, if it overlaps at least min_check_iou."""
        scored = [(box_iou(found, box), found, score) for found, score in boxes]
        scored = [s for s in scored if s[0] >= self.config.min_check_iou]
        if not scored:
            return None
        _, found, score = max(scored, key=lambda s: s[0])
        return found, score
