"""Fixtures for the emulator tests: an image server in a thread and a raw HTTP caller of ``emu``.

``emu`` itself, the emulator in a thread, is the shared fixture of ``tests.support.emulator``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.emulator import Caller
from worker.emulator import EmulatorHandle
from worker.emulator.imageserver import ImageServerHandle, start_image_server_in_thread


@pytest.fixture
def api(emu: EmulatorHandle) -> Iterator[Caller]:
    emu.reset(gallery=True)
    caller = Caller(emu.base_url)
    try:
        yield caller
    finally:
        caller.close()


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="module")
def images(image_dir: Path) -> Iterator[ImageServerHandle]:
    server = start_image_server_in_thread(image_dir)
    try:
        yield server
    finally:
        server.stop()
