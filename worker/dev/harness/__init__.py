"""The one harness that tests, benchmarks and the demo share to drive the worker from outside.

Development only, like the rest of ``worker.dev``: the product never imports it; it may import the product
and the emulator. One module per job, each stating its contract:

- ``topics``: the names of one worker's three topics and their group (:class:`Topics`), topic creation;
- ``env``: the worker's ``MDW_*`` environment, built from typed arguments in one place;
- ``processes``: child processes started, logged to a file and stopped by their own PID, among them
  ``python -m worker run`` with its ``/readyz`` and ``/metrics``;
- ``loopback``: a free port to hand out, a GET on 127.0.0.1 that never goes through a proxy;
- ``reader``: reading topics back by assignment (no group join): what is there now, until quiet, until the end;
- ``outputs``: the worker's results and dead letters as typed records, their reader, and :class:`Tally`;
- ``positions``: the committed positions of a consumer group.

This package imports none of them, so ``worker.dev.harness.processes`` stays light for the emulator that
stops its own child with it.
"""
