"""A small static image server: the files of one directory over HTTP, 404 for missing ones.

Files are looked up at request time, so a demo can publish URLs of images that only appear later (the
emulator answers -1308 until they exist). Paths never escape the directory.

Run: ``python -m worker.emulator.imageserver --dir DIR [--host 127.0.0.1] [--port 0] [--ready-file F]``
prints ``IMAGESERVER http://HOST:PORT`` when ready; in tests use :func:`start_image_server_in_thread` or
:func:`spawn_image_server`.
"""

from __future__ import annotations

import argparse
import mimetypes
import sys
from pathlib import Path

from aiohttp import web

from worker.emulator.serving import AppThread, ServerProcess, serve_forever


def add_routes(app: web.Application, directory: str | Path, prefix: str = "") -> None:
    """Serve ``directory`` under ``prefix`` (e.g. "/images") on an existing app."""
    root = Path(directory).resolve()

    async def serve(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = (root / name).resolve()
        if root not in path.parents or not path.is_file():
            return web.Response(status=404, text="not found\n")
        try:
            data = path.read_bytes()
        except OSError:
            return web.Response(status=404, text="not found\n")
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return web.Response(body=data, content_type=content_type)

    app.router.add_get(prefix + "/{name:.+}", serve)


def create_image_app(directory: str | Path) -> web.Application:
    app = web.Application()
    add_routes(app, directory)
    return app


class ImageServerHandle:
    """An image server on its own event loop in a daemon thread."""

    def __init__(self, directory: str | Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.directory = Path(directory)
        self._thread = AppThread(lambda: create_image_app(directory), host, port, name="imageserver")
        self.base_url = self._thread.start()

    def url_for(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def stop(self) -> None:
        self._thread.stop()

    def __enter__(self) -> ImageServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_image_server_in_thread(directory: str | Path, host: str = "127.0.0.1", port: int = 0) -> ImageServerHandle:
    return ImageServerHandle(directory, host, port)


class ImageServerProcess(ServerProcess):
    def url_for(self, name: str) -> str:
        return f"{self.base_url}/{name}"


def spawn_image_server(
    directory: str | Path, host: str = "127.0.0.1", port: int = 0, *, timeout_s: float = 30.0
) -> ImageServerProcess:
    """``python -m worker.emulator.imageserver`` in a subprocess; stopped by its own PID (and at exit)."""
    args = ["-m", "worker.emulator.imageserver", "--dir", str(directory), "--host", host, "--port", str(port)]
    return ImageServerProcess(args, banner="IMAGESERVER", timeout_s=timeout_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.emulator.imageserver", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", required=True, help="directory whose files are served")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--ready-file", help="also write the banner line to this file when ready")
    args = parser.parse_args(argv)
    return serve_forever(lambda: create_image_app(args.dir), args.host, args.port, "IMAGESERVER", args.ready_file)


if __name__ == "__main__":
    sys.exit(main())
