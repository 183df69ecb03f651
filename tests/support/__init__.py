"""Helpers shared by the test folders (none of them is a test module).

- ``kafkatest``: producing to and reading from a real broker, ``wait_until``, the group timeouts tests use;
- ``netguard``: a tripwire that fails a test on any connection to a non-loopback address;
- ``memkafka``, ``simclock``, ``contract``: the in-memory Kafka, virtual time and the harness of the contract tests;
- ``pipeline``: workers in threads or processes against the embedded broker and an enrolled emulator;
- ``reliability``: the reliability suite's records, output collectors and broker proxy;
- ``emulator``: a raw HTTP caller of the emulator with the development credentials.
"""
