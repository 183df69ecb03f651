"""Synthetic face images: a generator (tests, benchmarks, the demo) and the reader the synthetic engine uses.

A synthetic "face" is a rectangle with a thick magenta frame (the marker the reader finds), a neutral
gray gap, and a GRID×GRID grid of gray cells whose levels encode an identity vector in [0, 1]^DIM.
Only luma carries the identity (JPEG keeps luma far better than chroma), and every size is a fraction of
the face's side, so identities survive JPEG re-encoding and resizing. Backgrounds are low-saturation
gray/tinted noise, so nothing but a frame ever looks magenta.

An identity is a fixed vector (:func:`identity_for`); each rendered "photo" of it adds small noise
(``variation``, seeded), so two photos of one person score ~90–97 and the same photo twice scores ~100
(the near-duplicate rule, code -1312), while two people score far below 60.

A face may pass the image's edge (as in a real photo, where Tencent's FaceRect then starts left of or above
the image): the reader takes a face cut by the edge to be square, as :func:`layout` draws them, and reports
its whole box, with a negative X or Y, or X + Width past the width. Its cells outside the image are unknown
and read as mid-gray, so such a face scores lower against its person, the more so the more is cut off.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image

from worker.emulator.faces import Rect, Vector

GRID = 6
DIM = GRID * GRID
BORDER_FRAC = 0.10  # frame thickness as a fraction of the face's shorter side
GAP_FRAC = 0.06  # neutral ring between frame and cells
MARKER = (255, 0, 255)
GAP_GRAY = 128
LUMA_LO, LUMA_HI = 30.0, 225.0
MIN_FACE = 24  # smallest side the reader accepts (px); render faces ≥ 48 px to keep identities exact
UNKNOWN = 0.5  # the value of a cell outside the image
DEFAULT_VARIATION = 0.03

IdentityLike = Vector | str | int
RectLike = Rect | tuple[int, int, int, int]


def identity_for(name_or_seed: str | int) -> Vector:
    """The identity vector of a name (or integer seed): DIM values in [0, 1), stable across runs."""
    digest = hashlib.sha256(str(name_or_seed).encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    return rng.random(DIM).astype(np.float32)


def _as_identity(identity: IdentityLike) -> Vector:
    if isinstance(identity, str | int):
        return identity_for(identity)
    vec = np.asarray(identity, dtype=np.float32)
    if vec.shape != (DIM,):
        raise ValueError(f"identity must have {DIM} values, got shape {vec.shape}")
    return vec


def _background(width: int, height: int, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    # Coarse gray noise, upscaled smoothly, with a faint tint: busy enough to look like a photo to JPEG,
    # never saturated enough to resemble the marker.
    coarse = rng.integers(50, 206, size=(max(2, height // 24), max(2, width // 24)), dtype=np.uint8)
    gray = np.asarray(Image.fromarray(coarse, "L").resize((width, height), Image.Resampling.BILINEAR), np.int16)
    tint = rng.integers(-12, 13, size=3)
    rgb = np.clip(gray[:, :, None] + tint[None, None, :], 0, 255)
    out: npt.NDArray[np.uint8] = rgb.astype(np.uint8)
    return out


def _paint_face(canvas: npt.NDArray[np.uint8], rect: Rect, vector: Vector) -> None:
    x, y, w, h = rect
    side = min(w, h)
    t = max(2, round(side * BORDER_FRAC))
    g = max(1, round(side * GAP_FRAC))
    canvas[y : y + h, x : x + w] = MARKER
    canvas[y + t : y + h - t, x + t : x + w - t] = GAP_GRAY
    ix0, iy0, ix1, iy1 = x + t + g, y + t + g, x + w - t - g, y + h - t - g
    xs = np.linspace(ix0, ix1, GRID + 1).round().astype(int)
    ys = np.linspace(iy0, iy1, GRID + 1).round().astype(int)
    levels = (LUMA_LO + np.clip(vector, 0.0, 1.0) * (LUMA_HI - LUMA_LO)).round().astype(np.uint8)
    for row in range(GRID):
        for col in range(GRID):
            canvas[ys[row] : ys[row + 1], xs[col] : xs[col + 1]] = levels[row * GRID + col]


def encode(canvas: npt.NDArray[np.uint8], fmt: str = "JPEG", quality: int = 90) -> bytes:
    """Encode an RGB array as JPEG/PNG/GIF/… bytes."""
    out = io.BytesIO()
    img = Image.fromarray(canvas, "RGB")
    if fmt.upper() in ("JPEG", "JPG"):
        img.save(out, "JPEG", quality=quality)
    else:
        img.save(out, fmt.upper())
    return out.getvalue()


def render_array(
    faces: Sequence[tuple[IdentityLike, RectLike]],
    size: tuple[int, int] = (640, 480),
    *,
    seed: int = 0,
    variation: float = DEFAULT_VARIATION,
) -> npt.NDArray[np.uint8]:
    """The scene as an RGB array (height, width, 3); see :func:`render_scene`."""
    width, height = size
    rng = np.random.default_rng(seed)
    canvas = _background(width, height, rng)
    rects = [Rect(*rect_like) for _, rect_like in faces]
    for rect in rects:
        if rect.x >= width or rect.y >= height or rect.x + rect.width <= 0 or rect.y + rect.height <= 0:
            raise ValueError(f"face {rect} is outside the image {size}")
        if min(rect.width, rect.height) < MIN_FACE:
            raise ValueError(f"face {rect} is smaller than {MIN_FACE} px")
    # Faces passing the edge are painted on a margin cropped off afterwards. The margin is even, so every
    # coordinate keeps its parity and np.round's ties fall as without it: faces inside get the same pixels.
    over = max([0] + [max(-r.x, -r.y, r.x + r.width - width, r.y + r.height - height) for r in rects])
    pad = over + over % 2
    board = np.pad(canvas, ((pad, pad), (pad, pad), (0, 0)), mode="edge") if pad else canvas
    for (identity, _), rect in zip(faces, rects, strict=True):
        vector = _as_identity(identity)
        if variation:
            vector = vector + rng.normal(0.0, variation, DIM).astype(np.float32)
        _paint_face(board, Rect(rect.x + pad, rect.y + pad, rect.width, rect.height), vector)
    if pad:
        canvas = np.ascontiguousarray(board[pad : pad + height, pad : pad + width])
    return canvas


def render_scene(
    faces: Sequence[tuple[IdentityLike, RectLike]],
    size: tuple[int, int] = (640, 480),
    fmt: str = "JPEG",
    *,
    seed: int = 0,
    variation: float = DEFAULT_VARIATION,
    quality: int = 90,
) -> bytes:
    """An image of ``size`` (w, h) with a face of each identity at its rectangle.

    ``seed`` picks the background and each face's photo noise: the same arguments give the same bytes;
    another seed is "another photo" of the same people.
    """
    return encode(render_array(faces, size, seed=seed, variation=variation), fmt, quality)


def layout(
    n: int,
    size: tuple[int, int] = (640, 480),
    *,
    seed: int = 0,
    min_side: int = 48,
) -> list[Rect]:
    """``n`` non-overlapping square face rectangles of varied sizes, one per cell of a grid over the image."""
    width, height = size
    if n <= 0:
        return []
    cols = max(1, math.ceil(math.sqrt(n * width / height)))
    rows = math.ceil(n / cols)
    cell_w, cell_h = width // cols, height // rows
    cell = min(cell_w, cell_h)
    if int(cell * 0.85) < min_side:
        raise ValueError(f"{n} faces of at least {min_side} px do not fit in {size}")
    rng = np.random.default_rng(seed + 7919)
    rects: list[Rect] = []
    for i in range(n):
        row, col = divmod(i, cols)
        side = int(rng.integers(max(min_side, int(cell * 0.5)), int(cell * 0.85) + 1))
        x = col * cell_w + int(rng.integers(0, cell_w - side + 1))
        y = row * cell_h + int(rng.integers(0, cell_h - side + 1))
        rects.append(Rect(x, y, side, side))
    return rects


def scene_with_faces(
    identities: Sequence[IdentityLike],
    size: tuple[int, int] = (640, 480),
    fmt: str = "JPEG",
    *,
    seed: int = 0,
    variation: float = DEFAULT_VARIATION,
    quality: int = 90,
) -> tuple[bytes, list[Rect]]:
    """Lay out one face per identity (see :func:`layout`) and render; returns (image bytes, rects in order)."""
    rects = layout(len(identities), size, seed=seed)
    data = render_scene(
        list(zip(identities, rects, strict=True)), size, fmt, seed=seed, variation=variation, quality=quality
    )
    return data, rects


# --- the reader -------------------------------------------------------------------------------------------------


def _marker_mask(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    r = rgb[:, :, 0].astype(np.int16)
    g = rgb[:, :, 1].astype(np.int16)
    b = rgb[:, :, 2].astype(np.int16)
    return ((r - g) > 120) & ((b - g) > 120)  # type: ignore[no-any-return]


def _components(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int, int, int, int]]:
    """8-connected components of a mask as (x0, y0, x1, y1, pixel count), x1/y1 exclusive.

    Run-length labelling: numpy finds the horizontal runs, a union-find joins runs that touch across rows.
    Frames give ~2 runs per row, so this stays cheap without scipy.
    """
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    diff = np.diff(padded, axis=1)
    sy, sx = np.nonzero(diff == 1)
    _, ex = np.nonzero(diff == -1)
    n = len(sy)
    if n == 0:
        return []
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    ys, x0s, x1s = sy.tolist(), sx.tolist(), ex.tolist()
    prev_start = prev_end = 0  # runs of row y-1 are indices [prev_start, prev_end)
    i = 0
    while i < n:
        y = ys[i]
        row_start = i
        while i < n and ys[i] == y:
            i += 1
        if prev_end > prev_start and ys[prev_start] == y - 1:
            j = prev_start
            for k in range(row_start, i):
                while j < prev_end and x1s[j] < x0s[k]:  # previous run ends before this one (8-connected: <)
                    j += 1
                m = j
                while m < prev_end and x0s[m] <= x1s[k]:
                    ra, rb = find(k), find(m)
                    if ra != rb:
                        parent[ra] = rb
                    m += 1
        prev_start, prev_end = row_start, i
    boxes: dict[int, list[int]] = {}
    for k in range(n):
        root = find(k)
        box = boxes.get(root)
        if box is None:
            boxes[root] = [x0s[k], ys[k], x1s[k], ys[k] + 1, x1s[k] - x0s[k]]
        else:
            box[0] = min(box[0], x0s[k])
            box[2] = max(box[2], x1s[k])
            box[3] = max(box[3], ys[k] + 1)
            box[4] += x1s[k] - x0s[k]
    return [(b[0], b[1], b[2], b[3], b[4]) for b in boxes.values()]


def _decode_cells(luma: npt.NDArray[np.float32], rect: Rect) -> Vector:
    height, width = luma.shape
    x, y, w, h = rect
    side = min(w, h)
    t = side * BORDER_FRAC
    g = side * GAP_FRAC
    ix0, iy0, ix1, iy1 = x + t + g, y + t + g, x + w - t - g, y + h - t - g
    cw, ch = (ix1 - ix0) / GRID, (iy1 - iy0) / GRID
    values = np.empty(DIM, dtype=np.float32)
    for row in range(GRID):
        for col in range(GRID):
            # Sample the middle half of each cell: edges blur into neighbours under JPEG and resizing.
            cx0 = round(ix0 + (col + 0.25) * cw)
            cx1 = max(cx0 + 1, round(ix0 + (col + 0.75) * cw))
            cy0 = round(iy0 + (row + 0.25) * ch)
            cy1 = max(cy0 + 1, round(iy0 + (row + 0.75) * ch))
            cx0, cy0, cx1, cy1 = max(cx0, 0), max(cy0, 0), min(cx1, width), min(cy1, height)
            if cx0 >= cx1 or cy0 >= cy1:  # the cell is beyond the image's edge
                values[row * GRID + col] = LUMA_LO + UNKNOWN * (LUMA_HI - LUMA_LO)
            else:
                values[row * GRID + col] = float(luma[cy0:cy1, cx0:cx1].mean())
    decoded: Vector = np.clip((values - LUMA_LO) / (LUMA_HI - LUMA_LO), 0.0, 1.0).astype(np.float32)
    return decoded


def _whole_box(visible: Rect, width: int, height: int) -> Rect:
    """The box of a face of which ``visible`` is seen: cut by an edge, it is taken to be square (a few pixels'
    difference is JPEG's blur, not a cut)."""
    x, y, w, h = visible
    side = max(w, h)
    slack = max(2, round(side * 0.04))
    if w < side - slack and (x == 0 or x + w == width):
        x, w = (x + w - side if x == 0 else x), side
    if h < side - slack and (y == 0 or y + h == height):
        y, h = (y + h - side if y == 0 else y), side
    return Rect(x, y, w, h)


def read_faces(rgb: npt.NDArray[np.uint8]) -> list[tuple[Rect, Vector]]:
    """Find every synthetic face in an RGB array; rectangles are sorted by area, largest first."""
    found: list[tuple[Rect, Vector]] = []
    luma: npt.NDArray[np.float32] | None = None
    for x0, y0, x1, y1, count in _components(_marker_mask(rgb)):
        w, h = x1 - x0, y1 - y0
        if min(w, h) < MIN_FACE or not 0.4 <= w / h <= 2.5:
            continue
        side = min(w, h)
        t = side * BORDER_FRAC
        ring = 1.0 - (1.0 - 2 * t / w) * (1.0 - 2 * t / h)
        if not 0.5 * ring <= count / (w * h) <= 1.6 * ring:  # a frame, not a magenta blob or a stray line
            continue
        if luma is None:
            luma = (rgb[:, :, 0] * 0.299 + rgb[:, :, 1] * 0.587 + rgb[:, :, 2] * 0.114).astype(np.float32)
        rect = _whole_box(Rect(x0, y0, w, h), rgb.shape[1], rgb.shape[0])
        found.append((rect, _decode_cells(luma, rect)))
    found.sort(key=lambda item: (-item[0].area, item[0].y, item[0].x))
    return found
