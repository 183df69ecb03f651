"""Dispatch: consumed events wait per partition and go to the HTTP threads round-robin, within the window.

Every assigned partition gets a share of the ``max_in_flight`` window: the ready queues are visited in turn
(the dict order is the rotation). A task learns it is cancelled when the worker aborts, when its partition
is being revoked (held and waiting events give up at once; a call in progress finishes), or when its
partition's assignment epoch changed (revoked, lost, or reset). The breaker's probe runs on the pool too,
so that recovery never depends on an event being in flight.
"""

from __future__ import annotations

import logging
import queue
from collections import deque
from collections.abc import Callable

from worker.api.errors import ApiError, ErrorClass
from worker.core.offsets import OffsetTracker
from worker.runtime.identify import Completion, Identifier, Kind, ProbeDone, Task
from worker.runtime.kafka import Partition
from worker.runtime.pool import TaskPool

log = logging.getLogger("worker.dispatch")


class Dispatcher:
    def __init__(
        self,
        identifier: Identifier,
        tracker: OffsetTracker,
        completions: queue.Queue[Completion | ProbeDone],
        *,
        max_in_flight: int,
        aborted: Callable[[], bool],
    ) -> None:
        self._identifier = identifier
        self._tracker = tracker
        self._completions = completions
        self._max_in_flight = max_in_flight
        self._aborted = aborted
        self._pool = TaskPool(max_in_flight + 1)  # one spare thread for the breaker's probe
        self._ready: dict[Partition, deque[Task]] = {}
        self.ready_count = 0
        self.in_flight = 0  # handed to the pool, not yet completed
        self.in_flight_by_partition: dict[Partition, int] = {}
        self.probing = False
        self.revoking: set[Partition] = set()

    # -- ready queues ----------------------------------------------------------------------------

    def ready(self, task: Task) -> None:
        tasks = self._ready.get(task.tp)
        if tasks is None:
            tasks = self._ready[task.tp] = deque()
        tasks.append(task)
        self.ready_count += 1

    def drop(self, tps: set[Partition]) -> None:
        """Forget the ready (never dispatched) events of ``tps``: the next owner gets them again."""
        for tp in tps:
            dropped = self._ready.pop(tp, None)
            if dropped:
                self.ready_count -= len(dropped)

    def fill(self) -> None:
        """Dispatch ready events into free slots, one partition after the other (a fair share each)."""
        while self._ready and self.in_flight < self._max_in_flight:
            tp = next(iter(self._ready))
            tasks = self._ready.pop(tp)
            self.ready_count -= 1
            self._dispatch(tasks.popleft())
            if tasks:
                self._ready[tp] = tasks  # to the end of the rotation

    # -- the pool ----------------------------------------------------------------------------------

    def completed(self, task: Task) -> None:
        """``task``'s completion was taken off the queue."""
        self.in_flight -= 1
        left = self.in_flight_by_partition[task.tp] - 1
        if left:
            self.in_flight_by_partition[task.tp] = left
        else:
            del self.in_flight_by_partition[task.tp]

    def running(self, tps: set[Partition]) -> bool:
        return any(self.in_flight_by_partition.get(tp, 0) for tp in tps)

    def _dispatch(self, task: Task) -> None:
        self.in_flight += 1
        self.in_flight_by_partition[task.tp] = self.in_flight_by_partition.get(task.tp, 0) + 1
        identifier, completions, tracker, revoking, aborted = (
            self._identifier,
            self._completions,
            self._tracker,
            self.revoking,
            self._aborted,
        )

        def cancelled() -> bool:
            return aborted() or task.tp in revoking or tracker.epoch(task.tp) != task.epoch

        def run() -> None:
            try:
                completion = identifier.run(task, cancelled)
            except Exception as exc:  # a bug must not lose the event: dead-letter it with the reason
                log.exception("identify crashed", extra={"event_id": task.event.event_id})
                completion = Completion(
                    task=task,
                    kind=Kind.DEAD_LETTER,
                    error=ApiError("internal_error", ErrorClass.PERMANENT, f"{type(exc).__name__}: {exc}"),
                )
            completions.put(completion)

        self._pool.submit(run)

    def probe(self) -> None:
        """Send the breaker's half-open test call (the caller got the probe slot from ``breaker.allow()``)."""
        self.probing = True
        identifier, completions, aborted = self._identifier, self._completions, self._aborted

        def run() -> None:
            try:
                done = identifier.probe(aborted)
            except Exception as exc:  # pragma: no cover - a bug in the probe must not wedge the loop
                log.exception("probe crashed")
                done = ProbeDone(error=ApiError("internal_error", ErrorClass.TRANSIENT, str(exc)))
            completions.put(done)

        self._pool.submit(run)

    def shutdown(self) -> None:
        self._pool.shutdown()
