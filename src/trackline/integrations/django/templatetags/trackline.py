"""`{% load trackline %}{% trackline_snippet %}`: the analytics.js loader in a Django template.

```django
{% load trackline %}
<head>{% trackline_snippet %}</head>
<head>{% trackline_snippet page=False nonce=request.csp_nonce %}</head>
```

Write key, host and CDN come from the `TRACKLINE_*` settings (see `integrations/loader.py`);
the tag's arguments (`write_key`, `host`, `cdn`, `page`, `nonce`, `options`) win. Without a
`nonce` argument, the page's Content-Security-Policy nonce is used when the template has one:
the `csp_nonce` context variable (Django's CSP support) or `request.csp_nonce` (django-csp).
"""

from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings

from trackline.browser import Snippet
from trackline.integrations.loader import settings_snippet

register = template.Library()


def _nonce(context: Any) -> str | None:
    nonce = context.get("csp_nonce")
    if nonce is None:
        nonce = getattr(context.get("request"), "csp_nonce", None)
    return None if nonce is None else str(nonce)


@register.simple_tag(takes_context=True)  # type: ignore[untyped-decorator]
def trackline_snippet(context: Any, **arguments: Any) -> Snippet:
    """The loader's `<script>` element; safe markup, inserted as it is."""
    if "nonce" not in arguments:
        arguments["nonce"] = _nonce(context)
    return settings_snippet(lambda name, default: getattr(settings, name, default), **arguments)
