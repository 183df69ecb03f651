"""Result and dead-letter record values built the worker's way, for tests that need one without running a worker.

Defaults give a result with two faces (the best match of the first is ``alice`` at 93.5, the second has no
candidate) and a ``-1308`` dead letter whose message has a second line; every field can be set.
"""

from __future__ import annotations

from worker.api.models import Candidate, Face, FaceRect, IdentifyResult
from worker.core import records

SOURCE = records.Source("images", 0, 7, 1_700_000_000_000, b"cam-1", ())
TWO_FACES = (
    Face(FaceRect(1, 2, 3, 4), (Candidate("bob", "f2", 71.25, ""), Candidate("alice", "f1", 93.5, ""))),
    Face(FaceRect(5, 6, 7, 8), ()),
)


def result_value(
    event_id: str = "e-1",
    faces: tuple[Face, ...] = TWO_FACES,
    *,
    event: records.Event | None = None,
    source: records.Source = SOURCE,
    processed_at_ms: int = 1_700_000_000_000,
    worker_instance: str | None = None,
) -> bytes:
    """A result record for ``event`` (default: ``event_id`` with a loopback image URL) with ``faces``."""
    return records.build_result(
        event or records.Event(event_id, "http://127.0.0.1:1/a.jpg"),
        IdentifyResult(faces, "sess", 200),
        source=source,
        attempts=1,
        api_latency_ms=12.0,
        worker_version="0.1.0",
        processed_at_ms=processed_at_ms,
        image_mode="url",
        worker_instance=worker_instance,
    )


def dead_letter_value(
    event_id: str | None = "e-2", *, source: records.Source = SOURCE, dead_lettered_at_ms: int | None = None
) -> bytes:
    """A ``-1308`` (image download failed) dead letter of the value ``{}``."""
    error = records.ErrorInfo("-1308", "permanent", "图片下载失败\nline two", 200, 3, 1, 2)
    return records.build_dead_letter(
        b"{}",
        event_id=event_id,
        error=error,
        source=source,
        worker_version="0.1.0",
        dead_lettered_at_ms=dead_lettered_at_ms,
    )
