"""Development only: never imported by the worker itself (``run``, the client, the operator tools).

- ``demo``: ``multidentify-worker demo``, the whole system end to end on loopback;
- ``devstack``: the embedded stack (Tansu broker, API emulator) for the tests, the benchmarks and the demo;
- ``scenario``: mixed batches of synthetic events with their expected outcomes (demo, tests, benchmarks);
- ``notifications``: bucket notifications as MinIO publishes them (the demo's ``s3`` topic, tests);
- ``harness``: driving the worker from outside, shared by the tests, the benchmarks and the demo: topic
  names and creation, the worker's ``MDW_*`` environment, worker processes, reading its outputs back as
  typed records, a group's committed positions.

The package imports none of them, so ``worker.dev.harness.processes`` stays light for the emulator that uses it.
A test checks that the product's modules never import ``worker.dev`` or ``worker.emulator``.
"""
