"""Calls/s of MultidentifyClient against a bare ``requests.Session.post`` on a fast local server.

    python bench/bench_client.py --seconds 3 --threads 8 [--modes url,image] [--server-url URL]

Starts a minimal asyncio keep-alive HTTP server in a subprocess on 127.0.0.1 (port chosen by the OS)
that answers every POST with the documented multidentify example, unless ``--server-url`` points at
one already running (e.g. the emulator). Each run is bounded by ``--seconds``; the figures are printed,
nothing is asserted. CPU is this process's user+system time (all threads) per completed call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import requests
from requests.adapters import HTTPAdapter

from worker.api import ApiError, ClientOptions, MultidentifyClient, sign

APPID, SECRET_ID, SECRET_KEY = "1251234567", "AKIDbench", "bench-secret"
# Loopback only: with --server-url pointing at the emulator, it downloads this URL (pass --image-url for a
# real image the emulator serves, e.g. <emulator>/images/a.jpg).
URL = "http://127.0.0.1:9/cam1/0001.jpg"
ANSWER = (
    b'{"data":{"session_id":"111","results":[{"candidates":[{"person_id":"person1","face_id":"10001",'
    b'"confidence":64,"tag":""},{"person_id":"person2","face_id":"100002","confidence":12,"tag":""}],'
    b'"face_rect":{"x":60,"y":80,"width":50,"height":60}}]},"code":0,"message":"OK"}'
)
IMAGE = b"\xff\xd8\xff\xe0" + os.urandom(50_000) + b"\xff\xd9"  # a 50 kB "JPEG" (the server never decodes it)


# -- the server (subprocess) ------------------------------------------------------------------------


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
        b"Content-Length: " + str(len(ANSWER)).encode() + b"\r\n\r\n" + ANSWER
    )
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(response)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def _serve() -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", 0)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    # Exit when the parent closes our stdin (normal end, or the parent died).
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


@contextlib.contextmanager
def local_server() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=15):
                raise RuntimeError("bench server did not start within 15 s")
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"bench server said {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# -- the load ---------------------------------------------------------------------------------------


def run(call: Callable[[], object], threads: int, seconds: float, warmup: float) -> tuple[int, int, float, float]:
    """Run ``call`` from ``threads`` threads for ``warmup`` then ``seconds``; (calls, errors, wall s, cpu s)."""
    counts = [0] * threads
    errors = [0] * threads
    measuring = threading.Event()
    stop = threading.Event()

    def loop(n: int) -> None:
        while not stop.is_set():
            try:
                call()
            except (ApiError, requests.RequestException):
                errors[n] += 1
                continue
            if measuring.is_set():
                counts[n] += 1

    workers = [threading.Thread(target=loop, args=(n,), daemon=True) for n in range(threads)]
    for w in workers:
        w.start()
    time.sleep(warmup)
    cpu0, t0 = _cpu(), time.perf_counter()
    measuring.set()
    time.sleep(seconds)
    measuring.clear()
    cpu1, t1 = _cpu(), time.perf_counter()
    stop.set()
    for w in workers:
        w.join(timeout=15)
    return sum(counts), sum(errors), t1 - t0, cpu1 - cpu0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bare_session(threads: int) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=threads, pool_maxsize=threads)
    session.mount("http://", adapter)
    return session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run (max 60)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--modes", default="url,image", help="comma list of url, image")
    parser.add_argument("--server-url", help="use this server instead of starting one")
    parser.add_argument("--image-url", default=URL, help="image URL sent in url mode (keep it on loopback)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return
    seconds = min(max(args.seconds, 0.1), 60.0)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    with contextlib.ExitStack() as stack:
        base = args.server_url or stack.enter_context(local_server())
        client = MultidentifyClient(
            ClientOptions(
                appid=APPID, secret_id=SECRET_ID, secret_key=SECRET_KEY, base_url=base, pool_size=args.threads
            )
        )
        stack.callback(client.close)
        session = bare_session(args.threads)
        stack.callback(session.close)
        endpoint = base.rstrip("/") + "/face/multidentify"
        auth = sign(APPID, SECRET_ID, SECRET_KEY, now=int(time.time()), lifetime=3600)
        url = args.image_url
        json_body = b'{"appid":"%s","group_id":"g","url":"%s"}' % (APPID.encode(), url.encode())
        timeout = (3.0, 10.0)

        variants: dict[str, dict[str, Callable[[], object]]] = {
            "url": {
                "MultidentifyClient.multidentify_url": lambda: client.multidentify_url(url, ["g"]),
                "requests.Session.post (JSON)": lambda: (
                    session.post(
                        endpoint,
                        data=json_body,
                        headers={"Authorization": auth, "Content-Type": "application/json"},
                        timeout=timeout,
                        verify=True,
                    ).content
                ),
            },
            "image": {
                "MultidentifyClient.multidentify_image": lambda: client.multidentify_image(IMAGE, ["g"]),
                "requests.Session.post (multipart)": lambda: (
                    session.post(
                        endpoint,
                        data={"appid": APPID, "group_id": "g"},
                        files={"image": ("image.jpg", IMAGE, "image/jpeg")},
                        headers={"Authorization": auth},
                        timeout=timeout,
                        verify=True,
                    ).content
                ),
            },
        }
        print(f"server {base}  threads {args.threads}  {seconds:g} s per run (+{args.warmup:g} s warm-up)")
        print(f"{'variant':42} {'calls/s':>9} {'CPU µs/call':>12} {'errors':>7}")
        for mode in modes:
            for name, call in variants[mode].items():
                calls, errors, wall, cpu = run(call, args.threads, seconds, args.warmup)
                rate = calls / wall if wall else 0.0
                per_call = cpu / calls * 1e6 if calls else float("nan")
                print(f"{name:42} {rate:9.0f} {per_call:12.0f} {errors:7d}", flush=True)
    print("CPU is the whole client process (all threads); the server runs in another process.")


if __name__ == "__main__":
    main()
