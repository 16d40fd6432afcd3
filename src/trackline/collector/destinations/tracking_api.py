"""The `tracking-api` kind: forward events to Segment, or to any Tracking API (another trackline
collector, RudderStack, Jitsu), through trackline's own client engine.

The engine (`trackline.Client`: batches under the wire limits, gzip, 413 splits, short-term
retries with Retry-After, exact accounting) takes each stored message as it is, through
`Client.forward`: `messageId`, `timestamp`, `context`, `integrations` and every other field go
unchanged. Only the fields a hop sets for itself are left out: `receivedAt` (the receiver sets
its own) and `sentAt`. A receiver corrects clock skew as `receivedAt - (sentAt - timestamp)`:
the message's own `sentAt` would shift `timestamp` by the time the event spent queued here, and
the batch's fresh one by the hop's network time. Without any `sentAt` the receiver keeps
`timestamp` exactly as it was corrected here, once, against the original sender's clock.

The engine's own retries cover a blip; anything longer comes back as a retry result, and the
router's policy (backoff, retry window, waiting out an outage) takes over.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Final

import orjson

from trackline.buffer import fitting
from trackline.client import Client
from trackline.collector.destinations.config import TrackingApiSettings
from trackline.collector.destinations.sender import DELIVERED, HELD, Result, Verdict, retrying
from trackline.collector.store import Job
from trackline.errors import DeliveryError
from trackline.stats import DropReason
from trackline.transport import RelayTransport
from trackline.wire import BATCH_ROOM, HOP_FIELDS, MAX_BATCH_MESSAGES

#: Drop reasons that mean the receiver refused the message for good.
_REFUSED: Final = frozenset({DropReason.REJECTED, DropReason.UNAUTHORIZED, DropReason.TOO_LARGE})


def forwarded(body: str) -> bytes:
    """The stored message as it is forwarded (see the module docstring)."""
    message = orjson.loads(body)
    for field in HOP_FIELDS:
        message.pop(field, None)
    return orjson.dumps(message)


def requests(bodies: Sequence[bytes]) -> Iterator[tuple[int, int]]:
    """`(start, end)` of each run of `bodies` that makes one request: the most messages, in
    order, that the client's engine puts in one batch (at least one)."""
    start = 0
    while start < len(bodies):
        ahead = bodies[start : start + MAX_BATCH_MESSAGES]
        end = start + fitting(ahead, MAX_BATCH_MESSAGES, BATCH_ROOM)
        yield start, end
        start = end


#: Requests a sender has in flight at once, each from its own lane: a lane takes the jobs of
#: some users (by `order_key`) and sends them one request at a time, so each user's events
#: keep their order while other users' go alongside. Against a Tracking API 50 ms away, one
#: lane forwarded about 10,000 events/s (a 500 KB request per round trip).
LANES: Final = 4


class TrackingApiSender:
    """Forwards a send's jobs through `LANES` lanes at once, each user's jobs all in one lane,
    and gathers every job's result."""

    def __init__(self, settings: TrackingApiSettings, *, timeout: float, batch_size: int) -> None:
        self._lanes = [_Lane(settings, timeout, batch_size) for _ in range(LANES)]
        self._pool = concurrent.futures.ThreadPoolExecutor(
            LANES, thread_name_prefix="trackline-forward"
        )

    def send(self, jobs: Sequence[Job]) -> list[Result]:
        shares: list[list[int]] = [[] for _ in self._lanes]
        for index, job in enumerate(jobs):
            shares[job.order_key % LANES].append(index)
        running = [
            (share, self._pool.submit(lane.send, [jobs[index] for index in share]))
            for lane, share in zip(self._lanes, shares, strict=True)
            if share
        ]
        results = [HELD] * len(jobs)
        for share, future in running:
            for index, result in zip(share, future.result(), strict=True):
                results[index] = result
        return results

    def ready(self) -> bool:
        return True

    def idle(self) -> None:
        pass

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for lane in self._lanes:
            lane.close()


class _Lane:
    """Forwards through one `Client`: its `on_error` callback names each message dropped,
    and once `flush()` says all of them are settled, every other one was delivered (so no
    `on_success`, which would decode every delivered message).

    A send goes one request at a time, in the order of the jobs, each flushed and settled
    before the next is queued: a request retried or split after a 413 holds back the ones
    behind it, and once one is to be retried the rest of the send is `HELD` (back to the
    queue unsent), so a user's events arrive in the order they were stored. A client with
    several workers let a later request overtake one being retried.
    """

    def __init__(self, settings: TrackingApiSettings, timeout: float, batch_size: int) -> None:
        delivery_timeout = max(30.0, 3 * timeout)
        self._wait = delivery_timeout + timeout + 5.0
        self._lock = threading.Lock()
        self._outcomes: dict[str, Result] = {}
        workers = 1
        self._client = Client(
            settings.write_key,
            host=settings.host,
            transport=RelayTransport(
                settings.host,
                settings.write_key,
                timeout=timeout,
                gzip=settings.gzip,
                connections=workers,
            ),
            timeout=timeout,
            max_queue_size=max(10_000, 2 * batch_size),
            max_queue_bytes=256 * 1024 * 1024,
            workers=workers,
            # The worker takes a batch only when `send` flushes one request's worth.
            flush_at=MAX_BATCH_MESSAGES,
            flush_interval=24 * 3600.0,
            max_retries=3,
            delivery_timeout=delivery_timeout,
            backoff_base=0.5,
            backoff_cap=5.0,
            on_error=self._dropped,
            shutdown_timeout=1.0,
        )

    def _dropped(self, error: DeliveryError, messages: list[dict[str, Any]]) -> None:
        if error.reason in _REFUSED:
            result = Result(Verdict.FAILED, str(error))
        else:
            result = Result(Verdict.RETRY, str(error), answered=error.status is not None)
        with self._lock:
            for message in messages:
                self._outcomes[message["messageId"]] = result

    def send(self, jobs: Sequence[Job]) -> list[Result]:
        bodies = [forwarded(job.body) for job in jobs]
        results: list[Result] = []
        for start, end in requests(bodies):
            for body in bodies[start:end]:
                self._client.forward(body)
            part = self._settled(jobs[start:end])
            results += part
            if retrying(part):
                return results + [HELD] * (len(jobs) - end)
        return results

    def _settled(self, jobs: Sequence[Job]) -> list[Result]:
        """The results of `jobs` once the client has settled them (or the wait ran out)."""
        finished = self._client.flush(self._wait)
        with self._lock:
            outcomes, self._outcomes = self._outcomes, {}
        # Not reported dropped: delivered if the flush finished, else not known yet.
        otherwise = (
            DELIVERED
            if finished
            else Result(Verdict.RETRY, "no answer within the delivery deadline", answered=False)
        )
        return [outcomes.get(job.message_id, otherwise) for job in jobs]

    def close(self) -> None:
        self._client.shutdown(timeout=1.0)
