"""The deterministic synthetic face engine, the choice of engine by name, and the detection cache in front of any.

:class:`SyntheticEngine` reads the faces drawn by :mod:`worker.emulator.synth`: the rectangle of each
frame and the identity vector in its cells. Its confidence is ``100 / (1 + (d / 0.2)^2)`` of the RMS
distance ``d`` between two vectors: the same photo again scores ≥ 99 (near-duplicate), another photo of
the same person ~93–98, a stranger ~20–40.

:class:`DetectionCache` keys results by the sha1 of the image bytes, so a repeated image (the common case
in tests, benchmarks and the demo) skips decoding entirely.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections import OrderedDict

import numpy as np
import numpy.typing as npt
from PIL import Image

from worker.api.images import GIF, sniff_image_type
from worker.emulator import synth
from worker.emulator.faces import DetectedFace, FaceEngine, ImageError, Vector, squared_distances

MAX_PIXELS = 40_000_000  # refuse decompression bombs as undecodable
HALF_CONFIDENCE_DISTANCE = 0.2
ENGINES = ("synthetic", "dlib")  # the names of EmulatorConfig.engine and --engine


def make_engine(name: str) -> FaceEngine:
    """The engine of that name (:data:`ENGINES`); ValueError for another name, RuntimeError naming the missing
    extra when the dlib engine cannot be loaded."""
    if name == "synthetic":
        return SyntheticEngine()
    if name == "dlib":
        from worker.emulator.dlib_engine import DlibEngine  # dlib is an optional extra: imported only when chosen

        return DlibEngine()
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {name!r}")


def decode_rgb(data: bytes) -> npt.NDArray[np.uint8]:
    """Bytes → RGB array; GIF → ImageError(-1400); anything Pillow cannot decode → ImageError(-1102)."""
    if sniff_image_type(data) == GIF:
        raise ImageError(-1400, "GIF images are not supported")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > MAX_PIXELS:
                raise ImageError(-1102, "image too large to decode")
            if img.format == "GIF":
                raise ImageError(-1400, "GIF images are not supported")
            return np.asarray(img.convert("RGB"))
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises many types for broken data
        raise ImageError(-1102, f"cannot decode image: {type(exc).__name__}") from exc


class SyntheticEngine:
    """Deterministic engine for synthetic faces (see module docstring)."""

    name = "synthetic"
    dim = synth.DIM

    def detect(self, image: bytes) -> list[DetectedFace]:
        rgb = decode_rgb(image)
        return [DetectedFace(rect, vector) for rect, vector in synth.read_faces(rgb)]

    def similarity(self, a: Vector, b: Vector) -> float:
        d = float(np.sqrt(np.mean((a.astype(np.float64) - b) ** 2)))
        return 100.0 / (1.0 + (d / HALF_CONFIDENCE_DISTANCE) ** 2)

    def similarity_matrix(self, queries: Vector, matrix: Vector) -> npt.NDArray[np.float64]:
        d2 = squared_distances(queries, matrix) / np.atleast_2d(queries).shape[1]  # mean over the dimensions
        out: npt.NDArray[np.float64] = 100.0 / (1.0 + d2 / (HALF_CONFIDENCE_DISTANCE**2))
        return out


DetectionResult = tuple[DetectedFace, ...] | ImageError  # faces largest first


def detect_sorted(engine: FaceEngine, data: bytes) -> DetectionResult:
    """The engine's faces largest first (ties top to bottom, left to right), or the ImageError it raised."""
    try:
        return tuple(sorted(engine.detect(data), key=lambda f: (-f.rect.area, f.rect.y, f.rect.x)))
    except ImageError as exc:
        return exc


class DetectionCache:
    """LRU of engine results (faces or the ImageError) keyed by sha1 of the bytes. Not thread-safe:
    the server touches it from its event loop only and runs the engine in a pool
    (:class:`worker.emulator.detector.Detector`)."""

    def __init__(self, engine: FaceEngine, max_entries: int = 4096) -> None:
        self.engine = engine
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, DetectionResult] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(data: bytes) -> bytes:
        return hashlib.sha1(data, usedforsecurity=False).digest()

    def get(self, key: bytes) -> DetectionResult | None:
        result = self._entries.get(key)
        if result is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        return result

    def put(self, key: bytes, result: DetectionResult) -> None:
        self.misses += 1
        self._entries[key] = result
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def compute(self, data: bytes) -> DetectionResult:
        """Run the engine (safe in a worker thread: touches no cache state)."""
        return detect_sorted(self.engine, data)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.hits = self.misses = 0
