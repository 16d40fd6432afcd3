"""Several collector processes on one listening socket: `trackline collector --processes N`.

The parent binds the socket, forks N children that each open their own store, and then
accepts connections and hands each to the next child in turn (`handoff.py`: left to the
kernel, one child could end up holding most of them), and supervises: a child that dies is
replaced (after a pause that grows while children keep dying at once, as when the database
is down at start), and SIGTERM or SIGINT to the parent stops every child gracefully, each
finishing its in-flight requests. The children ignore SIGINT, so Ctrl-C in a terminal (which
signals the whole process group) stops them once, through the parent.

Forking needs a parent with no threads and no open connections: the parent opens nothing but
the socket and the children's inboxes (it checks the database by opening and closing a store
before it forks).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Final

from trackline.collector.handoff import Dispatcher, inbox_pair

logger = logging.getLogger(__name__)

#: How often the parent looks at its children.
POLL_SECONDS: Final = 0.1
#: Pause before replacing a child that died, growing up to the cap while they keep dying.
FIRST_PAUSE_SECONDS: Final = 0.2
MAX_PAUSE_SECONDS: Final = 5.0
#: A child that lived this long resets the pause.
STABLE_SECONDS: Final = 10.0


class Supervisor:
    """Runs `serve(inbox)` in `count` forked children until stopped, handing them in turn the
    connections `listener` accepts (each child takes them from its `inbox`: see
    `handoff.Receiver`); `serve` must not return before the child's server has stopped."""

    def __init__(
        self,
        count: int,
        serve: Callable[[socket.socket], None],
        stop_seconds: float,
        listener: socket.socket,
    ) -> None:
        if count < 1:
            raise ValueError(f"processes must be at least 1, not {count}")
        self._count = count
        self._serve = serve
        self._stop_seconds = stop_seconds
        self._dispatcher = Dispatcher(listener)
        self._children: dict[int, float] = {}  # pid -> when it started
        self._stopping = False
        self._pause = FIRST_PAUSE_SECONDS
        self.restarts = 0

    def _fork(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        ours, theirs = inbox_pair()
        pid = os.fork()
        if pid == 0:  # the child: serve, then leave without running the parent's code
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                ours.close()
                self._dispatcher.close()
                self._serve(theirs)
                code = 0
            except BaseException:
                logger.exception("collector process %d failed", os.getpid())
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        theirs.close()
        self._dispatcher.add(pid, ours)
        self._children[pid] = time.monotonic()

    def _handle(self, signum: int, frame: object) -> None:
        self._stopping = True

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns 0 once every child has stopped."""
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._handle) for sig in handled}
        try:
            for _ in range(self._count):
                self._fork()
            while not self._stopping:
                self._dispatcher.serve_for(POLL_SECONDS)
                self._reap_and_replace()
            return self._stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _reap_and_replace(self) -> None:
        while self._children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            started = self._children.pop(pid, None)
            self._dispatcher.remove(pid)
            if started is None or self._stopping:
                continue
            lived = time.monotonic() - started
            logger.warning(
                "collector process %d ended (%s) after %.1f s; starting another",
                pid,
                _describe(status),
                lived,
            )
            if lived > STABLE_SECONDS:
                self._pause = FIRST_PAUSE_SECONDS
            deadline = time.monotonic() + self._pause
            while time.monotonic() < deadline and not self._stopping:
                self._dispatcher.serve_for(POLL_SECONDS)
            self._pause = min(self._pause * 2, MAX_PAUSE_SECONDS)
            if not self._stopping:
                self.restarts += 1
                self._fork()

    def _stop(self) -> int:
        self._dispatcher.stop_accepting()
        for pid in self._children:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + self._stop_seconds
        while self._children and time.monotonic() < deadline:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                time.sleep(POLL_SECONDS)
            else:
                self._children.pop(pid, None)
        for pid in self._children:
            logger.warning("collector process %d did not stop in time; killing it", pid)
            _signal(pid, signal.SIGKILL)
        for pid in list(self._children):
            os.waitpid(pid, 0)
        self._children.clear()
        self._dispatcher.close()
        return 0


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.waitstatus_to_exitcode(status)}"
