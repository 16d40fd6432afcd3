"""Optional OpenTelemetry ids: with `trace_ids=True`, a call inside an active span carries its
trace and span ids in `context`; nothing otherwise."""

from __future__ import annotations

import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import Tracer, TracerProvider

import trackline
from tests.support import docs_examples
from tests.support.capture import CaptureServer
from trackline.testing import Capture


@pytest.fixture(scope="module")
def tracer() -> Tracer:
    return TracerProvider().get_tracer("tests")


def test_a_call_inside_a_span_carries_its_ids(tracer: Tracer) -> None:
    """The message's context has the span's trace and span ids in W3C hex form."""
    capture = Capture()
    client = capture.client(trace_ids=True)
    with tracer.start_as_current_span("work") as span:
        client.track("u", "Traced")
    ids = span.get_span_context()
    [message] = capture.messages
    assert message["context"]["traceId"] == format(ids.trace_id, "032x")
    assert message["context"]["spanId"] == format(ids.span_id, "016x")
    assert len(message["context"]["traceId"]) == 32


def test_outside_a_span_and_when_off_nothing_is_added(tracer: Tracer) -> None:
    """No active span, or the option off (the default), adds no ids."""
    capture = Capture()
    on = capture.client(trace_ids=True)
    off = capture.client()
    on.track("u", "No Span")
    with tracer.start_as_current_span("work"):
        off.track("u", "Option Off")
    for message in capture.messages:
        assert "traceId" not in message["context"], message


def test_the_calls_own_context_and_the_scope_win(tracer: Tracer) -> None:
    """A `traceId` from the request's scope or the call's own context is kept."""
    capture = Capture()
    client = capture.client(trace_ids=True)
    with tracer.start_as_current_span("work"), trackline.context(ip="1.2.3.4"):
        client.track("u", "Own", context={"traceId": "mine"})
    [message] = capture.messages
    assert message["context"]["traceId"] == "mine"
    assert message["context"]["ip"] == "1.2.3.4"
    assert "spanId" in message["context"]


def test_without_opentelemetry_the_option_is_refused_and_import_needs_nothing() -> None:
    """`import trackline` never imports opentelemetry; turning the option on without it
    installed raises `ConfigError` naming `trace_ids`."""
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "import trackline\n"
        "assert 'opentelemetry' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
        "try:\n"
        "    trackline.Client('k', trace_ids=True, send=False)\n"
        "except trackline.ConfigError as error:\n"
        "    print(error.option)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "trace_ids"


def test_the_docs_example_runs_as_written(capture: CaptureServer) -> None:
    """The OpenTelemetry example of the docs' Sending events page sends its event with the
    ids."""
    block = docs_examples.python_block("guides/sending-events.md", "trace_ids=True", capture.url)
    done = docs_examples.run_script(block)
    assert done.returncode == 0, done.stderr
    [event] = capture.delivered()
    assert len(event["context"]["traceId"]) == 32
    assert len(event["context"]["spanId"]) == 16
