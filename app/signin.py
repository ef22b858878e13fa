"""Who is using the approval page: the person App Service authentication (Easy Auth) signed in.

Easy Auth injects ``X-MS-CLIENT-PRINCIPAL`` (base64 JSON: ``auth_typ``, ``claims`` [{typ, val}],
``name_typ``, ``role_typ``), ``X-MS-CLIENT-PRINCIPAL-NAME`` and ``X-MS-CLIENT-PRINCIPAL-ID`` into every
request it lets through, and strips the same headers when a client sends them
(https://learn.microsoft.com/azure/app-service/configure-authentication-user-identities). That
stripping is the only thing that makes the headers trustworthy, so the page refuses them unless Easy
Auth is on: ``RESPONDER_EASY_AUTH=entra`` (set by infra/app/function.bicep with the authsettingsV2
resource) and ``WEBSITE_AUTH_ENABLED=True`` (set by the platform when authentication is enabled:
https://learn.microsoft.com/azure/app-service/reference-app-settings#authentication--authorization).

State-changing requests carry a CSRF token: an HMAC of the signed-in object id and the request (or run)
id under ``RESPONDER_PAGE_KEY`` (a Key Vault reference in Azure), checked with ``hmac.compare_digest``,
plus a same-host Origin (or Referer) check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import azure.functions as func

PRINCIPAL = "X-MS-CLIENT-PRINCIPAL"
PRINCIPAL_NAME = "X-MS-CLIENT-PRINCIPAL-NAME"
PRINCIPAL_ID = "X-MS-CLIENT-PRINCIPAL-ID"
# Claim types Entra ID puts in the token (Easy Auth passes them through as given).
OID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
GROUP_CLAIMS = ("groups",)
ROLE_CLAIMS = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
UPN_CLAIMS = ("preferred_username", "upn", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn")


class Refused(Exception):
    """The page answers ``status`` with ``message`` (no detail of the check that failed beyond it)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PageAuth:
    """The page's sign-in settings, read once at import (function_app.py)."""

    easy_auth: bool
    oncall: str            # object id of the on-call group, or the app role value on-call holds
    key: bytes = field(repr=False)   # CSRF HMAC key (RESPONDER_PAGE_KEY); never logged

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PageAuth:
        easy = (env.get("RESPONDER_EASY_AUTH", "").strip().lower() == "entra"
                and env.get("WEBSITE_AUTH_ENABLED", "").strip().lower() == "true")
        return cls(easy_auth=easy, oncall=env.get("RESPONDER_ONCALL_GROUP", "").strip(),
                   key=env.get("RESPONDER_PAGE_KEY", "").encode("utf-8"))


@dataclass(frozen=True)
class Principal:
    name: str              # the UPN Easy Auth gives as X-MS-CLIENT-PRINCIPAL-NAME
    oid: str               # Entra object id
    memberships: frozenset[str]
    ip: str                # client address as the front end gives it (X-Forwarded-For)


def signed_in(req: func.HttpRequest, auth: PageAuth) -> Principal:
    """The signed-in on-call person, or Refused (403 when sign-in is off, the header is bad, or the
    person is not on call)."""
    if not auth.easy_auth:
        raise Refused(403, "App Service authentication is not configured for this app "
                           "(RESPONDER_EASY_AUTH=entra and WEBSITE_AUTH_ENABLED): a principal header "
                           "cannot be trusted, so the approval page is off")
    if not auth.oncall or not auth.key:
        raise Refused(403, "RESPONDER_ONCALL_GROUP and RESPONDER_PAGE_KEY must be set for the approval page")
    raw = req.headers.get(PRINCIPAL) or ""
    try:
        doc = json.loads(base64.b64decode(raw, validate=True))
        claims = [(str(c["typ"]), str(c["val"])) for c in doc["claims"]]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise Refused(403, "not signed in (no valid X-MS-CLIENT-PRINCIPAL)") from None
    role_typ = str(doc.get("role_typ") or "")
    oid = next((v for t, v in claims if t in OID_CLAIMS), "")
    header_id = (req.headers.get(PRINCIPAL_ID) or "").strip()
    if not oid or (header_id and header_id != oid):
        raise Refused(403, "not signed in (the principal has no object id)")
    name = ((req.headers.get(PRINCIPAL_NAME) or "").strip()
            or next((v for t, v in claims if t in UPN_CLAIMS), "")) or oid
    kinds = GROUP_CLAIMS + ROLE_CLAIMS + ((role_typ,) if role_typ else ())
    memberships = frozenset(v for t, v in claims if t in kinds)
    if auth.oncall not in memberships:
        raise Refused(403, f"{name} is not in the on-call group for this app")
    return Principal(name=name[:200], oid=oid, memberships=memberships, ip=client_ip(req))


def client_ip(req: func.HttpRequest) -> str:
    """The first X-Forwarded-For entry: App Service's front end sets it to the client's address
    (ip:port); kept as given, truncated, never trusted for anything but the audit trail."""
    return (req.headers.get("X-Forwarded-For") or "").split(",")[0].strip()[:100]


def csrf_token(auth: PageAuth, who: Principal, subject: str) -> str:
    return hmac.new(auth.key, f"{who.oid}\n{subject}".encode(), hashlib.sha256).hexdigest()


def check_post(req: func.HttpRequest, auth: PageAuth, who: Principal, subject: str, token: str) -> None:
    """Refused(403) unless the POST comes from this site's own page for this person and subject."""
    host = (req.headers.get("Host") or urlsplit(req.url).netloc).lower()
    source = req.headers.get("Origin") or req.headers.get("Referer") or ""
    if not host or urlsplit(source).netloc.lower() != host:
        raise Refused(403, "refused: the form was not sent from this site (Origin/Referer)")
    if not hmac.compare_digest(csrf_token(auth, who, subject), token or ""):
        raise Refused(403, "refused: the form's token is missing or wrong; reload the page and try again")
