"""Every way the worker process ends, as one enum (README "Exit codes")."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0  #: stopped cleanly (SIGTERM/SIGINT, drained and committed)
    INVALID_CONFIG = 2  #: a setting is invalid; the message names it
    CONFIG_REFUSED = 3  #: the API refused our configuration or credentials, confirmed by a check call
    KAFKA = 5  #: an output could not be delivered, or the Kafka client failed fatally
    STOP_CUT_SHORT = 6  #: a stop did not finish within drain_timeout_s + 4 s; the watchdog ended it
