"""The pytest plugin trackline installs (entry point `pytest11`): the `trackline_capture` fixture.

```python
def test_checkout(trackline_capture):
    checkout(cart)                                   # calls trackline.track(...) somewhere
    trackline_capture.assert_tracked("Order Completed", user_id="019mr8mf4r")
```

The fixture is only active in tests that ask for it; nothing is patched otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trackline.testing import Capture


@pytest.fixture
def trackline_capture() -> Iterator[Capture]:
    """Record every message sent during the test instead of sending it (see `Capture`).

    The default client (`trackline.track(...)`) and every `Client` created during the test
    deliver into the capture; the previous default client is restored afterwards.
    """
    capture = Capture()
    with capture.installed():
        yield capture
