"""How fast is the emulator? Sustained req/s at 0 ms and concurrent capacity at injected latency.

    python bench/bench_emulator.py [--seconds 3] [--concurrency 64] [--slow-concurrency 256,1024]
                                   [--latency-ms 200] [--modes image,url,slow,slowimage]

The emulator runs in its own process (``spawn_process``), the image server in another; the load comes
from an asyncio + aiohttp client in this process (keep-alive, one multi-use signature, like a worker).
With two or more CPUs the emulator is pinned to the last CPU and this process and the image server to
CPU 0, so "emulator CPU" is one core. Every run is bounded by ``--seconds``; figures are printed, nothing
is asserted. Modes:

* ``image`` — multidentify, multipart ``image`` (4 faces, 3 enrolled), 0 ms latency;
* ``url``   — multidentify, JSON ``url`` served by the image server (a download per call), 0 ms;
* ``slow``  — ``url`` mode with ``--latency-ms`` injected and ``--slow-concurrency`` requests in flight;
* ``slowimage`` — the same in ``image`` mode.

Columns: ``N/lat`` is the ideal rate (in flight ÷ latency); ``req/s/core`` is completed calls per second
of emulator CPU, i.e. its capacity on one core when the load generator (one core here) is the limit.

Reference: one requests-based worker process drives at most ~2.4k calls/s (docs/design.md); the
emulator should sustain at least twice that at 0 ms and N/latency (1,280/s for 256 at 200 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import orjson

from worker.api.signature import sign
from worker.emulator import DEV_ACCOUNT, spawn_process, synth
from worker.emulator.imageserver import spawn_image_server

PEOPLE = ["ada", "grace", "linus"]


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a process (and its reaped children) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpu: int) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(pid, {cpu})


def multipart(parts: list[tuple[str, bytes, str | None]]) -> tuple[bytes, str]:
    """A multipart/form-data body (name, value, filename) and its Content-Type."""
    boundary = "benchboundary7d1f"
    out = bytearray()
    for name, value, filename in parts:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'.encode()
        if filename:
            out += f'; filename="{filename}"\r\nContent-Type: image/jpeg'.encode()
        out += b"\r\n\r\n" + value + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


async def enroll(base_url: str, auth: str, image_dir: Path) -> None:
    async with aiohttp.ClientSession() as session:
        for i, name in enumerate(PEOPLE):
            form = aiohttp.FormData()
            form.add_field("appid", DEV_ACCOUNT.appid)
            form.add_field("person_id", name)
            form.add_field("group_ids[0]", "bench")
            photo = synth.render_scene([(name, (40, 40, 160, 160))], (320, 240), seed=1000 + i)
            form.add_field("image", photo, filename=f"{name}.jpg", content_type="image/jpeg")
            async with session.post(f"{base_url}/face/newperson", data=form, headers={"Authorization": auth}) as r:
                body = orjson.loads(await r.read())
                if body["code"] not in (0, -1302):
                    raise RuntimeError(f"enrollment failed: {body}")


async def load(
    base_url: str,
    auth: str,
    mode: str,
    image: bytes,
    image_url: str,
    concurrency: int,
    seconds: float,
    stagger_s: float = 0.0,
) -> tuple[int, Counter[str], int]:
    """Keep ``concurrency`` requests in flight; returns (calls completed within the ``seconds`` steady-state
    window, their outcomes, all calls completed including ramp-up and tail)."""
    outcomes: Counter[str] = Counter()
    total = [0]
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    json_body = orjson.dumps({"appid": DEV_ACCOUNT.appid, "group_ids": ["bench"], "url": image_url})
    form_body, form_type = multipart(
        [("appid", DEV_ACCOUNT.appid.encode(), None), ("group_ids[0]", b"bench", None), ("image", image, "frame.jpg")]
    )
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        deadline = window_start = 0.0

        async def one() -> None:
            headers = {"Authorization": auth}
            # Bodies are built once: the client's CPU per call stays small next to the server's.
            if mode == "image":
                headers["Content-Type"] = form_type
                data = form_body
            else:
                headers["Content-Type"] = "application/json"
                data = json_body
            try:
                async with session.post(f"{base_url}/face/multidentify", data=data, headers=headers) as r:
                    body = await r.read()
                    outcome = str(orjson.loads(body)["code"]) if r.status == 200 else f"http_{r.status}"
            except (TimeoutError, aiohttp.ClientError) as exc:
                outcome = type(exc).__name__
            total[0] += 1
            if window_start <= time.monotonic() <= deadline:  # steady state only: no ramp-up, no tail
                outcomes[outcome] += 1

        async def worker(delay: float) -> None:
            await asyncio.sleep(delay)  # spread the starts so requests arrive steadily, as from a worker
            while time.monotonic() < deadline:
                await one()

        start = time.monotonic()
        window_start = start + 2 * stagger_s  # every worker has started and finished its first call
        deadline = window_start + seconds
        await asyncio.gather(*(worker(stagger_s * i / concurrency) for i in range(concurrency)))
    return sum(outcomes.values()), outcomes, total[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--slow-concurrency",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[256, 1024],
        help="requests in flight for the slow modes (comma list)",
    )
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--modes", default="image,url,slow")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    with tempfile.TemporaryDirectory(prefix="bench-emu-") as tmp:
        image_dir = Path(tmp)
        image, rects = synth.scene_with_faces([*PEOPLE, "stranger"], (640, 480), seed=7)
        (image_dir / "frame.jpg").write_bytes(image)
        images = spawn_image_server(image_dir)
        emulator = spawn_process()
        try:
            pids = [emulator.pid]
            if len(cpus) >= 2:
                pin(os.getpid(), cpus[0])
                pin(images.pid, cpus[0])
                for pid in pids:
                    pin(pid, cpus[-1])
            auth = sign(
                DEV_ACCOUNT.appid, DEV_ACCOUNT.secret_id, DEV_ACCOUNT.secret_key, now=int(time.time()), lifetime=3600
            )
            asyncio.run(enroll(emulator.base_url, auth, image_dir))
            print(
                f"emulator {emulator.base_url} (pid {emulator.pid}); "
                f"image {len(image)} bytes, {len(rects)} faces; cpus={cpus}; python {sys.version.split()[0]}"
            )
            print(
                f"{'mode':<10}{'in flight':>10}{'latency':>9}{'req/s':>9}{'N/lat':>8}{'emu CPU':>9}{'µs/req':>8}"
                f"{'req/s/core':>12}  outcomes"
            )
            runs = [
                (mode, c)
                for mode in modes
                for c in (args.slow_concurrency if mode.startswith("slow") else [args.concurrency])
            ]
            for mode, concurrency in runs:
                latency = args.latency_ms if mode.startswith("slow") else 0.0
                emulator.admin({"latency_ms": latency} if latency else {})
                run_args = (
                    emulator.base_url,
                    auth,
                    "image" if mode in ("image", "slowimage") else "url",
                    image,
                    images.url_for("frame.jpg"),
                )
                asyncio.run(load(*run_args, concurrency, min(0.7, args.seconds / 3)))  # warm-up
                before = sum(cpu_seconds(pid) for pid in pids)
                started = time.monotonic()
                done, outcomes, total = asyncio.run(load(*run_args, concurrency, args.seconds, latency / 1000))
                used = sum(cpu_seconds(pid) for pid in pids) - before
                elapsed = time.monotonic() - started
                rate = done / args.seconds
                per_core = total / used if used else float("inf")
                ideal = f"{concurrency / (latency / 1000):.0f}" if latency else "-"
                print(
                    f"{mode:<10}{concurrency:>10}{latency:>7.0f}ms{rate:>9.0f}{ideal:>8}{100 * used / elapsed:>8.0f}%"
                    f"{1e6 * used / max(1, total):>8.0f}{per_core:>12.0f}  {dict(outcomes)}"
                )
        finally:
            emulator.stop()
            images.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
