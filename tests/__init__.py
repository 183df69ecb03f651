"""The test suite: one folder per package of ``worker/``, shared helpers in ``support/``."""
