"""A collector bound to a network address, asked by a peer that is not on loopback.

The peer is real: a network namespace joined to this one by a veth pair the test creates
(10.x.y.1 here, 10.x.y.2 there), so its packets arrive on a non-loopback interface of this
machine and never leave it. Creating them needs root (`ip netns add`); without it the test
fails and says so, rather than passing untested.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.collector.conftest import Http, basic, message

ROOT = Path(__file__).resolve().parents[2]
WRITE_KEY = "network-write-key-8d41c2"
TOKEN = "network-read-token-5e9a77c0"


@dataclasses.dataclass(frozen=True)
class Lan:
    """A namespace and the two ends of the link to it."""

    namespace: str
    here: str
    there: str

    def run(self, script: str) -> Any:
        """Run a Python `script` inside the namespace; its printed JSON."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        done = subprocess.run(
            ["ip", "netns", "exec", self.namespace, sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.fail(
            f"cannot set up the test network (`ip {' '.join(args)}`: {done.stderr.strip()}); "
            "this test needs root and network namespaces (ip netns add)"
        )


@pytest.fixture
def lan() -> Iterator[Lan]:
    """A fresh namespace with a veth pair, removed afterwards (removing the namespace removes
    the pair)."""
    if os.geteuid() != 0:
        pytest.fail("this test creates a network namespace and a veth pair: run it as root")
    tag = secrets.token_hex(4)
    namespace, here, there = f"tl-{tag}", f"tlh{tag}", f"tlp{tag}"
    subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}"
    _ip("netns", "add", namespace)
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", namespace)
        _ip("addr", "add", f"{subnet}.1/30", "dev", here)
        _ip("link", "set", here, "up")
        _ip("-n", namespace, "addr", "add", f"{subnet}.2/30", "dev", there)
        _ip("-n", namespace, "link", "set", there, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        yield Lan(namespace, f"{subnet}.1", f"{subnet}.2")
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", here], capture_output=True, timeout=30)


class Collector:
    """`trackline collector` in a subprocess, its secrets from the environment."""

    def __init__(self, db: Path, *args: str, **env: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trackline", "collector", "--db", str(db), "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **env},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert "listening on" in line, self.proc.stderr.read() if self.proc.stderr else line
        self.port = int(line.split()[4].rsplit(":", 1)[1].rstrip(")"))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=15)


REMOTE_SCRIPT = """
import json, urllib3
pool = urllib3.PoolManager(retries=False, timeout=10.0)
url, auth, token = {url!r}, {auth!r}, {token!r}
def ask(method, path, body=None, **headers):
    answer = pool.request(method, url + path, body=body, headers=headers)
    return answer.status
batch = json.dumps({{"batch": [{message}]}}).encode()
print(json.dumps({{
    "ingest": ask("POST", "/v1/batch", batch, Authorization=auth),
    "ingest_wrong_key": ask("POST", "/v1/batch", batch, Authorization="Basic d3Jvbmc6"),
    "events": ask("GET", "/api/events?meta=1"),
    "stats": ask("GET", "/api/stats"),
    "stream": ask("GET", "/api/stream"),
    "page": ask("GET", "/"),
    "events_claiming_loopback": ask("GET", "/api/events", **{{"X-Forwarded-For": "127.0.0.1"}}),
    "delete_claiming_loopback": ask("DELETE", "/api/events", **{{"X-Forwarded-For": "127.0.0.1"}}),
    "events_with_token": ask("GET", "/api/events", Authorization="Bearer " + token),
    "delete_with_token": ask("DELETE", "/api/events", Authorization="Bearer " + token),
    "rebinding_name": ask("GET", "/api/stats", Host="evil.example"),
}}))
"""


def remote(lan: Lan, collector: Collector, message_id: str) -> dict[str, int]:
    script = REMOTE_SCRIPT.format(
        url=f"http://{lan.here}:{collector.port}",
        auth=basic(WRITE_KEY),
        token=TOKEN,
        message=json.dumps(message(0, messageId=message_id)),
    )
    answers: dict[str, int] = lan.run(script)
    return answers


def test_network_bind_without_token_reads_only_from_this_machine(lan: Lan, tmp_path: Path) -> None:
    """Bound to 0.0.0.0 with a write key (from TRACKLINE_WRITE_KEYS) and no read token, under
    FORWARDED_ALLOW_IPS=*: the remote peer may write, but reading, the stream, the page and
    clearing are refused to it, even claiming to be 127.0.0.1 in X-Forwarded-For; a client on
    this machine reads what it wrote and may clear."""
    collector = Collector(
        tmp_path / "events.sqlite3",
        "--host",
        "0.0.0.0",
        TRACKLINE_WRITE_KEYS=WRITE_KEY,
        FORWARDED_ALLOW_IPS="*",
    )
    try:
        answers = remote(lan, collector, "from-the-network")
        local = Http(f"http://127.0.0.1:{collector.port}")
        stored = [e["messageId"] for e in local.events()]
        cleared = local.request("DELETE", "/api/events").json
    finally:
        collector.stop()
    assert answers == {
        "ingest": 200,
        "ingest_wrong_key": 401,
        "events": 403,
        "stats": 403,
        "stream": 403,
        "page": 403,
        "events_claiming_loopback": 403,
        "delete_claiming_loopback": 403,
        "events_with_token": 403,
        "delete_with_token": 403,
        "rebinding_name": 421,
    }
    assert stored == ["from-the-network"]
    assert cleared == {"deleted": 1}


def test_network_bind_with_token_reads_with_the_token(lan: Lan, tmp_path: Path) -> None:
    """With a read token (from TRACKLINE_READ_TOKEN), the remote peer reads when it shows
    the token and is asked for it (401) otherwise; clearing stays for this machine."""
    collector = Collector(
        tmp_path / "events.sqlite3",
        "--host",
        lan.here,
        "--write-key",
        WRITE_KEY,
        TRACKLINE_READ_TOKEN=TOKEN,
    )
    try:
        answers = remote(lan, collector, "read-with-token")
    finally:
        collector.stop()
    assert answers == {
        "ingest": 200,
        "ingest_wrong_key": 401,
        "events": 401,
        "stats": 401,
        "stream": 401,
        "page": 401,
        "events_claiming_loopback": 401,
        "delete_claiming_loopback": 401,
        "events_with_token": 200,
        "delete_with_token": 403,
        "rebinding_name": 421,
    }
