"""The optional automatic `page` call an integration makes for each request the filter accepts.

Off by default: a server sees every asset, API call and health check, and only the app knows
which responses are page views. The default filter counts successful `GET`s answered with
HTML. The call is made when the response has been produced, inside the request's context, with
the ids analytics.js keeps in its `ajs_user_id` / `ajs_anonymous_id` cookies (so server and
browser events join up), the user id the framework knows (Django's logged-in user), or else a
fresh anonymous id.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable

from trackline._default import get_client
from trackline.client import Client
from trackline.errors import ConfigError, TracklineError
from trackline.integrations.request import RequestInfo, cookie_id, page_properties

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PageView:
    """A request and the start of its response, for the page filter to judge."""

    request: RequestInfo
    status: int
    content_type: str | None


PageFilter = Callable[[PageView], bool]


def html_pages(view: PageView) -> bool:
    """The default filter: a successful `GET` answered with an HTML document."""
    return (
        view.request.method == "GET"
        and 200 <= view.status < 300
        and (view.content_type or "").lower().startswith("text/html")
    )


class PageViews:
    """Makes the `page` call for a finished request when enabled and the filter agrees.

    `client` defaults to the default client, looked up at each call so that `trackline.init`
    run after the middleware was built still applies.
    """

    def __init__(
        self,
        enabled: bool = False,
        page_filter: PageFilter | None = None,
        client: Client | None = None,
    ) -> None:
        if not isinstance(enabled, bool):
            raise ConfigError("page_views", f"must be True or False, not {enabled!r}")
        if page_filter is not None and not callable(page_filter):
            raise ConfigError("page_filter", f"must be callable, not {type(page_filter).__name__}")
        self.enabled = enabled
        self.filter: PageFilter = page_filter or html_pages
        self._client = client

    def record(self, view: PageView, user_id: str | None = None) -> str | None:
        """Make the page call for `view` if it passes the filter; returns its message id."""
        if not self.enabled:
            return None
        try:
            if not self.filter(view):
                return None
        except Exception:
            logger.exception("the page filter raised; no page call for %s", view.request.path)
            return None
        cookies = view.request.cookies
        user_id = user_id or cookie_id(cookies.get("ajs_user_id"))
        anonymous_id = cookie_id(cookies.get("ajs_anonymous_id"))
        if not user_id and not anonymous_id:
            anonymous_id = str(uuid.uuid4())
        client = self._client or get_client()
        try:
            return client.page(
                user_id, properties=page_properties(view.request), anonymous_id=anonymous_id
            )
        except TracklineError as error:
            logger.warning("no page call for %s: %s", view.request.path, error)
            return None
