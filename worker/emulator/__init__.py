"""A local, wire-compatible emulator of Tencent's face APIs: v1 (multidentify + person/group management) under
``/face/<action>``, and IAI (API 3.0, version 2020-03-03: SearchFaces, SearchPersons, groups, persons, faces) on
``POST /`` (:mod:`worker.emulator.iai`), over one engine, gallery and fault model.

Public surface (everything else is internal):

* run it: :func:`start_in_thread` / :func:`spawn_process` (handles :class:`EmulatorHandle` /
  :class:`EmulatorProcess`), ``python -m worker.emulator`` (:mod:`worker.emulator.cli`);
* configure it: :class:`EmulatorConfig`, :class:`FaultConfig`, :class:`Limits`, :class:`Account`,
  :data:`DEV_ACCOUNT`;
* images: :mod:`worker.emulator.synth` (synthetic faces), :mod:`worker.emulator.imageserver`,
  :mod:`worker.emulator.photo` (photos as users send them), :mod:`worker.emulator.annotate` (boxes and names drawn
  onto a photo);
* the engine seam: :class:`FaceEngine`, :class:`DetectedFace`, :class:`Rect`, :class:`SyntheticEngine` (the
  default), :class:`DlibEngine` (real faces; the ``faces`` extra), :func:`make_engine` by name (:data:`ENGINES`).
"""

from __future__ import annotations

from worker.emulator.accounts import DEV_ACCOUNT, Account
from worker.emulator.config import EmulatorConfig
from worker.emulator.dlib_engine import DlibEngine
from worker.emulator.engine import ENGINES, SyntheticEngine, make_engine
from worker.emulator.faces import DetectedFace, FaceEngine, ImageError, Rect
from worker.emulator.faults import FaultConfig
from worker.emulator.gallery import Limits
from worker.emulator.runner import EmulatorHandle, EmulatorProcess, spawn_process, start_in_thread
from worker.emulator.server import Emulator, create_app

__all__ = [
    "DEV_ACCOUNT",
    "ENGINES",
    "Account",
    "DetectedFace",
    "DlibEngine",
    "Emulator",
    "EmulatorConfig",
    "EmulatorHandle",
    "EmulatorProcess",
    "FaceEngine",
    "FaultConfig",
    "ImageError",
    "Limits",
    "Rect",
    "SyntheticEngine",
    "create_app",
    "make_engine",
    "spawn_process",
    "start_in_thread",
]
