"""The emulated service's own download of ``url`` images: any failure is code -1308, as the service answers.

Not the worker's fetch mode (``worker.fetch``): no SSRF guard, since the emulator only ever runs on loopback in
development. One keep-alive aiohttp session per emulator; a total timeout and a size cap per download. An
optional short-lived cache of successful downloads (off by default, since the real service fetches every time)
lets load tests measure the worker rather than the image server.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import aiohttp

DOWNLOAD_FAILED = -1308


class DownloadError(Exception):
    """A download failed; ``code`` is what the service answers for it."""

    def __init__(self, detail: str, code: int = DOWNLOAD_FAILED) -> None:
        super().__init__(detail)
        self.code = code


class UrlDownloader:
    """Downloads the images that requests name by ``url`` (start() before use, close() after)."""

    def __init__(
        self,
        *,
        timeout_s: float = 10.0,
        max_bytes: int = 5 * 1024 * 1024,
        cache_ttl_s: float = 0.0,
        cache_entries: int = 1024,
        connections: int = 256,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.cache_ttl_s = cache_ttl_s
        self._cache_entries = cache_entries
        self._cache: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self.downloads = 0
        self.failures = 0

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._connections, keepalive_timeout=30, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            auto_decompress=True,
            trust_env=False,  # never route image downloads through an environment proxy
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def download(self, url: str) -> bytes:
        """The body of a 2xx answer, at most ``max_bytes``; DownloadError(-1308) otherwise."""
        if self.cache_ttl_s > 0:
            hit = self._cache.get(url)
            if hit is not None and time.monotonic() - hit[0] < self.cache_ttl_s:
                return hit[1]
        if not url.lower().startswith(("http://", "https://")):
            self.failures += 1
            raise DownloadError("url is not http(s)")
        if self._session is None:
            raise RuntimeError("UrlDownloader.start() was not awaited")
        self.downloads += 1
        try:
            async with self._session.get(url, allow_redirects=True) as resp:
                if not 200 <= resp.status < 300:
                    raise DownloadError(f"image server answered HTTP {resp.status}")
                if resp.content_length is not None and resp.content_length > self.max_bytes:
                    raise DownloadError("image larger than the download cap")
                data = await resp.content.read(self.max_bytes + 1)
                while len(data) <= self.max_bytes and not resp.content.at_eof():
                    more = await resp.content.read(self.max_bytes + 1 - len(data))
                    if not more:
                        break
                    data += more
                if len(data) > self.max_bytes:
                    raise DownloadError("image larger than the download cap")
        except DownloadError:
            self.failures += 1
            raise
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            self.failures += 1
            raise DownloadError(f"download failed: {type(exc).__name__}") from exc
        if self.cache_ttl_s > 0:
            self._cache[url] = (time.monotonic(), data)
            self._cache.move_to_end(url)
            if len(self._cache) > self._cache_entries:
                self._cache.popitem(last=False)
        return data

    def clear(self) -> None:
        self._cache.clear()
