"""Fixtures for the integration tests: a client delivering to the capture server, and the
default client pointed there and shut down afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import trackline
from tests.support.capture import CaptureServer


@pytest.fixture
def client(
    capture: CaptureServer, make_client: Callable[..., trackline.Client]
) -> trackline.Client:
    """A client delivering to the capture server."""
    return make_client("k", host=capture.url)


@pytest.fixture
def default_client_cleanup() -> Iterator[None]:
    """Shut the default client down after a test that configured it through an integration."""
    yield
    trackline.shutdown(timeout=2.0)
