"""The v1 signature check, in the order of docs/api-notes.md#signature-checks-at-the-emulator, with its codes.

    4  Authorization missing or empty          10  unknown appid (``a``)
    5  not base64 / too short / a,k,e,t missing 11  unknown SecretId (``k``)
    6  ``a`` ≠ body appid (or ``b`` ≠ bucket)   12  SecretId belongs to another appid
    9  expired (``e`` ≠ 0 and now > e)          13  single-use (``e`` = 0) signature seen before
                                               14  HMAC mismatch

Headers that passed the HMAC are remembered (bounded), so a client reusing one multi-use signature,
as every real client does, costs a dict lookup per request; expiry and appid are still checked each time.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from worker.api.signature import ParsedSignature, SignatureFormatError, parse
from worker.emulator.accounts import AccountBook

OK = 0


class SignatureChecker:
    def __init__(
        self,
        book: AccountBook,
        *,
        clock: Callable[[], float] = time.time,
        max_verified: int = 10_000,
        max_single_use: int = 100_000,
    ) -> None:
        self._book = book
        self._clock = clock
        self._max_verified = max_verified
        self._max_single_use = max_single_use
        self._verified: dict[str, ParsedSignature] = {}
        self._single_use_seen: OrderedDict[bytes, None] = OrderedDict()

    def parse_header(self, header: str | None) -> ParsedSignature | int:
        """Codes 4 and 5, which need no body; returns the parsed signature otherwise."""
        if header is None or not header.strip():
            return 4
        header = header.strip()
        cached = self._verified.get(header)
        if cached is not None:
            return cached
        try:
            return parse(header)
        except SignatureFormatError:
            return 5

    def check(self, header: str, sig: ParsedSignature, body_appid: str, body_bucket: str | None = None) -> int:
        """Codes 6, 10, 11, 12, 14, 9, 13 in that order; 0 when the request may proceed."""
        if sig.appid != body_appid:
            return 6
        bucket = sig.fields.get("b", "")
        if bucket and body_bucket and bucket != body_bucket:
            return 6
        key = header.strip()
        if key not in self._verified:
            if sig.appid not in self._book.appids:
                return 10
            account = self._book.by_secret_id.get(sig.secret_id)
            if account is None:
                return 11
            if account.appid != sig.appid:
                return 12
            if not sig.verify(account.secret_key):
                return 14
            if sig.expires_at != 0:  # single-use ones must be looked at every time
                if len(self._verified) >= self._max_verified:
                    self._verified.clear()
                self._verified[key] = sig
        expires_at = sig.expires_at
        if expires_at != 0:
            if self._clock() > expires_at:
                return 9
            return OK
        if sig.digest in self._single_use_seen:
            return 13
        self._single_use_seen[sig.digest] = None
        if len(self._single_use_seen) > self._max_single_use:
            self._single_use_seen.popitem(last=False)
        return OK

    def reset(self) -> None:
        self._verified.clear()
        self._single_use_seen.clear()
