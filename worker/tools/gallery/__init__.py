"""``multidentify-worker gallery``: who the worker can identify — list, show, enrol and delete persons.

Modules, pure first:

- :mod:`worker.tools.gallery.sources` reads a folder or a CSV / JSON-lines manifest into entries (person, photo);
- :mod:`worker.tools.gallery.plan` decides per photo: send, skip (already enrolled, duplicate) or refuse (no API);
- :mod:`worker.tools.gallery.ledger` records which photo became which face (how a rerun knows what is enrolled);
- :mod:`worker.tools.gallery.backends` is one interface over the v1 and IAI clients, with the worker's retry policy;
- :mod:`worker.tools.gallery.enrol` carries a plan out on a bounded thread pool;
- :mod:`worker.tools.gallery.command` is the command line (arguments, output, exit codes). docs/gallery.md tells it.
"""
