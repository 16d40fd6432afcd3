"""Handing accepted connections to the collector processes in turn (`--processes N`).

When N processes accept from one shared listening socket, the kernel gives each new connection
to whichever process asks first. Connections arrive in bursts while every process is idle (a
client opening its pool, a balancer warming up) and then live for as long as their keep-alive
lasts, so one process can end up holding most of them: 7 of the 8 connections of
`bench/collector_scale.py`, with the other process all but idle. Here the parent accepts, and
hands each connection to the next process in turn over a Unix socket (the descriptor passed with
SCM_RIGHTS), as Node's cluster module does by default. A connection costs the parent one accept
and one message; its requests never pass through the parent.

`Dispatcher` is the parent's side, `Receiver` a process's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import selectors
import socket
import time
from collections.abc import Callable
from typing import Final

logger = logging.getLogger(__name__)

#: Descriptors taken from the inbox per message at most (the parent sends one per message).
_MAX_FDS: Final = 16
#: The message that carries a descriptor: its bytes say nothing.
_CARRIER: Final = b"c"


def inbox_pair() -> tuple[socket.socket, socket.socket]:
    """(the parent's end, the process's end) of a new process's inbox. SEQPACKET: each
    message keeps its own descriptor, never merged with the next one's."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


class Dispatcher:
    """The parent's side: accepts from `listener` and hands each connection to the next
    process with an inbox, skipping one whose inbox is full or gone."""

    def __init__(self, listener: socket.socket) -> None:
        self._listener = listener
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ)
        self._inboxes: dict[int, socket.socket] = {}  # pid -> the parent's end
        self._turn = 0

    def add(self, pid: int, inbox: socket.socket) -> None:
        """Process `pid` takes connections from now on, through `inbox` (the parent's end)."""
        inbox.setblocking(False)
        self._inboxes[pid] = inbox

    def remove(self, pid: int) -> None:
        """Process `pid` has ended: connections handed to it and not yet taken close with it."""
        inbox = self._inboxes.pop(pid, None)
        if inbox is not None:
            inbox.close()

    def serve_for(self, seconds: float) -> None:
        """Accept and hand over connections for up to `seconds` (returns early on a signal)."""
        if not self._inboxes:  # nobody to hand to: connections wait in the listen backlog
            time.sleep(seconds)
            return
        if not self._selector.select(seconds):
            return
        while True:
            try:
                connection, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: try again on the next round
                logger.warning("cannot accept a connection: %s", exc)
                return
            with connection:
                self._hand(connection)

    def _hand(self, connection: socket.socket) -> None:
        pids = list(self._inboxes)
        for attempt in range(len(pids)):
            pid = pids[(self._turn + attempt) % len(pids)]
            try:
                socket.send_fds(self._inboxes[pid], [_CARRIER], [connection.fileno()])
            except OSError:  # full (the process is stuck) or gone (it died): the next one
                continue
            self._turn = (self._turn + attempt + 1) % len(pids)
            return
        logger.warning("no collector process could take a connection; closing it")

    def stop_accepting(self) -> None:
        """Close the listener: new connections are refused from now on."""
        if self._listener.fileno() != -1:
            self._selector.close()
            self._listener.close()

    def close(self) -> None:
        """Close the listener and every inbox: in the parent once the processes have stopped,
        and in each new process, where none of them is its own (a process holding the listener
        would keep the port open after the parent died, with nobody accepting)."""
        for pid in list(self._inboxes):
            self.remove(pid)
        self.stop_accepting()


class Receiver:
    """A process's side: takes the connections its `inbox` brings and serves each with a
    protocol from `create_protocol`; calls `parent_gone` when the parent has closed it."""

    def __init__(
        self,
        inbox: socket.socket,
        create_protocol: Callable[[], asyncio.Protocol],
        parent_gone: Callable[[], None],
    ) -> None:
        self._inbox = inbox
        self._create_protocol = create_protocol
        self._parent_gone = parent_gone
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._inbox.setblocking(False)
        loop.add_reader(self._inbox.fileno(), self._take)

    def _take(self) -> None:
        assert self._loop is not None
        for _ in range(64):  # then let the event loop serve what it has
            try:
                message, fds, _, _ = socket.recv_fds(self._inbox, 1, _MAX_FDS)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message, fds = b"", []
            if not message and not fds:
                self.close()
                self._parent_gone()
                return
            for fd in fds:
                task = self._loop.create_task(self._serve(socket.socket(fileno=fd)))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _serve(self, connection: socket.socket) -> None:
        assert self._loop is not None
        try:
            await self._loop.connect_accepted_socket(self._create_protocol, connection)
        except OSError:  # the client left while it was handed over
            connection.close()

    def close(self) -> None:
        """Take no more connections (those already taken are served to their end)."""
        if self._loop is not None and self._inbox.fileno() != -1:
            self._loop.remove_reader(self._inbox.fileno())
        with contextlib.suppress(OSError):
            self._inbox.close()
