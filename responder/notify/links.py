"""Portal links for card buttons (Action.OpenUrl, the only action Teams Workflows cards can use)."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

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


def is_safe_link(url: str | None) -> bool:
    """Only https links become buttons: an outcome's link comes from a service response header."""
    if not url:
        return False
    parts = urlsplit(url)
    return parts.scheme == "https" and bool(parts.netloc)
