"""`trackline.context.enter` / `leave`: the scope the middlewares open and close by token."""

from __future__ import annotations

import contextvars

import trackline
from trackline.context import current, enter, leave


def test_enter_adds_to_the_outer_scope_and_leave_restores_it() -> None:
    """Keys add to an enclosing `with trackline.context(...)`; leaving restores it exactly."""
    with trackline.context(tenant="acme"):
        token = enter({"ip": "192.0.2.1"})
        assert current() == {"tenant": "acme", "ip": "192.0.2.1"}
        leave(token)
        assert current() == {"tenant": "acme"}
    assert current() is None


def test_leave_from_another_context_still_restores() -> None:
    """A server may close a response in a copied context, where `ContextVar.reset` refuses
    the token: leave() then restores the value from before `enter` there too."""
    token = enter({"ip": "192.0.2.1"})
    other = contextvars.copy_context()
    other.run(leave, token)
    assert other.run(current) is None
    leave(token)
    assert current() is None
