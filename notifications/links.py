"""Portal links for card buttons (Action.OpenUrl, the only action Teams Workflows cards can use)."""

from __future__ import annotations

import re
from urllib.parse import quote, urlencode, urlsplit

DEFENDER = "https://security.microsoft.com"
EXCHANGE_ADMIN = "https://admin.exchange.microsoft.com"


def _with_tenant(url: str, tenant_id: str | None) -> str:
    # ?tid= makes the portal open the right tenant for admins who manage several (partners, MSSPs).
    if not tenant_id:
        return url
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}{urlencode({'tid': tenant_id})}"


def defender(path: str, tenant_id: str | None = None) -> str:
    return _with_tenant(f"{DEFENDER}/{path.lstrip('/')}", tenant_id)


def incidents(tenant_id: str | None = None) -> str:
    return defender("incidents", tenant_id)


def advanced_hunting(tenant_id: str | None = None) -> str:
    return defender("v2/advanced-hunting", tenant_id)


def action_center(tenant_id: str | None = None) -> str:
    return defender("action-center/history", tenant_id)


def explorer(tenant_id: str | None = None) -> str:
    return defender("threatexplorerv3", tenant_id)


def exchange_connectors() -> str:
    return f"{EXCHANGE_ADMIN}/#/connectors"


# What RFC 3986 allows unescaped after the authority: unreserved, sub-delims, ":" "@" "/" "?" (and "#" once,
# starting the fragment). Anything else (space, '"', "{", "[", non-ASCII) makes the URL invalid for
# Action.OpenUrl: Teams refuses or mangles the whole card.
_ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def _encode_part(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "%" and _ESCAPE.match(text, i):   # already percent-encoded: keep as is
            out.append(text[i:i + 3])
            i += 3
            continue
        out.append(text[i] if text[i] in _ALLOWED else quote(text[i], safe=""))
        i += 1
    return "".join(out)


def encode_url(url: str) -> str:
    """``url`` with every character a URI may not hold percent-encoded; idempotent.

    The remediate call's Location header is documented as
    ``https://security.microsoft.com/action-center/history?filters={"bulkId":["{bulkId}"]}&tid={tid}``
    (https://learn.microsoft.com/graph/api/security-analyzedemail-remediate, Response): quotes,
    braces and brackets, which an Adaptive Card's Action.OpenUrl (a URI) cannot carry unencoded."""
    head, sep, fragment = url.partition("#")
    parts = urlsplit(head)
    rest = head[len(f"{parts.scheme}://{parts.netloc}"):] if parts.netloc else head
    prefix = head[:len(head) - len(rest)]
    return prefix + _encode_part(rest) + (sep + _encode_part(fragment) if sep else "")


def is_safe_link(url: str | None) -> bool:
    """Only https links become buttons: an outcome's link comes from a service response header."""
    if not url:
        return False
    parts = urlsplit(url)
    return parts.scheme == "https" and bool(parts.netloc)
