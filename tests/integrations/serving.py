"""Serve a WSGI or ASGI app over real HTTP on 127.0.0.1 from a thread, and fetch from it.

WSGI apps run under `wsgiref` with a thread per request, as a threaded server would run them;
ASGI apps run under uvicorn. Both bind port 0 so parallel runs never collide.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import wsgiref.simple_server
from collections.abc import Iterator, Mapping
from typing import Any
from wsgiref.types import WSGIApplication

import uvicorn

ROOT = pathlib.Path(__file__).resolve().parents[2]


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_wsgi(app: WSGIApplication) -> Iterator[str]:
    """Serve `app`; yields its base URL (`http://127.0.0.1:PORT`)."""
    server = wsgiref.simple_server.make_server(
        "127.0.0.1", 0, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def serve_asgi(app: Any, lifespan: str = "off") -> Iterator[str]:
    """Serve `app` with uvicorn; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan=lifespan, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def fetch(
    url: str, headers: Mapping[str, str] | None = None, method: str = "GET"
) -> tuple[int, bytes]:
    """Request `url`; returns the status and body, for error statuses too."""
    request = urllib.request.Request(url, headers=dict(headers or {}), method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def gunicorn(
    app: str, sock: socket.socket, env: Mapping[str, str], *options: str
) -> subprocess.Popen[str]:
    """A real gunicorn serving `app` (`module:callable`) on `sock`, from the repository root,
    with the environment minus `TRACKLINE_*` plus `env`; `options` go before the app."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TRACKLINE_")}
    environment.update(env)
    command = [sys.executable, "-m", "gunicorn", f"--bind=fd://{sock.fileno()}"]
    command += ["--graceful-timeout=10", "--log-level=warning", *options, app]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment,
        pass_fds=[sock.fileno()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
