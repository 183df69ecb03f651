"""Development only: never imported by the worker itself (``run``, the client, the operator tools).

- ``demo``: ``multidentify-worker demo``, the whole system end to end on loopback;
- ``devstack``: the embedded stack (Tansu broker, API emulator) for the tests and the demo;
- ``scenario``: mixed batches of synthetic events with their expected outcomes (demo, tests, benchmarks);
- ``processes``: stopping a child process by its own PID (SIGTERM, then SIGKILL).

The package imports none of them, so ``worker.dev.processes`` stays light for the emulator that uses it.
A test checks that the product's modules never import ``worker.dev`` or ``worker.emulator``.
"""
