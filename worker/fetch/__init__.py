"""Fetch mode: the worker downloads an event's image itself (private buckets) without becoming an SSRF proxy.

One :class:`ImageFetcher`, configured by :class:`FetchOptions`, serves every HTTP thread of the worker; each
module states its part of the contract:

- fetcher   ``ImageFetcher.fetch``: URL rules, redirects hop by hop, limits, the type from magic bytes
- policy    which resolved addresses may be connected to (private, metadata, reserved ranges; allow lists)
- hosts     numeric hosts read as a browser reads them, the resolver seam, URLs redacted for messages
- guarded   the urllib3 connections that resolve, check and connect to the checked address; no proxies
- deadline  the watchdog that ends a whole fetch at ``total_timeout``, TLS handshake and trickling bodies too
- buffers   where bodies go (one memory mapping each) and how they count against the byte budget
- failures  every failure as an ``ApiError`` keyed for the dead-letter topic (``FETCH_CODES``)

Its dependencies: ``worker.api`` (codes, errors, the image sniffer, the Retry-After parser) and
``worker.core.budget``; nothing imports it back but the runtime, and only in fetch mode.
"""

from __future__ import annotations

from worker.api.codes import FETCH_CODES
from worker.fetch.buffers import FetchedImage
from worker.fetch.fetcher import FetchOptions, ImageFetcher
from worker.fetch.hosts import Resolver, parse_numeric_host, redact_url, system_resolver
from worker.fetch.policy import METADATA, AddressPolicy

__all__ = [
    "FETCH_CODES",
    "METADATA",
    "AddressPolicy",
    "FetchOptions",
    "FetchedImage",
    "ImageFetcher",
    "Resolver",
    "parse_numeric_host",
    "redact_url",
    "system_resolver",
]
