"""The worker's exceptions, and ``ApiError``: every failure of a multidentify call or an image download.

Exception hierarchy (what is raised where, and what it becomes)::

    Exception
    ├── ApiError  (here)  one failed call or download; ``code`` is the dead-letter key, ``origin`` says who failed
    │   │                 (worker.api.codes: meaning, class, setting to check). worker.runtime.identify retries it
    │   │                 and worker.core.outcomes.decide ends it: a dead letter (transient/permanent), a held
    │   │                 event (outage), or a stop (config: the pipeline prints ``config_error_reason``).
    │   ├─ origin service   ApiError.from_service  worker.api.models.parse_envelope (a JSON code != 0);
    │   │                   ApiError.from_iai      worker.api.iai_answers.parse_response (``Response.Error``);
    │   │                   ApiError.refused        worker.api.client, worker.api.iai_wire (not sent: the service
    │   │                                           would answer this); worker.fetch (a GIF: -1400, the key url
    │   │                                           mode gets)
    │   ├─ origin client    ApiError.local          worker.api.client (timeout, connection, bad_response),
    │   │                                           worker.api.models, worker.api.iai_answers (http_<status>,
    │   │                                           bad_response);
    │   │                   ApiError("internal_error", …)  worker.runtime.dispatch (a bug; dead-lettered)
    │   └─ origin fetch     ApiError.fetch          worker.fetch (fetch_*, fetch_http_<status>)
    ├── InvalidEvent  (worker.core.records)  parse_event refuses the input (origin event); the pipeline
    │                 dead-letters it at once with class ``invalid``, before any call
    ├── Cancelled  (worker.runtime.identify)  a revoked partition or shutdown ends a held event; never leaves it
    └── ValueError
        ├── ConfigError  (worker.config)  bad settings at start: worker.cli prints the message naming the
        │                 setting and exits with ExitCode.INVALID_CONFIG
        └── SignatureFormatError  (worker.api.signature)  an unreadable Authorization header (the emulator's
                                  auth answers it with code 5)

Internal exceptions (models' ``_Malformed``, fetch's ``_GuardError``) never leave their module: they are
translated into ``ApiError`` there. The registry of keys is :mod:`worker.api.codes`; the names re-exported
here keep older imports working.
"""

from __future__ import annotations

from worker.api.codes import (
    CODES,
    FETCH_CODES,
    IAI_CODES,
    INVALID_CODES,
    LOCAL_CODES,
    Api,
    CodeInfo,
    ErrorClass,
    IaiCodeInfo,
    KeyInfo,
    Origin,
    class_of_code,
    class_of_http_status,
    class_of_iai_code,
    is_iai_code,
    lookup,
    meaning,
)

__all__ = [
    "CODES",
    "FETCH_CODES",
    "IAI_CODES",
    "INVALID_CODES",
    "LOCAL_CODES",
    "Api",
    "ApiError",
    "CodeInfo",
    "ErrorClass",
    "IaiCodeInfo",
    "KeyInfo",
    "Origin",
    "class_of_code",
    "class_of_http_status",
    "class_of_iai_code",
    "config_error_reason",
    "lookup",
    "meaning",
]


class ApiError(Exception):
    """One failed call or download: ``code`` is the service code as a string (v1's ``"-1308"``, IAI's
    ``"FailedOperation.ImageDownloadError"``) or another dead-letter key; ``origin`` is set by the constructor that
    made it (by default the key's, from the registry); ``request_id`` is IAI's ``RequestId`` of the failed call."""

    def __init__(
        self,
        code: str,
        error_class: ErrorClass,
        message: str,
        *,
        http_status: int | None = None,
        resign: bool = False,
        retry_after: float | None = None,
        origin: Origin | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.error_class = error_class
        self.message = message
        self.http_status = http_status
        self.resign = resign
        self.retry_after = retry_after
        if origin is None:  # built by hand (a re-classified or internal error): the key's own origin
            info = lookup(code)
            origin = info.origin if info else Origin.CLIENT
        self.origin = origin
        self.request_id = request_id

    @property
    def transient(self) -> bool:
        return self.error_class is ErrorClass.TRANSIENT

    @property
    def rate_limited(self) -> bool:
        """The API asks us to slow down: v1's 15, IAI's ``RequestLimitExceeded`` (and its sub-codes, and
        ``FailedOperation.RequestLimitExceeded``), or HTTP 429. The registry says which codes (``rate_limited``)."""
        if self.http_status == 429:
            return True
        info = lookup(self.code)
        return bool(info and info.rate_limited)

    @classmethod
    def from_service(cls, code: int, message: str, http_status: int | None = None) -> ApiError:
        info = CODES.get(code)
        return cls(
            str(code),
            class_of_code(code),
            message or (info.meaning if info else "unknown service code"),
            http_status=http_status,
            resign=bool(info and info.resign),
            origin=Origin.SERVICE,
        )

    @classmethod
    def from_iai(
        cls, code: str, message: str, request_id: str | None = None, http_status: int | None = None
    ) -> ApiError:
        """IAI's ``Response.Error``: ``code`` is the error code string, the dead-letter key as it is.

        Raises ValueError for a string not spelt like an IAI code (the parser checks before calling): such a key
        could pass for another origin's (``timeout``) or break the dead-letter key's limits.
        """
        if not is_iai_code(code):
            raise ValueError(f"not an IAI error code: {code[:80]!r}")
        info = lookup(code)
        assert info is not None  # every IAI-spelt code has an entry, listed or by family
        iai = IAI_CODES.get(code)
        return cls(
            code,
            info.error_class,
            message or info.meaning,
            http_status=http_status,
            resign=bool(iai and iai.resign),
            origin=Origin.SERVICE,
            request_id=request_id,
        )

    @classmethod
    def refused(cls, code: int | str, reason: str) -> ApiError:
        """A request the client did not send because the service would answer ``code`` (same code and class):
        an integer is a v1 code, a string an IAI code."""
        message = f"refused locally, not sent: {reason}"
        return cls.from_iai(code, message) if isinstance(code, str) else cls.from_service(code, message)

    @classmethod
    def local(cls, code: str, message: str, *, http_status: int | None = None) -> ApiError:
        """No usable answer from the API (or refused here): a client key, ``http_<status>`` included."""
        info = lookup(code)
        error_class = info.error_class if info else ErrorClass.TRANSIENT
        return cls(code, error_class, message, http_status=http_status, origin=Origin.CLIENT)

    @classmethod
    def fetch(cls, code: str, message: str, *, retry_after: float | None = None) -> ApiError:
        """Fetch mode's download failed (``fetch_*``). ``http_status`` stays unset: it is about the face API."""
        info = lookup(code)
        error_class = info.error_class if info else ErrorClass.TRANSIENT
        return cls(code, error_class, message, retry_after=retry_after, origin=Origin.FETCH)

    def __reduce__(self):  # type: ignore[no-untyped-def]  # keep pickling (process pools, hypothesis)
        return (
            _rebuild,
            (
                self.code,
                self.error_class,
                self.message,
                self.http_status,
                self.resign,
                self.retry_after,
                self.origin,
                self.request_id,
            ),
        )


def _rebuild(
    code: str,
    error_class: ErrorClass,
    message: str,
    http_status: int | None,
    resign: bool,
    retry_after: float | None,
    origin: Origin | None = None,  # None: pickled before errors carried their origin
    request_id: str | None = None,
) -> ApiError:
    return ApiError(
        code,
        error_class,
        message,
        http_status=http_status,
        resign=resign,
        retry_after=retry_after,
        origin=origin,
        request_id=request_id,
    )


def config_error_reason(err: ApiError) -> str:
    """Why the worker stops on a confirmed configuration code, naming the setting to look at (the registry's)."""
    info = lookup(err.code)
    cause = info.check if info and info.check else "the worker's configuration"
    status = f", HTTP {err.http_status}" if err.http_status else ""
    return f"the face API refused our configuration (code {err.code}: {err.message}{status}); check {cause}"
