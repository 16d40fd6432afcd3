"""A `trackline collector` in a process of its own, to kill with SIGKILL and start again on the
same port and database, and the peak memory of such a process while it works."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import urllib3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CollectorProcess:
    """`start()` it, `kill()` it (SIGKILL), `start()` it again; `stop()` ends it gracefully."""

    def __init__(self, db: Path, config: Path | None = None, port: int | None = None) -> None:
        self.db = db
        self.config = config
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = db.with_suffix(".log")

    def start(self, timeout: float = 30.0) -> None:
        command = [
            sys.executable,
            "-m",
            "trackline",
            "collector",
            "--port",
            str(self.port),
            "--db",
            str(self.db),
            "--log-level",
            "WARNING",
        ]
        if self.config is not None:
            command += ["--config", str(self.config)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        pool = urllib3.PoolManager(retries=False, timeout=1.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"collector exited: {self.log.read_text()[-2000:]}")
            try:
                if pool.request("GET", self.url + "/healthz").status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("collector did not start in time")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


_PEAK = re.compile(rb"VmHWM:\s+(\d+) kB")


class PeakMemory:
    """How much a process's peak resident memory grows from now on: the peak (VmHWM) is reset
    when made, through /proc's clear_refs, and compared with the memory resident then."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        self.start = int(psutil.Process(pid).memory_info().rss)

    def growth(self) -> int:
        match = _PEAK.search(Path(f"/proc/{self.pid}/status").read_bytes())
        assert match is not None
        return int(match.group(1)) * 1024 - self.start
