"""`trackline.testing.Capture`: recording, queries, assertions and `installed()`."""

from __future__ import annotations

import threading

import pytest

import trackline
from trackline.testing import Capture


def test_a_capturing_client_records_each_call_when_it_returns() -> None:
    """The default capturing client is synchronous: no flush is needed before reading."""
    capture = Capture()
    client = capture.client()
    client.track("019mr8mf4r", "Item Purchased", {"revenue": 39.95})
    client.identify("019mr8mf4r", {"name": "Tom"})
    assert [m["type"] for m in capture.messages] == ["track", "identify"]
    assert capture.messages[0]["properties"] == {"revenue": 39.95}
    client.shutdown()


def test_an_asynchronous_capturing_client_records_after_its_flush() -> None:
    """With sync=False the messages go through the buffer and the worker like in production."""
    capture = Capture()
    client = capture.client(sync=False, flush_at=10)
    for n in range(25):
        client.track("u", "Tick", {"n": n})
    assert client.flush(timeout=5.0)
    assert [m["properties"]["n"] for m in capture.messages] == list(range(25))
    client.shutdown()


def test_capture_is_thread_safe_under_concurrent_workers() -> None:
    """Four workers and four calling threads lose no message and record none twice."""
    capture = Capture()
    client = capture.client(sync=False, workers=4, flush_at=7)

    def produce(thread: int) -> None:
        for n in range(250):
            client.track(f"user-{thread}", "Tick", {"n": n})

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.flush(timeout=5.0)
    ids = [m["messageId"] for m in capture.messages]
    assert len(ids) == len(set(ids)) == 1000
    client.shutdown()


def test_find_matches_argument_names_and_subsets_of_mappings() -> None:
    """`find` takes call argument names (user_id) and matches properties by subset."""
    capture = Capture()
    client = capture.client()
    client.track("a", "Bought", {"sku": "x", "price": 3})
    client.track("b", "Bought", {"sku": "y"})
    client.group("a", "initech", {"plan": "pro"})
    assert len(capture.find("track", properties={"sku": "x"})) == 1
    assert len(capture.find(user_id="a")) == 2
    assert capture.find("group", group_id="initech", traits={"plan": "pro"})[0]["userId"] == "a"
    assert capture.tracked("Bought", user_id="b")[0]["properties"] == {"sku": "y"}
    assert capture.find("track", properties={"missing": 1}) == []


def test_assert_tracked_returns_the_matching_message() -> None:
    """A successful assertion hands back the last matching message for further checks."""
    capture = Capture()
    capture.client().track("019mr8mf4r", "Signed Up", {"plan": "free"})
    message = capture.assert_tracked("Signed Up", user_id="019mr8mf4r", properties={"plan": "free"})
    assert message["event"] == "Signed Up"


def test_assert_tracked_fails_with_a_listing_of_what_was_recorded() -> None:
    """The failure message lists the recorded messages so the mismatch is visible at once."""
    capture = Capture()
    capture.client().track("019mr8mf4r", "Signed Up", {"plan": "free"})
    with pytest.raises(AssertionError) as failure:
        capture.assert_tracked("Signed Up", user_id="someone-else")
    text = str(failure.value)
    assert "user_id='someone-else'" in text
    assert "track 'Signed Up' for 019mr8mf4r {'plan': 'free'}" in text


def test_assert_tracked_counts_times() -> None:
    """`times=` asserts an exact number of matches; `assert_not_tracked` asserts zero."""
    capture = Capture()
    client = capture.client()
    client.track("u", "Clicked")
    client.track("u", "Clicked")
    capture.assert_tracked("Clicked", times=2)
    with pytest.raises(AssertionError, match="1 time"):
        capture.assert_tracked("Clicked", times=1)
    capture.assert_not_tracked("Purchased")
    with pytest.raises(AssertionError):
        capture.assert_not_tracked("Clicked")


def test_assert_identified_sent_and_nothing_sent() -> None:
    """The other assertions cover identify, the remaining types, and silence."""
    capture = Capture()
    capture.assert_nothing_sent()
    client = capture.client()
    client.identify("u", {"email": "u@example.com", "plan": "pro"})
    client.page("u", "Login", category="Auth")
    client.alias("anon-1", "u")
    capture.assert_identified("u", traits={"plan": "pro"})
    capture.assert_sent("page", name="Login", category="Auth")
    capture.assert_sent("alias", previous_id="anon-1", user_id="u")
    with pytest.raises(AssertionError, match="expected no messages, got 3"):
        capture.assert_nothing_sent()
    capture.clear()
    capture.assert_nothing_sent()


def test_wait_for_returns_when_enough_messages_arrived_or_time_ran_out() -> None:
    """`wait_for` waits for a background delivery, and gives up after its timeout."""
    capture = Capture()
    client = capture.client(sync=False, flush_interval=0.05)
    client.track("u", "Later")
    assert len(capture.wait_for(1, timeout=5.0)) == 1
    assert len(capture.wait_for(2, timeout=0.05)) == 1
    client.shutdown()


def test_installed_routes_the_default_client_and_new_clients_then_restores() -> None:
    """Inside `installed()`, module-level calls and clients made by the code under test record
    into the capture; afterwards the previous default client is back."""
    before = trackline.init("real-key", host="http://127.0.0.1:9", send=False)
    capture = Capture()
    with capture.installed():
        trackline.track("u", "From The Default Client")
        app_client = trackline.Client("app-key", host="http://127.0.0.1:9", sync=True)
        app_client.identify("u", {"name": "Tom"})
        capture.assert_tracked("From The Default Client", user_id="u")
        capture.assert_identified("u", traits={"name": "Tom"})
    assert trackline.get_client() is before
    trackline.shutdown()


def test_installed_captures_the_compat_default_client_and_puts_it_back() -> None:
    """Code written for segment's module API records into the capture inside `installed()`;
    the compat module's own default client is back afterwards."""
    import trackline.compat.segment as analytics

    analytics.write_key = "segment-key"
    before = analytics.swap_default_client(None)
    try:
        capture = Capture()
        with capture.installed():
            analytics.track("u", "From Segment Code")
            analytics.flush()
            capture.assert_tracked("From Segment Code", user_id="u")
            inside = analytics.default_client
        assert analytics.default_client is None
        assert inside is not None
    finally:
        analytics.write_key = None
        analytics.swap_default_client(before)
