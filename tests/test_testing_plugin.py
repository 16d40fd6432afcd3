"""The pytest plugin: the `trackline_capture` fixture as a user's own test suite sees it."""

from __future__ import annotations

import textwrap

import pytest

from tests.support import docs_examples

pytest_plugins = ["pytester"]

APP = """
import trackline

def checkout(user_id, total):
    trackline.track(user_id, "Order Completed", {"total": total})

def signup(user_id, email):
    client = trackline.Client("app-key", host="http://127.0.0.1:9")
    client.identify(user_id, {"email": email})
    client.flush(timeout=5)
"""


def run_app_tests(pytester: pytest.Pytester, tests: str) -> pytest.RunResult:
    """Run `tests` (a test module importing `app`) in-process with warnings as errors."""
    pytester.makepyfile(app=APP, test_app="import app\n" + textwrap.dedent(tests))
    return pytester.runpytest("-q", "-W", "error")


def test_the_fixture_is_registered_through_the_entry_point(pytester: pytest.Pytester) -> None:
    """A fresh pytest process finds `trackline_capture` without any conftest or -p option."""
    pytester.makepyfile(
        test_fixture="""
        def test_listed(trackline_capture):
            assert trackline_capture.messages == []
        """
    )
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=1)


def test_the_fixture_captures_module_level_calls_made_by_the_app(
    pytester: pytest.Pytester,
) -> None:
    """Application code calling `trackline.track` needs no change to be asserted on."""
    result = run_app_tests(
        pytester,
        """
        def test_checkout(trackline_capture):
            app.checkout("019mr8mf4r", 39.95)
            trackline_capture.assert_tracked(
                "Order Completed", user_id="019mr8mf4r", properties={"total": 39.95}
            )

        def test_signup_with_its_own_client(trackline_capture):
            app.signup("019mr8mf4r", "tom@initech.com")
            trackline_capture.assert_identified("019mr8mf4r", traits={"email": "tom@initech.com"})
        """,
    )
    result.assert_outcomes(passed=2)


def test_a_failed_assertion_shows_what_was_recorded(pytester: pytest.Pytester) -> None:
    """The report of a failing test names the expectation and lists the captured messages."""
    result = run_app_tests(
        pytester,
        """
        def test_wrong_user(trackline_capture):
            app.checkout("019mr8mf4r", 39.95)
            trackline_capture.assert_tracked("Order Completed", user_id="nobody")
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*expected track with event='Order Completed', user_id='nobody' at least once*",
            "*track 'Order Completed' for 019mr8mf4r {'total': 39.95}*",
        ]
    )


def test_each_test_starts_with_an_empty_capture(pytester: pytest.Pytester) -> None:
    """Messages recorded in one test are not visible in the next."""
    result = run_app_tests(
        pytester,
        """
        def test_first(trackline_capture):
            app.checkout("a", 1)
            assert len(trackline_capture.messages) == 1

        def test_second(trackline_capture):
            trackline_capture.assert_nothing_sent()
        """,
    )
    result.assert_outcomes(passed=2)


def test_the_docs_examples_run_as_written(pytester: pytest.Pytester) -> None:
    """The docs' testing guide: the pytest example passes under pytest; the plain example runs
    as a script."""
    fixture_example, plain_example = docs_examples.python_blocks("guides/testing.md")
    pytester.makepyfile(test_checkout=fixture_example)
    pytester.runpytest("-q", "-W", "error").assert_outcomes(passed=1)
    exec(compile(plain_example, "docs/guides/testing.md", "exec"), {})
