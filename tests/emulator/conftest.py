"""Fixtures for the emulator tests: an image server in a thread and raw HTTP callers of ``emu`` (v1 and IAI).

``emu`` itself, the emulator in a thread, is the shared fixture of ``tests.support.emulator``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulator.iai_support import IaiCaller
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


@pytest.fixture
def iai(emu: EmulatorHandle) -> Iterator[IaiCaller]:
    """Signed IAI requests to ``emu`` (whichever ``emu`` the module uses), on an empty gallery."""
    emu.reset(gallery=True)
    caller = IaiCaller(emu.base_url)
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
