"""Exchange Online admin API client: the REST endpoint behind the ExchangeOnlineManagement v3 module.

``POST {base}/{tenantId}/InvokeCommand`` with ``{"CmdletInput": {"CmdletName", "Parameters"}}`` and a
token for ``https://outlook.office365.com/.default`` (app role Exchange.ManageAsApp plus an Exchange
admin role). It is undocumented, which is why connector actions default to approval: on-call gets
``render_command(...)``, the exact PowerShell to run, and automatic execution is a per-tenant opt-in.
The base URL is a setting (RESPONDER_EXCHANGE_BASE_URL) so the loopback fake can stand in.

Tokens are fetched per call from the azure-identity credential (which caches them) and never logged.

What the public clients of this endpoint do, and so do we (it has no documentation):

* ``X-AnchorMailbox``: routes the request to the tenant's arbitration mailbox
  ``SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}``. CIPP writes it ``APP:...@<tenant id>``
  (KelvinTegelaar/CIPP-API, Modules/CIPPCore/Public/GraphHelper/New-ExoRequest.ps1), ScubaGear
  ``UPN:...@<tenant>.onmicrosoft.com``. We use the ``APP:`` form: it needs only the tenant id, which
  the app has, while the initial domain would be one more setting to get wrong.
* Errors: ``error.message`` is often a generic envelope ("Error executing cmdlet"); the cmdlet's own
  message and exception type are in ``error.details[].message`` (sometimes JSON text holding
  ``Message`` and ``TypeName``) and ``error.innererror.internalexception`` (New-ExoRequest.ps1 reads
  them in that order; Get-CippExoErrorText.ps1 the same). "Object not found" is read from all of them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from core.graph import is_loopback
from core.retry_after import parse_retry_after

EXCHANGE_BASE_URL = "https://outlook.office365.com/adminapi/beta"
EXCHANGE_SCOPE = "https://outlook.office365.com/.default"
CMDLET_NOUN = {"inbound": "InboundConnector", "outbound": "OutboundConnector"}
ARBITRATION_MAILBOX = "SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}"
NOT_FOUND_TYPE = "ManagementObjectNotFoundException"


def anchor_mailbox(tenant_id: str) -> str:
    """The ``X-AnchorMailbox`` value for app-only calls (module doc)."""
    return f"APP:{ARBITRATION_MAILBOX}@{tenant_id}"


class ExchangeError(Exception):
    """The Exchange admin API refused or failed a command. ``status`` None means no HTTP answer."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None,
                 not_found: bool = False):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.not_found = not_found   # the cmdlet said the object does not exist


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
                   "X-ResponseFormat": "json", "X-AnchorMailbox": anchor_mailbox(self.tenant_id)}
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
            message, not_found = _error_of(resp)
            raise ExchangeError(f"{cmdlet}: HTTP {resp.status_code}: {message}", status=resp.status_code,
                                retry_after=_retry_after(resp), not_found=not_found)
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
            if exc.status == 404 or exc.not_found:
                return None
            raise
        return found[0] if found else None

    async def set_connector_enabled(self, direction: str, name: str, enabled: bool) -> None:
        await self.invoke(f"Set-{CMDLET_NOUN[direction]}", {"Identity": name, "Enabled": enabled})


def _error_of(resp: httpx.Response) -> tuple[str, bool]:
    """The most specific message in an error answer, and whether it says "object not found"."""
    try:
        data = resp.json()
    except ValueError:
        return (resp.text[:300] or resp.reason_phrase), False
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return str(data)[:300], False
    texts: list[str] = []          # most specific first: details, inner exception, then the envelope
    for d in err.get("details") if isinstance(err.get("details"), list) else []:
        if isinstance(d, dict) and isinstance(d.get("message"), str):
            texts.extend(_detail_texts(d["message"]))
    inner = _ci(err, "innererror")
    while isinstance(inner, dict):
        texts.extend(str(inner[k]) for k in ("message", "type") if isinstance(inner.get(k), str))
        inner = _ci(inner, "internalexception")
    envelope = " ".join(str(err[k]) for k in ("code", "message") if err.get(k))
    not_found = any(NOT_FOUND_TYPE in t for t in [*texts, envelope])
    # The first sentence (a type name has no spaces) that says more than the envelope.
    specific = next((t for t in texts if " " in t.strip() and t != err.get("message")), None)
    message = f"{envelope}: {specific}" if specific and envelope else (specific or envelope)
    return (message or resp.reason_phrase)[:500], not_found


def _detail_texts(message: str) -> list[str]:
    """A detail's message is plain text or JSON text with ``Message`` and ``TypeName``."""
    try:
        inner = json.loads(message)
    except ValueError:
        return [message]
    if isinstance(inner, dict):
        return [str(inner[k]) for k in ("Message", "TypeName") if isinstance(inner.get(k), str)]
    return [message]


def _ci(obj: dict[str, Any], name: str) -> Any:
    """``obj[name]`` ignoring case (clients see both ``internalException`` and ``internalexception``)."""
    return next((v for k, v in obj.items() if k.lower() == name), None)


def _retry_after(resp: httpx.Response) -> float | None:
    return parse_retry_after(resp.headers.get("retry-after"))


def make_exchange_client(settings: Any, credential: Any) -> ExchangeClient | None:
    """The client the worker uses, or None when it cannot be built (no tenant id, or no credential for
    a real endpoint): connector actions then fail with that reason instead of the app failing to start."""
    base = getattr(settings, "exchange_base_url", EXCHANGE_BASE_URL) or EXCHANGE_BASE_URL
    try:
        return ExchangeClient(settings.tenant_id, base_url=base, credential=credential)
    except ValueError:
        return None
