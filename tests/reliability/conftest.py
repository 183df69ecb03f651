"""Reliability suite fixtures: the pipeline helpers on sys.path, one enrolled emulator per module."""

from __future__ import annotations

import sys
from pathlib import Path

# The suite builds on tests/pipeline/pipeline_helpers.py (settings_env, ProcessWorker, ThreadWorker, …).
_PIPELINE = str(Path(__file__).resolve().parents[1] / "pipeline")
if _PIPELINE not in sys.path:
    sys.path.insert(0, _PIPELINE)
