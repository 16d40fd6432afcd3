"""The collector under faults (reliability research, table B2): storage taken by another
process, restarts under load, and answers that keep their latency; each settled by a ledger."""

from __future__ import annotations

import base64
import http.client
import statistics
import time

import orjson

from trackline.collector import RunningCollector


def test_keep_alive_requests_are_not_held_by_delayed_acks(collector: RunningCollector) -> None:
    """Twenty batches on one keep-alive connection are each answered well under the ~40 ms a
    Nagle and delayed-ACK stall adds to every answer written in two parts."""
    connection = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=5)
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Basic " + base64.b64encode(b"key:").decode(),
    }
    took = []
    for n in range(20):
        body = orjson.dumps(
            {"batch": [{"type": "track", "userId": "u", "event": "E", "messageId": f"m-{n}"}]}
        )
        started = time.perf_counter()
        connection.request("POST", "/v1/batch", body, headers)
        answer = connection.getresponse()
        answer.read()
        took.append(time.perf_counter() - started)
        assert answer.status == 200
    connection.close()
    assert statistics.median(took) < 0.02, [f"{t * 1e3:.1f}" for t in took]
