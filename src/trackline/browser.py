"""The analytics.js loader for server-rendered pages: one `<script>` element, safe in HTML.

```python
from trackline.browser import snippet

html = f"<head>{snippet('WRITE_KEY', host='http://127.0.0.1:8765')}</head>"
```

The element defines `window.analytics` at once as a stub that queues every call (with the
page's URL, path, title and referrer at the moment of the call, as analytics.js expects), then
loads analytics.js from `cdn`; analytics.js replays the queue when it starts. This is our own
loader, equivalent to Segment's snippet: it speaks the same contract (`_writeKey`, `_cdn`,
`_loadOptions` and the queued `[method, ...args, pageContext]` calls that analytics.js reads).

The code holds no `<` or `>` of its own, and every value is written as a JSON literal with
`<`, `>` and `&` escaped, so no write key, host or option can close the element or start
markup; the CSP nonce is an escaped attribute, and
the script element added for analytics.js carries it too.
"""

from __future__ import annotations

import html
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

from trackline.errors import ConfigError

#: Segment's CDN, where analytics.js and the settings of Segment's own write keys live.
SEGMENT_CDN: Final = "https://cdn.segment.com"

#: Version of this loader, in `analytics.SNIPPET_VERSION` (analytics.js reports it).
LOADER_VERSION: Final = "trackline-1"

#: The stub's methods; the first six are events, queued with the page as it was when called.
_EVENT_METHODS: Final = ("track", "page", "identify", "group", "alias", "screen")
_OTHER_METHODS: Final = (
    "ready",
    "reset",
    "debug",
    "on",
    "once",
    "off",
    "user",
    "register",
    "deregister",
    "setAnonymousId",
    "pageview",
    "trackLink",
    "trackForm",
    "trackClick",
    "trackSubmit",
    "addSourceMiddleware",
    "addDestinationMiddleware",
)

_LOADER: Final = """\
(function (w, d, key, src, cdn, options, nonce, page, events, methods) {
  var a = (w.analytics = w.analytics || []);
  if (a.initialize || a.invoked) return;
  a.invoked = true;
  function here() {
    var l = w.location, c = d.querySelector("link[rel='canonical']");
    return {__t: "bpc", c: (c && c.getAttribute("href")) || undefined, p: l.pathname,
            u: l.href, s: l.search, t: d.title, r: d.referrer};
  }
  function stub(name) {
    return function () {
      var call = [name].concat(Array.prototype.slice.call(arguments));
      if (events.indexOf(name) !== -1) call.push(here());
      a.push(call);
      return a;
    };
  }
  methods = events.concat(methods);
  for (var i = 0; i !== methods.length; i++) a[methods[i]] = stub(methods[i]);
  a._writeKey = key;
  a._cdn = cdn;
  a._loadOptions = options;
  a.SNIPPET_VERSION = %(version)s;
  var s = d.createElement("script");
  s.async = true;
  s.src = src;
  if (nonce) s.nonce = nonce;
  (d.head || d.documentElement).appendChild(s);
  if (page) a.page();
})(window, document, %(key)s, %(src)s, %(cdn)s, %(options)s, %(nonce)s, %(page)s, %(events)s,
   %(methods)s);"""


class Snippet(str):
    """Markup that is safe as it is: Jinja and Django insert a value with `__html__`
    unescaped, so `{{ trackline_snippet() }}` needs no `|safe`."""

    __slots__ = ()

    def __html__(self) -> str:
        return str(self)


def script_literal(value: Any) -> str:
    """`value` as a JavaScript literal that is safe inside a `<script>` element: JSON, ASCII
    only (so U+2028 cannot end a line), with `<`, `>` and `&` as `\\u` escapes, so
    `</script>` or `<!--` in a value stays a string."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _base_url(value: str, option: str) -> str:
    """An http(s) URL without query or fragment, without its trailing slash."""
    if not isinstance(value, str):
        raise ConfigError(option, f"must be a URL string, not {type(value).__name__}")
    parts = urllib.parse.urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(option, f"{value!r} is not an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ConfigError(option, f"{value!r} must not have a query or a fragment")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def segment_io_options(host: str) -> dict[str, str]:
    """The `Segment.io` integration options that make analytics.js send to `host` (an origin,
    like a client's `host`): `apiHost` without the scheme, and `protocol`."""
    parts = urllib.parse.urlsplit(_base_url(host, "host"))
    return {"apiHost": f"{parts.netloc}{parts.path}/v1", "protocol": parts.scheme}


def snippet(
    write_key: str,
    *,
    host: str | None = None,
    cdn: str | None = None,
    page: bool = True,
    nonce: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Snippet:
    """The `<script>` element that loads analytics.js for `write_key`, to put in a page's
    `<head>`.

    `host`: where events go, such as a trackline collector (`http://127.0.0.1:8765`); default,
    wherever the settings say (Segment's API). `cdn`: where analytics.js and its settings are
    loaded from; default `host` when given (a collector serves the settings, and analytics.js
    when started with `--analytics-js`), else Segment's CDN. `page`: make the `page` call of a
    page view. `nonce`: the page's Content-Security-Policy nonce, set on both script elements.
    `options`: more options for analytics.js's `load` (`{"integrations": {...}}`, ...).
    Raises `ConfigError` naming a wrong argument.
    """
    if not isinstance(write_key, str) or not write_key:
        raise ConfigError("write_key", "must be a non-empty string")
    if not isinstance(page, bool):
        raise ConfigError("page", f"must be True or False, not {page!r}")
    if nonce is not None and (not isinstance(nonce, str) or not nonce):
        raise ConfigError("nonce", "must be a non-empty string")
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError("options", f"must be a mapping (dict), not {type(options).__name__}")
    load_options = dict(options or {})
    integrations = dict(load_options.get("integrations") or {})
    own = integrations.get("Segment.io")
    if host is not None and own is not False:
        integrations["Segment.io"] = {
            **segment_io_options(host),
            **(own if isinstance(own, Mapping) else {}),
        }
        load_options["integrations"] = integrations
    base = _base_url(cdn, "cdn") if cdn is not None else None
    if base is None:
        base = _base_url(host, "host") if host is not None else SEGMENT_CDN
    quoted_key = urllib.parse.quote(write_key, safe="")
    src = f"{base}/analytics.js/v1/{quoted_key}/analytics.min.js"
    try:
        code = _LOADER % {
            "version": script_literal(LOADER_VERSION),
            "key": script_literal(write_key),
            "src": script_literal(src),
            "cdn": script_literal(base),
            "options": script_literal(load_options),
            "nonce": script_literal(nonce),
            "page": script_literal(page),
            "events": script_literal(_EVENT_METHODS),
            "methods": script_literal(_OTHER_METHODS),
        }
    except (TypeError, ValueError) as exc:
        raise ConfigError("options", f"must be JSON: {exc}") from None
    attribute = "" if nonce is None else f' nonce="{html.escape(nonce, quote=True)}"'
    return Snippet(f"<script{attribute}>\n{code}\n</script>")
