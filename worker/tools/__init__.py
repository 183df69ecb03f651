"""Operator tools mounted as ``multidentify-worker`` subcommands: ``replay``, ``produce`` and ``tail``.

Each tool module exposes ``add_arguments(parser)`` and ``run(args) -> int`` (the exit code). They read the
topics with ``assign()`` rather than a group subscription (no group-join wait) and work around the Tansu
broker's wrong "latest" offsets (see :func:`worker.tools._kafka.end_offsets`).
"""
