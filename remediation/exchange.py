"""Exchange Online admin API client: the REST endpoint behind the ExchangeOnlineManagement v3 module.

``POST {base}/{tenantId}/InvokeCommand`` with ``{"CmdletInput": {"CmdletName", "Parameters"}}`` and a
token for ``https://outlook.office365.com/.default`` (app role Exchange.ManageAsApp plus an Exchange
admin role). It is undocumented, which is why connector actions default to approval: on-call gets
``render_command(...)``, the exact PowerShell to run, and automatic execution is a per-tenant opt-in.
The base URL is a setting (RESPONDER_EXCHANGE_BASE_URL) so the loopback fake can stand in.

Tokens are fetched per call from the azure-identity credential (which caches them) and never logged.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from responder.graph import is_loopback

EXCHANGE_BASE_URL = "https://outlook.office365.com/adminapi/beta"
EXCHANGE_SCOPE = "https://outlook.office365.com/.default"
CMDLET_NOUN = {"inbound": "InboundConnector", "outbound": "OutboundConnector"}


class ExchangeError(Exception):
    """The Exchange admin API refused or failed a command. ``status`` None means no HTTP answer."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


# Every character PowerShell accepts as a single quote: ' and the curly quotes U+2018..U+201B. Any of
# them ends a single-quoted string, so a connector name (attacker-chosen: it comes from the audit log)
# holding a curly quote would otherwise break out of the argument in the command on-call pastes.
PS_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
_PS_QUOTE_RE = re.compile(f"([{PS_SINGLE_QUOTES}])")
# Control characters (newlines included) and the Unicode line/paragraph separators: a newline inside a
# pasted command starts a new statement in some hosts, and nothing legitimate names a connector so.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def ps_quote(value: str) -> str:
    """A PowerShell single-quoted string: nothing inside is expanded; every single-quote character
    (ASCII and curly) is doubled, which is PowerShell's escape inside single quotes. Refuses control
    characters (ValueError): they cannot be shown safely in a one-line command."""
    if _CONTROL_RE.search(value):
        raise ValueError(f"refusing to quote a value with control characters or line breaks: {value!r}")
    return "'" + _PS_QUOTE_RE.sub(r"\1\1", value) + "'"


def render_command(direction: str, connector: str, *, enabled: bool = False) -> str:
    """The exact command for on-call (approval card, ledger), e.g.
    ``Set-InboundConnector -Identity 'Partner relay' -Enabled:$false``.

    ValueError for a name that cannot be rendered safely (empty, control characters): callers then
    show no command. The InvokeCommand path needs none of this: it sends the name as a JSON string
    value in ``Parameters`` (no PowerShell parsing), which json escaping keeps one value."""
    if direction not in CMDLET_NOUN:
        raise ValueError(f"connector direction must be inbound or outbound, not {direction!r}")
    if not connector.strip():
        raise ValueError("connector name is empty")
    return f"Set-{CMDLET_NOUN[direction]} -Identity {ps_quote(connector)} -Enabled:${str(enabled).lower()}"


class ExchangeClient:
    def __init__(self, tenant_id: str, *, base_url: str = EXCHANGE_BASE_URL, credential: Any = None,
                 http: httpx.AsyncClient | None = None, timeout: float = 60.0):
        if not tenant_id:
            raise ValueError("the Exchange admin API needs the tenant id (RESPONDER_TENANT_ID)")
        base_url = base_url.rstrip("/")
        if credential is None and not is_loopback(base_url):
            raise ValueError("a credential is required for a non-loopback Exchange endpoint")
        self.tenant_id = tenant_id
        self.base_url = base_url
        self._credential = credential
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._own_http = http is None

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def invoke(self, cmdlet: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one cmdlet; returns the objects it output (``value``)."""
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "X-ResponseFormat": "json"}
        if self._credential is not None:
            token = await self._credential.get_token(EXCHANGE_SCOPE)
            headers["Authorization"] = f"Bearer {token.token}"
        url = f"{self.base_url}/{self.tenant_id}/InvokeCommand"
        body = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters or {}}}
        try:
            resp = await self._http.post(url, json=body, headers=headers)
        except httpx.TimeoutException:
            raise ExchangeError(f"{cmdlet}: timed out") from None
        except httpx.TransportError as exc:
            raise ExchangeError(f"{cmdlet}: connection failed: {type(exc).__name__}") from None
        if resp.status_code >= 400:
            raise ExchangeError(f"{cmdlet}: HTTP {resp.status_code}: {_message(resp)}",
                                status=resp.status_code, retry_after=_retry_after(resp))
        try:
            data = resp.json()
        except ValueError:
            return []
        value = data.get("value") if isinstance(data, dict) else None
        return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []

    async def get_connector(self, direction: str, name: str) -> dict[str, Any] | None:
        """The connector, or None when Exchange says there is no such connector."""
        try:
            found = await self.invoke(f"Get-{CMDLET_NOUN[direction]}", {"Identity": name})
        except ExchangeError as exc:
            if exc.status == 404 or "ManagementObjectNotFound" in str(exc):
                return None
            raise
        return found[0] if found else None

    async def set_connector_enabled(self, direction: str, name: str, enabled: bool) -> None:
        await self.invoke(f"Set-{CMDLET_NOUN[direction]}", {"Identity": name, "Enabled": enabled})


def _message(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:300] or resp.reason_phrase
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return " ".join(str(err.get(k)) for k in ("code", "message") if err.get(k))
    return str(data)[:300]


def _retry_after(resp: httpx.Response) -> float | None:
    from remediation.actions.errors import parse_retry_after

    return parse_retry_after(resp.headers.get("retry-after"))


def make_exchange_client(settings: Any, credential: Any) -> ExchangeClient | None:
    """The client the worker uses, or None when it cannot be built (no tenant id, or no credential for
    a real endpoint): connector actions then fail with that reason instead of the app failing to start."""
    base = getattr(settings, "exchange_base_url", EXCHANGE_BASE_URL) or EXCHANGE_BASE_URL
    try:
        return ExchangeClient(settings.tenant_id, base_url=base, credential=credential)
    except ValueError:
        return None
