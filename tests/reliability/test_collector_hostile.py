"""The collector against hostile input over real sockets (reliability research, table B2):
generated bodies full of what breaks parsers and databases, gzip bombs, endless bodies and
oversized headers. Whatever arrives, the answer is a decision (2xx or 4xx), never a 5xx or a
crash; memory stays bounded; and nothing is stored that was not whole and accepted."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import select
import socket
import subprocess
import sys
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import urllib3
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support.ledger import CollectorStore
from trackline.collector import RunningCollector
from trackline.collector.ingest import MAX_REQUEST_BYTES

AUTH = "Basic " + base64.b64encode(b"hostile-key:").decode()

#: JSON texts (and near-JSON) that parsers, number types, text encodings and databases choke on.
HOSTILE_VALUES = st.one_of(
    st.integers(min_value=-(10**60), max_value=10**60).map(lambda n: str(n).encode()),
    st.integers(min_value=20, max_value=400).map(lambda digits: b"9" * digits),
    st.sampled_from(
        [
            b"1e400",
            b"-1e400",
            b"1e-400",
            b"-0",
            b"0.1e-999999",
            b"123456789012345678901234567890.5",
            b'"\\u0000"',
            b'"nul\\u0000inside"',
            b'"\\ud800"',
            b'"\\udfff tail"',
            b'"\\ud83d\\ude00"',
            b'"\\uffff\\ufffe"',
            b'"\xff\xfe"',
            b'"\xc3\x28"',
            b'"\xed\xa0\x80"',
            b'"raw\x00nul"',
            b'"tab\tinside"',
            b"NaN",
            b"Infinity",
            b"-Infinity",
            b"undefined",
            b"'single'",
            b"[1,]",
            b'{"a" 1}',
            b'{"a":1,"a":2}',
            b'"' + b"x" * 40_000 + b'"',
        ]
    ),
    st.integers(min_value=1, max_value=3000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(min_value=1, max_value=3000).map(
        lambda depth: b'{"a":' * depth + b"1" + b"}" * depth
    ),
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats(allow_nan=False)
        | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    ).map(orjson.dumps),
)
#: What uvicorn holds for a connection on top of the body the app reads: asyncio reads up to
#: 256 KiB at a time and the bytes are copied into h11's buffer and the request body.
SERVER_BUFFERS = 1024 * 1024
FIELDS = ("properties", "userId", "event", "type", "timestamp", "messageId", "context")


@dataclasses.dataclass(frozen=True)
class Sent:
    """One message of a generated batch: the id it was given, and which field (if any) got a
    hostile value instead of its clean one."""

    message_id: str
    hostile_field: str | None


@st.composite
def hostile_batches(draw: st.DrawFn) -> tuple[bytes, list[Sent]]:
    """A `/v1/batch` body written byte by byte: clean messages and hostile ones, sometimes with
    the envelope itself damaged."""
    sent: list[Sent] = []
    texts: list[bytes] = []
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        message_id = str(uuid.uuid4())
        fields = {
            "type": b'"track"',
            "userId": b'"user"',
            "event": b'"Hostile"',
            "messageId": orjson.dumps(message_id),
            "properties": b'{"clean":true}',
        }
        field = draw(st.one_of(st.none(), st.sampled_from(FIELDS)))
        if field is not None:
            value = draw(HOSTILE_VALUES)
            fields[field] = b'{"v":' + value + b"}" if field == "properties" else value
        texts.append(b"{" + b",".join(orjson.dumps(k) + b":" + v for k, v in fields.items()) + b"}")
        sent.append(Sent(message_id, field))
    body = b'{"batch":[' + b",".join(texts) + b'],"sentAt":"2026-11-28T15:00:00.000Z"}'
    damage = draw(st.sampled_from(["none"] * 6 + ["truncate", "bom", "garbage", "array"]))
    if damage == "truncate":
        body = body[: draw(st.integers(min_value=0, max_value=len(body) - 1))]
    elif damage == "bom":
        body = b"\xef\xbb\xbf" + body
    elif damage == "garbage":
        body += draw(st.binary(min_size=1, max_size=8))
    elif damage == "array":
        body = b"[" + body + b"]"
    return body, sent


@pytest.fixture
def pool() -> Iterator[urllib3.PoolManager]:
    manager = urllib3.PoolManager(retries=False, timeout=10.0)
    yield manager
    manager.clear()


def post(
    pool: urllib3.PoolManager, collector: RunningCollector, body: bytes, **headers: str
) -> urllib3.BaseHTTPResponse:
    return pool.request(
        "POST",
        collector.url + "/v1/batch",
        body=body,
        headers={"Authorization": AUTH, "Content-Type": "application/json", **headers},
    )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=hostile_batches())
def test_s1_s13_hostile_bodies_are_decided_and_only_whole_messages_stored(
    collector: RunningCollector,
    store: CollectorStore,
    pool: urllib3.PoolManager,
    case: tuple[bytes, list[Sent]],
) -> None:
    """Huge numbers, lone surrogates, NUL characters, invalid UTF-8, deep nesting, broken
    envelopes: the answer is 200 or 4xx, never 5xx. On 200 each message is either rejected by
    index or stored whole (its stored JSON decodes, with its own id); on 4xx nothing is."""
    body, sent = case
    answer = post(pool, collector, body)
    event(f"status {answer.status}")
    assert answer.status < 500, answer.data
    document = orjson.loads(answer.data)
    stored = store.bodies(message.message_id for message in sent)
    if answer.status != 200:
        assert set(document) == {"code", "message"}
        assert stored == {}
        return
    rejected = {entry["index"] for entry in document["rejected"]}
    assert document["accepted"] + document["duplicates"] + len(rejected) == len(sent)
    # Only a hostile messageId (a constant the generator repeats) can have been stored before.
    assert document["duplicates"] <= sum(m.hostile_field == "messageId" for m in sent)
    for index, message in enumerate(sent):
        if index in rejected or message.hostile_field == "messageId":
            assert message.message_id not in stored
            continue
        kept = orjson.loads(stored[message.message_id])
        assert kept["messageId"] == message.message_id
        if message.hostile_field is not None:
            event(f"stored with a hostile {message.hostile_field}")
        if message.hostile_field is None:
            assert (kept["type"], kept["userId"], kept["event"]) == ("track", "user", "Hostile")
            assert kept["properties"] == {"clean": True}


def test_s1_collector_is_healthy_after_hostile_input(
    collector: RunningCollector, pool: urllib3.PoolManager
) -> None:
    """After a burst of the worst bodies, the collector still stores a clean batch."""
    for value in (b"9" * 400, b'"\\ud800"', b"[" * 5000, b'"\xff"', b"1e400"):
        assert post(pool, collector, b'{"batch":[{"properties":' + value + b"}]}").status < 500
    clean = orjson.dumps(
        {"batch": [{"type": "track", "userId": "u", "event": "E", "messageId": "after"}]}
    )
    answer = post(pool, collector, clean)
    assert (answer.status, orjson.loads(answer.data)["accepted"]) == (200, 1)


@functools.cache
def gzip_bomb(inflated_mib: int) -> bytes:
    """A gzip body that inflates to `inflated_mib` MiB of zeros, made in milliseconds: after a
    full flush each MiB compresses to the same bytes, so they are repeated, not compressed."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * (1 << 20)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    return first + again * (inflated_mib - 1)


def traced_peak(action: Callable[[], object]) -> int:
    """Peak bytes this process allocated while `action` ran, above what it held before."""
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        action()
        return tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()


def post_from_another_process(url: str, body: bytes, tmp_path: Path, **headers: str) -> int:
    """POST `body` from a child process, so that what this process allocates meanwhile is the
    collector's alone; returns the status."""
    payload = tmp_path / "body.bin"
    payload.write_bytes(body)
    code = (
        "import sys, urllib3; "
        f"r = urllib3.request('POST', {url + '/v1/batch'!r}, body=open({str(payload)!r}, 'rb')"
        f".read(), headers={{'Authorization': {AUTH!r}, **{headers!r}}}, retries=False); "
        "print(r.status)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    return int(done.stdout)


def test_s4_gzip_bomb_is_cut_off_with_bounded_memory(
    collector: RunningCollector, store: CollectorStore, tmp_path: Path
) -> None:
    """Bodies of 50 KB and 400 KB inflating to 50 MiB and 400 MiB are refused with 413 once
    the inflated size passes the cap; what the collector allocates meanwhile is the cap plus the
    server's connection buffers, the same for both: it does not grow with the bomb."""
    peaks = []
    for inflated_mib in (50, 400):
        bomb = gzip_bomb(inflated_mib)
        assert len(bomb) < MAX_REQUEST_BYTES
        statuses: list[int] = []

        def send(bomb: bytes = bomb, statuses: list[int] = statuses) -> None:
            gzipped = {"Content-Encoding": "gzip"}
            statuses.append(post_from_another_process(collector.url, bomb, tmp_path, **gzipped))

        peaks.append(traced_peak(send))
        assert statuses == [413]
    assert max(peaks) < MAX_REQUEST_BYTES + SERVER_BUFFERS, peaks
    assert abs(peaks[1] - peaks[0]) < 256 * 1024, peaks
    assert store.stored_ids() == []


def test_s3_endless_chunked_body_is_refused_while_it_is_still_coming(
    collector: RunningCollector, store: CollectorStore
) -> None:
    """A chunked body with no length that never ends gets 413 once past the cap: the answer
    comes while the client is still sending, with memory bounded by the cap."""
    sock = socket.create_connection(("127.0.0.1", collector.port), timeout=5)
    head = (
        b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + AUTH.encode() + b"\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"%x\r\n%s\r\n" % (16_384, b" " * 16_384)
    outcome: dict[str, bytes | int] = {"sent": 0}

    def flood() -> None:
        sock.sendall(head + b'4\r\n{"ba\r\n')
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                outcome["answer"] = sock.recv(65536)
                return
            try:
                sock.sendall(piece)
            except OSError:
                outcome["answer"] = sock.recv(65536)
                return
            outcome["sent"] = int(outcome["sent"]) + len(piece)

    try:
        peak = traced_peak(flood)
    finally:
        sock.close()
    answer = outcome.get("answer", b"")
    assert isinstance(answer, bytes)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert peak < MAX_REQUEST_BYTES + SERVER_BUFFERS, peak
    assert store.stored_ids() == []


@pytest.mark.parametrize(
    "request_head",
    [
        b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 65_536 + b"\r\n\r\n",
        b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"".join(b"X-%d: v\r\n" % n for n in range(10_000))
        + b"\r\n",
        b"POST /v1/" + b"b" * 30_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    ],
    ids=["64 KB header", "10,000 headers", "30 KB request line"],
)
def test_s14_oversized_heads_are_decided_and_the_collector_stays_up(
    collector: RunningCollector, pool: urllib3.PoolManager, request_head: bytes
) -> None:
    """A 64 KB header, ten thousand headers or a 30 KB request line get a 4xx answer (the
    request is refused, not stored), and the next client is served as usual."""
    with socket.create_connection(("127.0.0.1", collector.port), timeout=5) as sock:
        # Refused before it was all sent, the answer is still there to read.
        with contextlib.suppress(OSError):
            sock.sendall(request_head)
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:200]
    clean = orjson.dumps({"batch": [{"type": "track", "userId": "u", "event": "E"}]})
    assert post(pool, collector, clean).status == 200
