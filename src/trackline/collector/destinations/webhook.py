"""The `webhook` kind: POST each event (`batch_size = 1`, a JSON object) or each batch (a JSON
array of up to `batch_size` events) to a URL.

Headers: `Content-Type: application/json`, the configured `headers`, `Idempotency-Key` with
the event's messageId for a single event (in a batch, each event's own `messageId` is its key),
and `X-Signature: sha256=<hex HMAC-SHA256 of the exact body>` when a `secret` is set, so the
receiver can check the body came from us. TLS certificates are verified; redirects are not
followed (a webhook that moved is a configuration error, and a redirect could leak the body).
A 413 splits a batch in halves, sent in order: when the first half is to be retried, the
second is held back unsent, so no event overtakes an earlier one; a single event answered 413
fails.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from typing import Final

import urllib3

from trackline.collector.destinations.config import WebhookSettings
from trackline.collector.destinations.sender import (
    HELD,
    Result,
    Verdict,
    describe_http_error,
    http_result,
    retrying,
    unanswered,
)
from trackline.collector.store import Job
from trackline.transport import MAX_RESPONSE_BYTES, USER_AGENT

_TOO_LARGE: Final = 413


class WebhookSender:
    """Posts to one webhook over a keep-alive connection of its own."""

    def __init__(self, settings: WebhookSettings, *, timeout: float, batch_size: int) -> None:
        self._url = settings.url
        self._secret = None if settings.secret is None else settings.secret.encode()
        self._batch = batch_size > 1
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **settings.headers,
        }
        self._pool = urllib3.PoolManager(
            maxsize=1, retries=False, timeout=urllib3.Timeout(connect=timeout, read=timeout)
        )

    def send(self, jobs: Sequence[Job]) -> list[Result]:
        result = self._post(jobs)
        if result is None:  # too large
            if len(jobs) > 1:
                # The halves go in order, the second only once the first is settled.
                middle = len(jobs) // 2
                first = self.send(jobs[:middle])
                if retrying(first):
                    return first + [HELD] * (len(jobs) - middle)
                return first + self.send(jobs[middle:])
            result = Result(Verdict.FAILED, f"HTTP {_TOO_LARGE}: the event alone is too large")
        return [result] * len(jobs)

    def _post(self, jobs: Sequence[Job]) -> Result | None:
        """The answer to one POST of `jobs`; None when it was 413 (too large)."""
        headers = dict(self._headers)
        if self._batch:
            body = ("[" + ",".join(job.body for job in jobs) + "]").encode()
        else:
            (job,) = jobs
            body = job.body.encode()
            headers["Idempotency-Key"] = job.message_id
        if self._secret is not None:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers["X-Signature"] = f"sha256={digest}"
        try:
            answer = self._pool.request(
                "POST",
                self._url,
                body=body,
                headers=headers,
                preload_content=False,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            return unanswered(describe_http_error(exc))
        try:
            content = answer.read(MAX_RESPONSE_BYTES)
        except urllib3.exceptions.HTTPError:
            content = b""
        if len(content) >= MAX_RESPONSE_BYTES:
            answer.close()
        answer.release_conn()
        if answer.status == _TOO_LARGE:
            return None
        return http_result(
            answer.status, content, answer.headers.get("Retry-After"), now=time.time()
        )

    def ready(self) -> bool:
        return True

    def idle(self) -> None:
        pass

    def close(self) -> None:
        self._pool.clear()
