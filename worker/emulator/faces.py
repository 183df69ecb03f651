"""The seam between the emulator and whatever finds and compares faces.

A face engine turns image bytes into detected faces (a rectangle plus an identity vector) and scores two
vectors on the API's 0–100 confidence scale. The emulator only ever talks to :class:`FaceEngine`; the
deterministic :class:`worker.emulator.engine.SyntheticEngine` is the default; the real one,
:class:`worker.emulator.dlib_engine.DlibEngine` (dlib's detector and 128-d face descriptor), is chosen with
``--engine dlib`` (:func:`worker.emulator.engine.make_engine`), without touching the server or the gallery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


class Rect(NamedTuple):
    """A face rectangle in image pixels: top-left corner, width, height (the API's ``face_rect``)."""

    x: int
    y: int
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height

    def to_json(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}


@dataclass(frozen=True)
class DetectedFace:
    rect: Rect
    vector: Vector


class ImageError(Exception):
    """An image the engine cannot use; ``code`` is the API code to answer (-1102 undecodable, -1400 format)."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code

    def __reduce__(self) -> tuple[type[ImageError], tuple[int, str]]:
        # Travels back from a pool process: rebuilt from (code, detail), not from Exception's args.
        return ImageError, (self.code, str(self))


@runtime_checkable
class FaceEngine(Protocol):
    """Contract of a face engine.

    * ``detect`` is deterministic for given bytes (the emulator caches its result by the bytes' sha1),
      may be called from a worker thread, and raises :class:`ImageError` for bytes it cannot decode.
    * ``similarity`` and ``similarity_matrix`` return confidences in [0, 100]; ``similarity_matrix``
      scores each row of a (q, dim) query batch against each row of a (n, dim) gallery matrix at once
      and returns (q, n) (the gallery's hot path: one call per request).
    * ``name`` and ``dim`` are written into a gallery file: a file made by one engine is refused by another.
    * Optional: an engine whose ``detect`` holds the GIL sets ``processes = True``, and the emulator runs it in
      a pool of processes (:mod:`worker.emulator.detector`); it must then pickle cheaply and may load its
      models once per process in ``warm_up()``. Otherwise ``detect`` runs in a small pool of threads.
    """

    name: str
    dim: int

    def detect(self, image: bytes) -> list[DetectedFace]: ...

    def similarity(self, a: Vector, b: Vector) -> float: ...

    def similarity_matrix(self, queries: Vector, matrix: Vector) -> npt.NDArray[np.float64]: ...


def squared_distances(queries: Vector, matrix: Vector) -> npt.NDArray[np.float64]:
    """Squared Euclidean distance of each row of ``queries`` (q, dim) to each row of ``matrix`` (n, dim): (q, n)."""
    q = np.atleast_2d(queries).astype(np.float64)
    m = np.atleast_2d(matrix).astype(np.float64)
    if m.shape[0] == 0 or q.shape[0] == 0:
        return np.zeros((q.shape[0], m.shape[0]), dtype=np.float64)
    # |q - m|² = |q|² + |m|² - 2 q·m: one matrix product instead of a (q, n, dim) temporary.
    d2: npt.NDArray[np.float64] = (q * q).sum(1)[:, None] + (m * m).sum(1)[None, :] - 2.0 * (q @ m.T)
    np.maximum(d2, 0.0, out=d2)
    return d2
