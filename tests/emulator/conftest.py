"""Fixtures for the emulator tests: an emulator and an image server in threads, and a raw HTTP caller."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.emulator import Caller
from worker.emulator import EmulatorHandle, start_in_thread
from worker.emulator.imageserver import ImageServerHandle, start_image_server_in_thread


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    handle = start_in_thread()
    try:
        yield handle
    finally:
        handle.stop()


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
