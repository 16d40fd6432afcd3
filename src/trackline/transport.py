"""One HTTP POST to the Tracking API with urllib3: pooled, gzip, Basic auth, timeouts, proxy.

A request's outcome is returned as a `Response` value, never raised: the caller (the delivery
loop) decides what a failure means. urllib3's own retries are off because the retry policy
lives in one place, `trackline.retry`.
"""

from __future__ import annotations

import base64
import dataclasses

# urllib3 encodes every host with the idna codec on each new connection, which imports
# `encodings.idna` on first use: a fork while a worker thread is inside that import leaves the
# module's import lock held in the child by a thread the child does not have, and the child's
# first connection waits for it forever. Imported here, before any thread or fork.
import encodings.idna  # noqa: F401
import logging
import typing
import zlib
from typing import Final, Protocol

import urllib3

from trackline._version import __version__

logger = logging.getLogger(__name__)

#: How much of an answer's body is read; the Tracking API answers with small JSON documents.
MAX_RESPONSE_BYTES: Final = 64 * 1024
#: zlib level 6 costs about three times the CPU of level 1 for a few percent smaller bodies.
GZIP_LEVEL: Final = 1
USER_AGENT: Final = f"trackline/{__version__} (python)"
_SENT_AT: Final = b',"sentAt":"'


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    """What one attempt produced: an HTTP answer, or `error` when there was none."""

    status: int | None
    body: bytes = b""
    retry_after: str | None = None
    error: str | None = None


class Transport(Protocol):
    """Sends one request body to a path of the API; thread safe."""

    def post(self, path: str, body: bytes | bytearray) -> Response:
        """POST `body` (uncompressed JSON) to `path`, e.g. `/v1/batch`.

        `body` is the caller's until the call returns, and changes after it (the next attempt
        rewrites its `sentAt`): a transport that keeps it must copy it.
        """
        ...

    def reset_after_fork(self) -> None:
        """Forget connections inherited from the parent process."""
        ...

    def close(self) -> None:
        """Release pooled connections."""
        ...


def gzip_bytes(data: bytes | bytearray) -> bytes:
    """Compress `data` in the gzip format.

    One zlib call, not a compressor's compress() and flush(): each call lets go of the GIL,
    and a worker competing with busy calling threads may wait up to the interpreter's switch
    interval (5 ms) to get it back after each.
    """
    return zlib.compress(data, GZIP_LEVEL, wbits=31)


class HttpTransport:
    """The real transport: a urllib3 pool per client, one connection per worker thread."""

    def __init__(
        self,
        host: str,
        write_key: str,
        *,
        timeout: float,
        gzip: bool,
        proxy: str | None = None,
        connections: int = 1,
    ) -> None:
        self._host = host
        self._gzip = gzip
        self._proxy = proxy
        self._connections = connections
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        token = base64.b64encode(f"{write_key}:".encode()).decode("ascii")
        self._headers = {
            "Content-Type": "application/json",
            "Authorization": f"Basic {token}",
            "User-Agent": USER_AGENT,
        }
        if gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._pool = self._make_pool()

    def _make_pool(self) -> urllib3.PoolManager:
        if self._proxy is not None:
            return urllib3.ProxyManager(
                self._proxy, maxsize=self._connections, retries=False, timeout=self._timeout
            )
        return urllib3.PoolManager(maxsize=self._connections, retries=False, timeout=self._timeout)

    def post(self, path: str, body: bytes | bytearray) -> Response:
        # urllib3 sends any buffer as it is (it takes a memoryview of it); its types name bytes.
        payload = gzip_bytes(body) if self._gzip else typing.cast(bytes, body)
        try:
            answer = self._pool.request(
                "POST",
                self._host + path,
                body=payload,
                headers=self._headers,
                preload_content=False,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            return Response(status=None, error=f"{type(exc).__name__}: {exc}")
        try:
            content = answer.read(MAX_RESPONSE_BYTES)
        except urllib3.exceptions.HTTPError as exc:
            # The status arrived but the body did not: the status is still the answer.
            content = b""
            logger.debug("reading the answer's body failed: %s", exc)
        if len(content) >= MAX_RESPONSE_BYTES:
            # Unread bytes would corrupt the next request on this connection: drop it.
            answer.close()
        answer.release_conn()
        return Response(
            status=answer.status,
            body=content,
            retry_after=answer.headers.get("Retry-After"),
        )

    def reset_after_fork(self) -> None:
        self._pool = self._make_pool()

    def close(self) -> None:
        self._pool.clear()


class RelayTransport(HttpTransport):
    """`HttpTransport` posting batches without the envelope's `sentAt`, for messages whose
    `timestamp` is already right: the collector's `tracking-api` destination and
    `trackline import`. A receiver corrects clock skew as `receivedAt - (sentAt -
    timestamp)`; with a `sentAt` it would shift each `timestamp` by the hop's network time
    (or by how long the message waited), without one it keeps `timestamp` as it is. A body of
    another shape goes as it is."""

    def post(self, path: str, body: bytes | bytearray) -> Response:
        cut = body.rfind(_SENT_AT)
        if (
            cut > 0
            and body.endswith(b'"}')
            and body.find(b'"', cut + len(_SENT_AT)) == len(body) - 2
        ):
            body = body[:cut] + b"}"
        return super().post(path, body)
