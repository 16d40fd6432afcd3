"""A TCP fault proxy on 127.0.0.1 for tests, with switchable toxics in the manner of toxiproxy.

It sits between a client and a server (the capture server or the collector) and forwards bytes
both ways, unless a toxic says otherwise. It knows nothing of HTTP beyond the one fact that an
HTTP/1.1 client without pipelining alternates: the client speaks (a request), then the server
speaks (its answer). The proxy tracks that turn on every connection, so a toxic can act once per
*exchange*: reset a request half sent, swallow it, or let the server answer and then throw the
answer away ("commit then drop the response": the server did the work, the client never hears).

Toxics, each switchable while traffic flows:

- `Latency(seconds, jitter)`: delay every chunk in one direction.
- `Bandwidth(bytes_per_second)`: trickle every chunk in one direction.
- `ResetPeer(after_bytes)`: forward the first bytes of a request, then RST the client.
- `BlackHole()`: accept the request and never answer; the connection stays open.
- `DropResponse()`: the server gets the whole request and answers; the client gets an RST.

`times` limits how many exchanges a toxic acts on and `toxicity` is the chance it acts on each
(drawn from a seeded random source, so a run can be replayed). `down()` closes the listening
socket, so connecting fails with ECONNREFUSED as if the server were stopped, and resets every
open connection; `up()` listens again on the same port. `retarget()` points new connections at
another server, so a server restarted on a new port keeps the address clients know.

The proxy runs its own event loop on a daemon thread; every method is called from test threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import random
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
ToxicT = TypeVar("ToxicT", bound="Toxic")

CHUNK_BYTES = 64 * 1024


class Direction(enum.Enum):
    """Which way a toxic acts: toward the server (the request) or toward the client."""

    UPSTREAM = "upstream"
    DOWNSTREAM = "downstream"


@dataclasses.dataclass(eq=False)
class Toxic:
    """Base of the toxics: when it acts (`times`, `toxicity`) and how often it did (`fired`)."""

    times: int | None = dataclasses.field(default=None, kw_only=True)
    toxicity: float = dataclasses.field(default=1.0, kw_only=True)
    fired: int = dataclasses.field(default=0, init=False)
    _changed: threading.Condition = dataclasses.field(
        default_factory=threading.Condition, init=False, repr=False
    )

    def wait_fired(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until the toxic acted `count` times; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.fired < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def _try_fire(self, rng: random.Random) -> bool:
        with self._changed:
            if self.times is not None and self.fired >= self.times:
                return False
            if self.toxicity < 1.0 and rng.random() >= self.toxicity:
                return False
            self.fired += 1
            self._changed.notify_all()
            return True


@dataclasses.dataclass(eq=False)
class Latency(Toxic):
    """Delay each chunk by `seconds` plus a uniform jitter in [-jitter, +jitter]."""

    seconds: float = 0.1
    jitter: float = 0.0
    direction: Direction = Direction.DOWNSTREAM


@dataclasses.dataclass(eq=False)
class Bandwidth(Toxic):
    """Pass at most `bytes_per_second` in one direction."""

    bytes_per_second: int = 64 * 1024
    direction: Direction = Direction.UPSTREAM


@dataclasses.dataclass(eq=False)
class ResetPeer(Toxic):
    """Forward the first `after_bytes` of a request to the server, then RST the client."""

    after_bytes: int = 0


@dataclasses.dataclass(eq=False)
class BlackHole(Toxic):
    """Swallow a request whole and never answer it; the connection is left open."""


@dataclasses.dataclass(eq=False)
class DropResponse(Toxic):
    """Let the server answer, discard the answer and RST the client: commit, then lose the ack."""


class _Conn:
    """One proxied connection and whose turn it is to speak."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        #: Between the client's first bytes of a request and the server's first of the answer.
        self.in_exchange = False
        self.swallowing = False


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close with an RST rather than a FIN, as a crashed or rebooted peer would."""
    if writer is None or writer.transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None and not writer.transport.is_closing():
        writer.close()


def _address(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"upstream must be a URL with a host and port, not {url!r}")
    return parts.hostname, parts.port


class FaultProxy:
    """Start with `with FaultProxy(server.url) as proxy:`; point the client at `proxy.url`."""

    def __init__(self, upstream: str, *, seed: int = 0) -> None:
        self._upstream = _address(upstream)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._toxics: list[Toxic] = []
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._listener: socket.socket | None = None
        #: Bumped by every down(): a connection accepted before it is reset, not served.
        self._generation = 0
        self._port = 0
        self.connections = 0
        self.exchanges = 0
        self.bytes_upstream = 0
        self.bytes_downstream = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults ------------------------------------------------------------------------------

    def add(self, toxic: ToxicT) -> ToxicT:
        """Switch a toxic on; it acts on chunks and exchanges from now on."""
        with self._lock:
            self._toxics.append(toxic)
        return toxic

    def remove(self, toxic: Toxic) -> None:
        """Switch a toxic off (a black-holed connection stays silent until its client leaves)."""
        with self._lock:
            if toxic in self._toxics:
                self._toxics.remove(toxic)

    def clear(self) -> None:
        """Switch every toxic off."""
        with self._lock:
            self._toxics.clear()

    @contextlib.contextmanager
    def toxic(self, toxic: ToxicT) -> Iterator[ToxicT]:
        """The toxic is on inside the block."""
        self.add(toxic)
        try:
            yield toxic
        finally:
            self.remove(toxic)

    def down(self) -> None:
        """Stop listening (connecting is refused) and reset every open connection."""
        self._call(self._stop_listening())

    def up(self) -> None:
        """Listen again, on the same port."""
        self._call(self._listen())

    def retarget(self, upstream: str) -> None:
        """Send new connections to another server (a restarted one on a new port): the proxy's
        address is what clients know, and it does not change."""
        self._upstream = _address(upstream)

    @property
    def is_down(self) -> bool:
        return self._listener is None

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """The server looks stopped inside the block."""
        self.down()
        try:
            yield
        finally:
            self.up()

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    # -- the event loop side -----------------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    # The proxy accepts connections itself rather than through asyncio.start_server: with
    # Python 3.11's Server, a connection accepted just before close() makes its transport
    # setup fail an assertion and the socket leaks, and down() closes a lot.

    async def _listen(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self._port))
        listener.listen(128)
        listener.setblocking(False)
        self._port = listener.getsockname()[1]
        self._listener = listener
        self._loop.add_reader(listener.fileno(), self._accept, listener)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # nothing left to accept (or no descriptor left to accept it with)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._serve(conn, self._generation))
            # The loop holds tasks weakly; an idle handler must not be collected mid-await.
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        self._generation += 1
        if listener is not None:
            self._loop.remove_reader(listener.fileno())
            listener.close()
        for conn in list(self._conns):
            _reset(conn.client)
            _close(conn.upstream)

    async def _shutdown(self) -> None:
        await self._stop_listening()
        tasks = list(self._tasks)
        if not tasks:
            return
        # The connections were reset, so their handlers end on their own; cancel stragglers.
        _, pending = await asyncio.wait(tasks, timeout=1.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _pick(self, kinds: tuple[type[Toxic], ...]) -> Toxic | None:
        """The first toxic of `kinds` that acts on this exchange, if any."""
        with self._lock:
            toxics = [toxic for toxic in self._toxics if isinstance(toxic, kinds)]
        for toxic in toxics:
            if toxic._try_fire(self._rng):
                return toxic
        return None

    async def _serve(self, sock: socket.socket, generation: int) -> None:
        self.connections += 1
        try:
            reader, writer = await asyncio.open_connection(sock=sock)
        except OSError:
            sock.close()
            return
        if generation != self._generation:
            _reset(writer)
            return
        conn = _Conn(writer)
        self._conns.add(conn)
        try:
            try:
                up_reader, conn.upstream = await asyncio.open_connection(*self._upstream)
            except OSError:
                _reset(writer)
                return
            await asyncio.gather(
                self._pump_request(conn, reader), self._pump_response(conn, up_reader)
            )
        except (OSError, asyncio.IncompleteReadError):
            _reset(writer)
        except asyncio.CancelledError:
            _reset(writer)
            raise
        finally:
            self._conns.discard(conn)
            _close(conn.upstream)
            _close(writer)

    async def _pump_request(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        upstream = conn.upstream
        assert upstream is not None
        while True:
            data = await reader.read(CHUNK_BYTES)
            if not data:
                _close(upstream)
                return
            if conn.swallowing:
                continue
            if not conn.in_exchange:
                conn.in_exchange = True
                self.exchanges += 1
                toxic = self._pick((ResetPeer, BlackHole))
                if isinstance(toxic, BlackHole):
                    conn.swallowing = True
                    continue
                if isinstance(toxic, ResetPeer):
                    if toxic.after_bytes:
                        upstream.write(data[: toxic.after_bytes])
                        await upstream.drain()
                    _reset(conn.client)
                    _reset(upstream)
                    return
            await self._pass(data, upstream, Direction.UPSTREAM)
            self.bytes_upstream += len(data)

    async def _pump_response(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        while True:
            data = await reader.read(CHUNK_BYTES)
            if not data:
                _close(conn.client)
                return
            if conn.in_exchange:
                # The server's first bytes of an answer: the request was received whole.
                conn.in_exchange = False
                if self._pick((DropResponse,)) is not None:
                    _reset(conn.client)
                    _close(conn.upstream)
                    return
            await self._pass(data, conn.client, Direction.DOWNSTREAM)
            self.bytes_downstream += len(data)

    async def _pass(self, data: bytes, writer: asyncio.StreamWriter, direction: Direction) -> None:
        with self._lock:
            toxics = [
                toxic
                for toxic in self._toxics
                if isinstance(toxic, (Latency, Bandwidth)) and toxic.direction is direction
            ]
        for toxic in toxics:
            if isinstance(toxic, Latency):
                jitter = self._rng.uniform(-toxic.jitter, toxic.jitter) if toxic.jitter else 0.0
                await asyncio.sleep(max(0.0, toxic.seconds + jitter))
        rate = min(
            (toxic.bytes_per_second for toxic in toxics if isinstance(toxic, Bandwidth)),
            default=None,
        )
        if rate is None:
            writer.write(data)
            await writer.drain()
            return
        # Slices of a twentieth of a second keep the trickle smooth at any rate.
        step = max(1, rate // 20)
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(len(piece) / rate)
