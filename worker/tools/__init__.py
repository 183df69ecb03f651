"""Operator tools mounted as ``multidentify-worker`` subcommands: ``replay``, ``produce``, ``tail`` and ``gallery``.

Each tool module (``gallery``: ``gallery.command``) exposes ``add_arguments(parser)`` and ``run(args) -> int`` (the
exit code). The Kafka tools read the topics with ``assign()`` rather than a group subscription (no group-join wait)
and work around the Tansu broker's wrong "latest" offsets (see :func:`worker.tools._kafka.end_offsets`).
"""
