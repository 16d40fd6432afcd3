"""`flushing`: flush when a handler returns, for processes that are frozen or reused instead of
exiting (AWS Lambda, Cloud Run, Celery and other task workers).

Between invocations such a process is frozen, or it goes on running other work; the exit that
flushes a client (`atexit`) may come days later, or never (a SIGKILL). Events tracked during an
invocation would wait in the queue meanwhile. `flushing` sends them before the handler's
return reaches the platform:

```python
@trackline.flushing(timeout=2.0)
def handler(event, context): ...
```

It is a decorator (of functions and of coroutine functions) and a context manager (`with`,
`async with`). Given no client, it flushes every live client, the default one included, all
within one `timeout`; an exception from the handler is raised after the flush.
"""

from __future__ import annotations

import functools
import inspect
import logging
import types
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from trackline.client import Client, flush_clients, live_clients

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


class flushing:
    """Flush `clients` (every live client when none is given) when the block or the
    decorated handler ends, within `timeout` seconds in all."""

    def __init__(self, *clients: Client, timeout: float = 5.0) -> None:
        self._clients = clients
        self._timeout = timeout

    def flush(self) -> bool:
        """Flush now; True when everything queued was delivered or dropped in time."""
        clients = list(self._clients) or live_clients()
        done = flush_clients(clients, self._timeout)
        if not done:
            logger.warning(
                "flushing: %d client(s) still had messages queued after %gs; they are sent "
                "by the next flush, or at exit",
                len(clients),
                self._timeout,
            )
        return done

    async def flush_async(self) -> bool:
        """`flush()` awaited without blocking the event loop."""
        import asyncio

        return await asyncio.to_thread(self.flush)

    def __enter__(self) -> flushing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.flush()

    async def __aenter__(self) -> flushing:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        await self.flush_async()

    def __call__(self, handler: Callable[P, R]) -> Callable[P, R]:
        """Decorate `handler` (a function or a coroutine function)."""
        if inspect.iscoroutinefunction(handler):
            coroutine = cast(Callable[P, Awaitable[Any]], handler)

            @functools.wraps(handler)
            async def wrapped_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with self:
                    return await coroutine(*args, **kwargs)

            return cast(Callable[P, R], wrapped_async)

        @functools.wraps(handler)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
            with self:
                return handler(*args, **kwargs)

        return wrapped
