"""How fast is the real face engine? Images per second of the dlib engine, alone and behind the emulator.

    python bench/bench_real_faces.py [--seconds 10] [--max-images 200] [--workers 0] [--concurrency 0]

Needs the ``faces`` extra (``pip install -e '.[faces]'``; ``make install`` has it). Two pictures, pasted together
from the public-domain portraits in ``tests/data/faces``: 640×480 with one face, and 1000×640 with six (faces 75 to
170 px wide). Figures are printed, nothing is asserted; every run is bounded by ``--seconds`` and
``--max-images``.

1. **direct** — ``DlibEngine.detect`` in this process, one image after another: one core's worth (dlib holds the
   GIL, so threads would not add any), milliseconds per image, images per second, and the CPU time per image
   (what an idle core would take: a figure that holds on a busy machine);
2. **emulator** — ``python -m worker.emulator --engine dlib`` in its own process, whose pool runs ``--workers``
   processes (0 = one per core); ``--concurrency`` multidentify calls in flight (0 = twice the workers) from threads
   here, each a distinct image (a unique trailer after the JPEG's end, so the detection cache never answers); the
   rate the clients saw and the one the emulator reports about its engine (``/__admin/stats`` ``engine``).

The load average is printed with the figures: on a machine shared with other work they are lower bounds.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from worker.api.client import ClientOptions, MultidentifyClient
from worker.emulator import DEV_ACCOUNT, spawn_process
from worker.emulator.detector import default_workers

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "tests" / "data" / "faces"
# (photo, the face's box in it) — measured once with the engine; the crops keep half a face of margin.
FACES = {
    "astronaut.jpg": (175, 76, 91, 91),
    "grace_hopper.jpg": (180, 139, 187, 187),
}


def crop(name: str, width: int, mirror: bool = False) -> Image.Image:
    """The face of ``name`` with half a face of margin, scaled so that the face is ``width`` px wide."""
    img = Image.open(PHOTOS / name).convert("RGB")
    x, y, w, h = FACES[name]
    piece = img.crop(
        (max(0, x - w // 2), max(0, y - h // 2), min(img.width, x + w + w // 2), min(img.height, y + h + h // 2))
    )
    scale = width / w
    piece = piece.resize((round(piece.width * scale), round(piece.height * scale)), Image.Resampling.LANCZOS)
    return piece.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirror else piece


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def one_face() -> bytes:
    canvas = Image.new("RGB", (640, 480), (90, 100, 110))
    canvas.paste(crop("grace_hopper.jpg", 150), (200, 80))
    return jpeg(canvas)


def six_faces() -> bytes:
    canvas = Image.new("RGB", (1000, 640), (90, 100, 110))
    layout = [
        ("grace_hopper.jpg", 170, False, (10, 10)),
        ("astronaut.jpg", 150, False, (370, 10)),
        ("grace_hopper.jpg", 135, True, (690, 10)),
        ("astronaut.jpg", 120, True, (10, 380)),
        ("grace_hopper.jpg", 105, False, (280, 380)),
        ("astronaut.jpg", 75, False, (520, 380)),
    ]
    for name, width, mirror, at in layout:
        canvas.paste(crop(name, width, mirror), at)
    return jpeg(canvas)


def unique(image: bytes, n: int) -> bytes:
    """The same picture with different bytes: a trailer after the JPEG's end, which decoders ignore."""
    return image + b"\x00bench" + n.to_bytes(8, "big")


def bounded(seconds: float, max_images: int, run_one: Callable[[int], int]) -> tuple[int, int, float]:
    """Run ``run_one(i)`` (returns the faces found) until either bound; (images, faces, elapsed seconds)."""
    started = time.perf_counter()
    images = faces = 0
    while images < max_images and time.perf_counter() - started < seconds:
        faces += run_one(images)
        images += 1
    return images, faces, time.perf_counter() - started


def direct(pictures: dict[str, bytes], seconds: float, max_images: int) -> None:
    from worker.emulator.dlib_engine import DlibEngine

    engine = DlibEngine()
    started = time.perf_counter()
    engine.warm_up()
    print(f"direct (this process, one core): models loaded in {time.perf_counter() - started:.2f} s")
    for label, picture in pictures.items():
        engine.detect(picture)  # first call: allocations, caches
        cpu = time.process_time()

        def faces_in(_i: int, p: bytes = picture) -> int:
            return len(engine.detect(p))

        images, faces, elapsed = bounded(seconds, max_images, faces_in)
        cpu = time.process_time() - cpu
        print(
            f"  {label:8} {images:4d} images  {faces // max(images, 1)} faces each  "
            f"{1000 * elapsed / images:7.1f} ms/image  {images / elapsed:6.2f} images/s  "
            f"({1000 * cpu / images:.1f} ms of CPU each: what an idle core would take)"
        )


def load(
    client: MultidentifyClient, picture: bytes, seconds: float, max_images: int, concurrency: int
) -> tuple[int, int, float]:
    """``concurrency`` threads calling multidentify with distinct copies of ``picture`` until either bound;
    (images, faces, elapsed seconds)."""
    numbers = iter(range(max_images))
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    done = [0, 0]  # images, faces

    def caller() -> None:
        while time.perf_counter() < deadline:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            result = client.multidentify_image(unique(picture, n), ["bench"])
            with lock:
                done[0] += 1
                done[1] += len(result.faces)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as threads:
        for future in [threads.submit(caller) for _ in range(concurrency)]:
            future.result()
    return done[0], done[1], time.perf_counter() - started


def through_emulator(
    pictures: dict[str, bytes], seconds: float, max_images: int, workers: int, concurrency: int
) -> None:
    started = time.perf_counter()
    emulator = spawn_process(engine="dlib", engine_workers=workers, timeout_s=180)
    try:
        pool = emulator.stats()["engine"]
        print(
            f"emulator (its own process, {pool['workers']} engine processes, {concurrency} calls in flight): "
            f"ready in {time.perf_counter() - started:.2f} s"
        )
        options = ClientOptions(
            appid=DEV_ACCOUNT.appid,
            secret_id=DEV_ACCOUNT.secret_id,
            secret_key=DEV_ACCOUNT.secret_key,
            base_url=emulator.base_url,
            read_timeout=120.0,
        )
        with MultidentifyClient(options) as client:
            client.newperson("hopper", ["bench"], image=jpeg(crop("grace_hopper.jpg", 150)))
            for label, picture in pictures.items():
                emulator.reset(stats=True, caches=True)
                images, faces, elapsed = load(client, picture, seconds, max_images, concurrency)
                engine = emulator.stats()["engine"]
                mean_ms = engine["mean_ms"] or 0.0
                print(
                    f"  {label:8} {images:4d} images  {faces // max(images, 1)} faces each  "
                    f"{images / elapsed:6.2f} images/s seen by the clients  "
                    f"(engine: {engine['images']} images, {engine['images_per_s']:.2f}/s over its last 10 s, "
                    f"{mean_ms:.1f} ms each in its processes)"
                )
    finally:
        emulator.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="bound of each measurement (default 10)")
    parser.add_argument("--max-images", type=int, default=200, help="bound of each measurement (default 200)")
    parser.add_argument("--workers", type=int, default=0, help="engine processes of the emulator (0 = one per core)")
    parser.add_argument("--concurrency", type=int, default=0, help="calls in flight (0 = twice the workers)")
    parser.add_argument("--only", choices=("direct", "emulator"), help="run one of the two measurements")
    args = parser.parse_args(argv)
    workers = args.workers or default_workers()
    concurrency = args.concurrency or 2 * workers
    pictures = {"1 face": one_face(), "6 faces": six_faces()}
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.only in (None, "direct"):
        direct(pictures, args.seconds, args.max_images)
    if args.only in (None, "emulator"):
        through_emulator(pictures, args.seconds, args.max_images, workers, concurrency)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
