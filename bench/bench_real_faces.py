"""How fast is the real face engine? Images per second of the dlib engine, alone and behind the emulator.

    python bench/bench_real_faces.py [--seconds 10] [--max-images 200] [--workers 0] [--concurrency 0]
                                     [--only direct|emulator|worker] [--e2e-events 200] [--e2e-seconds 60]
                                     [--in-flight 8]

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
   rate the clients saw and the one the emulator reports about its engine (``/__admin/stats`` ``engine``);
3. **worker** — end to end: the embedded broker, the emulator as in 2, and one worker process
   (``python -m worker run``, ``--in-flight`` calls in flight, 8 by default) draining ``--e2e-events`` preloaded
   events per picture (200 by default; at most ``--e2e-seconds`` from its first output, 60 by default). Every
   event's URL points at the emulator's ``/images/`` folder and names a distinct file (the trailer of 2), so the
   emulator downloads and detects every one. The worker's events/s (first output to last, by the outputs' Kafka
   timestamps, as ``bench/drain.py`` measures) is printed next to the engine's rate behind the emulator in the
   same run (2's client rate when 2 ran; the engine's own 10-s rate always) and the worker's CPU: the engine is
   the bottleneck, so the worker should reach about the engine's rate on a fraction of a core.

The load average is printed with the figures: on a machine shared with other work they are lower bounds.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from events import preload
from machine import proc_cpu_seconds
from PIL import Image

from worker.api.client import ClientOptions, MultidentifyClient
from worker.dev.devstack import start_broker
from worker.dev.harness.env import SettingValue, worker_env
from worker.dev.harness.loopback import free_port
from worker.dev.harness.outputs import OutputReader, Tally, tally
from worker.dev.harness.processes import WorkerProcess
from worker.dev.harness.topics import Topics
from worker.emulator import DEV_ACCOUNT, EmulatorProcess, spawn_process
from worker.emulator.detector import default_workers

GROUP = "bench"
E2E_PARTITIONS = 4

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


def client_options(emulator: EmulatorProcess) -> ClientOptions:
    return ClientOptions(
        appid=DEV_ACCOUNT.appid,
        secret_id=DEV_ACCOUNT.secret_id,
        secret_key=DEV_ACCOUNT.secret_key,
        base_url=emulator.base_url,
        read_timeout=120.0,
    )


def enrol(emulator: EmulatorProcess) -> None:
    """The two people of the pictures, one face each, in group ``GROUP``."""
    with MultidentifyClient(client_options(emulator)) as client:
        client.newperson("hopper", [GROUP], image=jpeg(crop("grace_hopper.jpg", 150)))
        client.newperson("collins", [GROUP], image=jpeg(crop("astronaut.jpg", 150)))


def through_emulator(
    pictures: dict[str, bytes], seconds: float, max_images: int, workers: int, concurrency: int
) -> dict[str, float]:
    """Mode 2; the images/s the clients saw, by picture."""
    started = time.perf_counter()
    emulator = spawn_process(engine="dlib", engine_workers=workers, timeout_s=180)
    rates: dict[str, float] = {}
    try:
        pool = emulator.stats()["engine"]
        print(
            f"emulator (its own process, {pool['workers']} engine processes, {concurrency} calls in flight): "
            f"ready in {time.perf_counter() - started:.2f} s"
        )
        enrol(emulator)
        with MultidentifyClient(client_options(emulator)) as client:
            for label, picture in pictures.items():
                emulator.reset(stats=True, caches=True)
                images, faces, elapsed = load(client, picture, seconds, max_images, concurrency)
                engine = emulator.stats()["engine"]
                mean_ms = engine["mean_ms"] or 0.0
                rates[label] = images / elapsed
                print(
                    f"  {label:8} {images:4d} images  {faces // max(images, 1)} faces each  "
                    f"{images / elapsed:6.2f} images/s seen by the clients  "
                    f"(engine: {engine['images']} images, {engine['images_per_s']:.2f}/s over its last 10 s, "
                    f"{mean_ms:.1f} ms each in its processes)"
                )
    finally:
        emulator.stop()
    return rates


def drain(
    bootstrap: str, emulator: EmulatorProcess, urls: list[str], seconds: float, in_flight: int
) -> tuple[Tally, float, dict[str, float]]:
    """One worker drains one preloaded event per URL, bounded by ``seconds`` from its first output (and 120 s to
    the first: the group join and the models' warm-up); (tally, the worker's CPU in % of a core, the engine's stats)."""
    topics = Topics.unique("rf").create(bootstrap, E2E_PARTITIONS)
    ids = preload(bootstrap, topics.input, E2E_PARTITIONS, urls, uuid.uuid4().hex[:6], len(urls))
    emulator.reset(stats=True, caches=True)
    settings: dict[str, SettingValue] = {
        "max_in_flight": in_flight,
        "read_timeout_s": 60.0,  # calls queue at the engine: in_flight / its rate (≈ 2 s), far below this
        "session_timeout_ms": 3000,
        "log_level": "WARNING",
        "log_format": "text",
        "drain_timeout_s": 10,
        "metrics_host": "127.0.0.1",
        "metrics_port": free_port(),
    }
    env = worker_env(bootstrap, emulator.base_url, topics, group_ids=GROUP, settings=settings)
    with (
        OutputReader(bootstrap, topics, keep_messages=False, fetch_wait_ms=50) as reader,
        reader.in_background(seconds + 180),
        WorkerProcess(env, name="worker", stop_timeout=30) as worker,
    ):
        first = reader.first_ts(120.0)
        if first is None:
            raise RuntimeError(f"worker: no output within 120 s: {worker.tail()}")
        cpu0, wall0 = proc_cpu_seconds(worker.pid) or 0.0, time.monotonic()
        reader.wait_for_unique(len(urls), max(1.0, first + seconds - time.time()), worker.alive)
        # Its CPU share from the first output to the bound (the process is still running: /proc still has it).
        cpu_pct = 100 * ((proc_cpu_seconds(worker.pid) or 0.0) - cpu0) / max(time.monotonic() - wall0, 1e-3)
        engine = emulator.stats()["engine"]
        worker.stop(30)
        # Let the background reader catch the last outputs it has not read yet (bounded).
        reader.wait(lambda r: r.unique() >= len(urls), 3.0)
        outputs = reader.snapshot()
    return tally(outputs, ids), cpu_pct, engine


def dead_letter_codes(t: Tally) -> str:
    codes = {k: v for k, v in t.kinds.items() if k != "result"}
    return f" {codes}" if codes else ""


def end_to_end(
    pictures: dict[str, bytes],
    events: int,
    seconds: float,
    workers: int,
    in_flight: int,
    reference: dict[str, float],
) -> None:
    """Mode 3: broker + emulator (dlib) + one worker, per picture ``events`` distinct images."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mdw-real-faces-bench-") as tmp:
        broker = start_broker()
        emulator: EmulatorProcess | None = None
        try:
            emulator = spawn_process(engine="dlib", engine_workers=workers, images_dir=tmp, timeout_s=180)
            enrol(emulator)
            pool = emulator.stats()["engine"]
            print(
                f"worker (broker + emulator with {pool['workers']} engine processes + 1 worker process, "
                f"in-flight {in_flight}, {E2E_PARTITIONS} partitions): ready in {time.perf_counter() - started:.2f} s"
            )
            for n, (label, picture) in enumerate(pictures.items()):
                urls = []
                for i in range(events):
                    name = f"p{n}-{i:05d}.jpg"
                    (Path(tmp) / name).write_bytes(unique(picture, i))
                    urls.append(f"{emulator.base_url}/images/{name}")
                t, cpu_pct, engine = drain(str(broker.bootstrap), emulator, urls, seconds, in_flight)
                window = t.window_s
                ref = reference.get(label)
                versus = f", {100 * t.rate / ref:.0f} % of mode 2's {ref:.2f}/s" if ref else ""
                print(
                    f"  {label:8} {t.outputs:4d} outputs of {t.expected} ({t.results} results, "
                    f"{t.dead_letters} dead letters{dead_letter_codes(t)}, {t.duplicates} duplicates)  "
                    f"{t.rate:6.2f} events/s over {window:.1f} s{versus}  "
                    f"(engine: {engine['images']} images, {engine['images_per_s']:.2f}/s over its last 10 s; "
                    f"worker CPU {cpu_pct:.0f} % of a core)"
                )
        finally:
            if emulator is not None:
                emulator.stop()
            broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="bound of each measurement (default 10)")
    parser.add_argument("--max-images", type=int, default=200, help="bound of each measurement (default 200)")
    parser.add_argument("--workers", type=int, default=0, help="engine processes of the emulator (0 = one per core)")
    parser.add_argument("--concurrency", type=int, default=0, help="calls in flight (0 = twice the workers)")
    parser.add_argument("--only", choices=("direct", "emulator", "worker"), help="run one of the measurements")
    parser.add_argument("--e2e-events", type=int, default=200, help="worker: events per picture (default 200)")
    parser.add_argument("--e2e-seconds", type=float, default=60.0, help="worker: bound of each drain (default 60)")
    parser.add_argument("--in-flight", type=int, default=8, help="worker: its max_in_flight (default 8)")
    args = parser.parse_args(argv)
    workers = args.workers or default_workers()
    concurrency = args.concurrency or 2 * workers
    pictures = {"1 face": one_face(), "6 faces": six_faces()}
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.only in (None, "direct"):
        direct(pictures, args.seconds, args.max_images)
    reference: dict[str, float] = {}
    if args.only in (None, "emulator"):
        reference = through_emulator(pictures, args.seconds, args.max_images, workers, concurrency)
    if args.only in (None, "worker"):
        end_to_end(pictures, args.e2e_events, args.e2e_seconds, workers, args.in_flight, reference)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
