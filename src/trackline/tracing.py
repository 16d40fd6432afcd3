"""Optional OpenTelemetry ids in every call's context, so that events and traces join up.

With `Client(trace_ids=True)`, a call made while an OpenTelemetry span is active adds the span's
ids to the message's context, as W3C Trace Context writes them (lowercase hex):
`"context": {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7"}`.
The request's scope context and the call's own `context` win over them, key by key.

`opentelemetry-api` is needed only then (`pip install 'trackline[opentelemetry]'`); it is
imported when a client turns the option on, never by `import trackline`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from trackline.context import current
from trackline.errors import ConfigError

Scope = Callable[[], Mapping[str, Any] | None]


def scope_with_trace_ids() -> Scope:
    """What a client reads as the scope of each call: the scope context with the active
    span's ids under it. Raises `ConfigError` when opentelemetry-api is not installed."""
    try:
        from opentelemetry import trace
    except ImportError:
        raise ConfigError(
            "trace_ids", "needs opentelemetry-api: pip install 'trackline[opentelemetry]'"
        ) from None
    get_current_span = trace.get_current_span

    def scope() -> Mapping[str, Any] | None:
        base = current()
        span = get_current_span().get_span_context()
        if not span.is_valid:
            return base
        ids = {"traceId": format(span.trace_id, "032x"), "spanId": format(span.span_id, "016x")}
        return {**ids, **base} if base else ids

    return scope
