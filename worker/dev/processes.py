"""Stopping a child process we started: by its own PID, SIGTERM first, SIGKILL after a timeout."""

from __future__ import annotations

import contextlib
import signal
import subprocess


def stop_process(popen: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL; returns the exit code. Idempotent."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                popen.kill()
            popen.wait(timeout_s)
    return int(popen.returncode)
