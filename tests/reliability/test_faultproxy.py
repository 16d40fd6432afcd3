"""The fault proxy itself: each toxic does what the reliability tests rely on it to do."""

from __future__ import annotations

import http.client
import time

import pytest

from tests.support.capture import CaptureServer
from tests.support.faultproxy import (
    Bandwidth,
    BlackHole,
    Direction,
    DropResponse,
    FaultProxy,
    Latency,
    ResetPeer,
)


@pytest.fixture
def proxy(capture_proxy: FaultProxy) -> FaultProxy:
    """Here the proxy fronts the capture server, which shows what arrived byte for byte."""
    return capture_proxy


def post(proxy: FaultProxy, body: bytes = b'{"batch":[]}', timeout: float = 2.0) -> int:
    """One POST through the proxy on a fresh connection; returns the status."""
    port = int(proxy.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/v1/batch", body, {"Content-Type": "application/json"})
        return connection.getresponse().status
    finally:
        connection.close()


def test_without_toxics_requests_and_answers_pass_unchanged(
    proxy: FaultProxy, capture: CaptureServer
) -> None:
    """A clean proxy forwards the request byte for byte and returns the answer."""
    body = b'{"batch":[{"x":1}]}'
    assert post(proxy, body) == 200
    [request] = capture.requests
    assert request.body == body
    assert proxy.exchanges == 1


def test_keep_alive_connection_carries_several_exchanges(proxy: FaultProxy) -> None:
    """Each request-answer turn on one connection is one exchange."""
    port = int(proxy.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    for _ in range(3):
        connection.request("POST", "/v1/batch", b"{}")
        assert connection.getresponse().read() == b'{"success":true}'
    connection.close()
    assert (proxy.connections, proxy.exchanges) == (1, 3)


def test_down_refuses_connections_and_up_listens_on_the_same_port(proxy: FaultProxy) -> None:
    """down() looks like a stopped server (ECONNREFUSED); up() restores the same address."""
    url = proxy.url
    proxy.down()
    with pytest.raises(ConnectionRefusedError):
        post(proxy)
    proxy.up()
    assert proxy.url == url
    assert post(proxy) == 200


def test_down_resets_open_connections(proxy: FaultProxy) -> None:
    """A connection open when the proxy goes down is cut, like a server that died."""
    port = int(proxy.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    connection.request("POST", "/v1/batch", b"{}")
    connection.getresponse().read()
    proxy.down()

    def again() -> None:
        connection.request("POST", "/v1/batch", b"{}")
        connection.getresponse()

    with pytest.raises((ConnectionError, http.client.HTTPException)):
        again()
    connection.close()
    proxy.up()


def test_reset_peer_cuts_the_request_before_the_server_has_it(
    proxy: FaultProxy, capture: CaptureServer
) -> None:
    """ResetPeer forwards a few bytes, then resets: the client errors, the server stores nothing."""
    toxic = proxy.add(ResetPeer(after_bytes=20, times=1))
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        post(proxy, b'{"batch":[' + b" " * 10_000 + b"]}")
    assert toxic.fired == 1
    assert capture.requests == []
    assert post(proxy) == 200


def test_black_hole_accepts_and_never_answers(proxy: FaultProxy, capture: CaptureServer) -> None:
    """BlackHole swallows the request: the client times out, the server never sees it."""
    proxy.add(BlackHole())
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        post(proxy, timeout=0.3)
    assert 0.25 < time.monotonic() - started < 1.0
    assert capture.requests == []


def test_drop_response_lets_the_server_commit_and_loses_the_answer(
    proxy: FaultProxy, capture: CaptureServer
) -> None:
    """DropResponse: the server answered 200 to the whole request; the client sees a reset."""
    toxic = proxy.add(DropResponse(times=1))
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        post(proxy, b'{"batch":[1]}')
    [request] = capture.requests
    assert (request.status, request.body) == (200, b'{"batch":[1]}')
    assert toxic.fired == 1
    assert post(proxy) == 200


def test_latency_delays_the_answer(proxy: FaultProxy) -> None:
    """Latency(0.3) on the answer makes the round trip take at least 0.3 s."""
    proxy.add(Latency(seconds=0.3, direction=Direction.DOWNSTREAM))
    started = time.monotonic()
    assert post(proxy) == 200
    assert time.monotonic() - started >= 0.3


def test_bandwidth_trickles_the_request(proxy: FaultProxy, capture: CaptureServer) -> None:
    """Bandwidth(40 KB/s) makes a 20 KB request take about half a second, and it arrives whole."""
    proxy.add(Bandwidth(bytes_per_second=40_000, direction=Direction.UPSTREAM))
    body = b'{"pad":"' + b"x" * 20_000 + b'"}'
    started = time.monotonic()
    assert post(proxy, body, timeout=5) == 200
    assert time.monotonic() - started >= 0.45
    assert capture.requests[0].body == body


def test_times_and_toxicity_bound_how_often_a_toxic_acts(proxy: FaultProxy) -> None:
    """times=2 acts on two exchanges only; toxicity=0 never acts."""
    never = proxy.add(ResetPeer(toxicity=0.0))
    twice = proxy.add(DropResponse(times=2))
    outcomes = []
    for _ in range(4):
        try:
            outcomes.append(post(proxy))
        except (ConnectionError, http.client.HTTPException):
            outcomes.append(None)
    assert outcomes == [None, None, 200, 200]
    assert (never.fired, twice.fired) == (0, 2)
