"""``multidentify-worker gallery``: who the worker can identify — list, show, enrol and delete persons.

Modules, pure first:

- :mod:`worker.gallery.sources` reads a folder or a CSV / JSON-lines manifest into entries (person, photo);
- :mod:`worker.gallery.plan` decides per photo: send, skip (already enrolled, duplicate) or refuse (no API);
- :mod:`worker.gallery.ledger` records which photo became which face (how a rerun knows what is enrolled);
- :mod:`worker.gallery.backends` is one interface over the v1 and IAI clients, with the worker's retry policy;
- :mod:`worker.gallery.enrol` carries a plan out on a bounded thread pool;
- :mod:`worker.gallery.command` is the command line (arguments, output, exit codes). docs/gallery.md tells it.
"""
