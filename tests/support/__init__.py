"""Helpers shared by the test folders (none of them is a test module).

Driving the worker from outside (topics, its ``MDW_*`` environment, worker processes, outputs read back as
typed records, committed positions) is the shared harness ``worker.dev.harness``, which the benchmarks and
the demo use too. What is here only tests want:

- ``kafkatest``: producing to a real broker, consuming as a group member, ``wait_until``, the group timeouts;
- ``netguard``: a tripwire that fails a test on any connection to a non-loopback address;
- ``memkafka``, ``simclock``, ``contract``: the in-memory Kafka, virtual time and the harness of the contract tests;
- ``pipeline``: a test worker's settings, workers in threads, an enrolled emulator, schema checks of outputs;
- ``reliability``: the reliability suite's records, the commit-contract check, the broker proxy, readiness probes;
- ``emulator``: the ``emu`` fixture (the emulator in a thread), a raw HTTP caller with the development credentials.
"""
