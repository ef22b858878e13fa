"""A loopback fake of the Microsoft Graph v1.0 endpoints this app calls, and of the Exchange admin API.

A real HTTP server on 127.0.0.1 (stdlib, one thread per request), so the real msgraph-sdk client,
httpx and azure-core talk to it exactly as they would to the service. Used by the tests, the demo
and the benchmarks; nothing here mocks our own code.

Public API::

    with FakeGraph(tenant_id=..., hunting=handler, on_remediate=hook) as fake:
        fake.base_url            # "http://127.0.0.1:PORT/v1.0"   (make_graph_client(base_url=...))
        fake.exchange_base_url   # "http://127.0.0.1:PORT/adminapi/beta" (ExchangeClient base URL)
        fake.tenant_id

        # state you can seed and read
        fake.users.add(upn, *, id=None, account_enabled=True, display_name="", mail=None,
                       privileged_role=None) -> FakeUser
        fake.users.get(upn_or_id) -> FakeUser | None
        fake.mailboxes.add(user, internet_message_id, folder="inbox", *, subject="", received=None,
                           **fields) -> str (message id; fields: the richer FakeMessage fields)
        fake.mailboxes.add_folder(user, name) -> str (folder id)
        fake.mailboxes.folder_of(user, internet_message_id) -> str | None   (folder name: "junkemail")
        fake.mailboxes.messages(user) -> list[FakeMessage]
        fake.connectors.add(name, direction="inbound", *, enabled=True, **properties) -> dict
        fake.connectors.get(name) -> dict | None
        fake.remediations        # list[Remediation]: every accepted analyzedEmails/remediate call
        fake.compromised         # set of user object ids confirmed compromised
        fake.revoked             # list of user ids whose sessions were revoked (one entry per call)
        fake.app_roles           # set of Entra role names the app's identity holds (privileged targets)

        # what was sent
        fake.calls               # list[Call] (method, path, query, json, body, headers, status)
        fake.calls_to(method, path_regex) -> list[Call]
        fake.clear_calls()
        fake.peak_overlap(method, path_regex) -> int   (most matching calls in flight at once)

        # faults and limits
        fake.inject(method, path_regex, status, *, times=1, retry_after=None, code=None, message=None,
                    latency=0.0, applied=False, body_contains=None) -> Fault
        fake.add_latency(seconds, method="*", path_regex=".*", times=None, body_contains=None) -> Fault
        fake.outlook_limits(concurrent=4, per_window=10_000, window=600.0, retry_after=1.0)
        fake.peak_concurrency(user) -> int     (most mailbox requests in flight at once, per mailbox)

        # the push path (devtools/fakegraph_push.py): subscriptions, notifications, delta, rich mail
        fake.push.configure(manual=True) ; fake.push.deliver_inbound(...) ; fake.push.advance(seconds)

``path_regex`` is searched (``re.search``) in the decoded request path, e.g.
``/v1.0/users/support@contoso.com/messages``; ``method`` "*" matches any. An injected fault answers
in Graph's JSON error shape (``{"error": {"code", "message", "innerError"}}``) before the request is
processed, unless ``applied=True``: then the request is carried out first and the error is answered
anyway (a 503 or timeout after the service did the work: what makes retries of POSTs interesting).
``fake.inject_reset(method, path_regex, *, times=1, applied=False, latency=0.0, body_contains=None)``
closes the connection with no reply instead (before or, with ``applied=True``, after processing).
``times=None`` means forever. ``body_contains``: the fault only answers requests whose raw body holds
that text (e.g. one networkMessageId: "the service refuses the call that carries this email"). Faults
are tried in the order they were added.

Endpoints (Graph paths relative to ``/v1.0``):

* ``POST /security/runHuntingQuery`` (also ``/security/microsoft.graph.security.runHuntingQuery``, the
  path msgraph-sdk uses): body ``{"Query", "Timespan"?}``; answered by the pluggable
  ``hunting(query, timespan) -> (schema, rows)`` (schema: list of ``{"name","type"}`` dicts, passed
  through as given, or ``(name, type)`` tuples); the handler may raise ``GraphFault`` to answer an
  error (e.g. the quota 429); it may also return a dict, sent as the whole response body (to test
  malformed answers); any other exception it raises is answered 500. No handler: 400.
* ``POST /security/collaboration/analyzedEmails/remediate`` (also ``.../microsoft.graph.security.remediate``,
  the SDK's path): validates the body, records a ``Remediation``, calls ``on_remediate(action, emails)``
  (emails: list of ``{"networkMessageId", "recipientEmailAddress"}``), answers 202 with an Action-center
  ``Location`` header and no body.
* ``GET /users/{id}/messages?$filter=internetMessageId eq '...'`` (not Recoverable Items),
  ``GET /users/{id}/mailFolders/{idOrWellKnownName}/messages?$filter=...``,
  ``GET /users/{id}/messages/{msgId}`` and ``GET /users/{id}/mailFolders/{folder}/messages/{msgId}``
  (``$select`` honoured: internetMessageHeaders only when selected; fakegraph_push.message_json),
  ``POST /users/{id}/messages/{msgId}/move`` (body ``destinationId`` or ``DestinationId``: a well-known
  folder name or a folder id; 201 with the moved message, which has a new id),
  ``GET /users/{id}/mailFolders/{idOrWellKnownName}``.
* ``GET /users/{id}`` (``$select`` honoured; ``signInSessionsValidFromDateTime`` only when selected),
  ``PATCH /users/{id}`` (``accountEnabled``), ``POST /users/{id}/revokeSignInSessions`` (sets the user's
  ``signInSessionsValidFromDateTime`` to now, as documented; ``FakeUser.sign_in_sessions_valid_from``).
* ``POST /identityProtection/riskyUsers/confirmCompromised`` (``{"userIds": [...]}``, object ids).
* ``POST /adminapi/beta/{tenantId}/InvokeCommand``: ``{"CmdletInput": {"CmdletName", "Parameters"}}`` for
  Get-/Set-InboundConnector and Get-/Set-OutboundConnector over the connector store.

Unknown users are 404 (``Request_ResourceNotFound``), unknown messages 404 (``ErrorItemNotFound``).
A user is addressed by object id or userPrincipalName only, as Graph documents the segment
(``/users/{id | userPrincipalName}``, https://learn.microsoft.com/graph/api/user-get): a mailbox's
primary SMTP address (``mail=``) that differs from its UPN is 404, as on the service.
A user added with ``privileged_role`` (an Entra admin role name) stands for an administrator: an
app-only ``revokeSignInSessions`` or ``PATCH accountEnabled`` on it is 403 ``Authorization_RequestDenied``
"Insufficient privileges to complete the operation." unless ``fake.app_roles`` holds a role allowed
to act on it (``PRIVILEGED_ACTORS``), as the user-update docs describe ("Who can perform sensitive
actions", https://learn.microsoft.com/graph/api/user-update#permissions).
InvokeCommand requires ``X-AnchorMailbox`` naming the arbitration mailbox (every public client sends
it: remediation/exchange.py) and answers a cmdlet's "object not found" the way clients read it: a
generic ``error.message``, the cmdlet's message and exception type in ``error.details[].message`` and
``error.innererror.internalexception``.
Users are created on demand by ``mailboxes.add``. Recorded headers include Authorization (tests
assert that a token was sent); ``Call``'s repr hides it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

DEFAULT_TENANT_ID = "8f4a2c1e-0b7d-4e59-9c36-2d1f0a7b5e43"
# Well-known folder names (https://learn.microsoft.com/graph/api/resources/mailfolder#well-known-folder-names);
# recoverableitemsdeletions is Recoverable Items\Deletions, where a soft delete puts a message.
WELL_KNOWN_FOLDERS = ("inbox", "junkemail", "deleteditems", "archive", "drafts", "sentitems",
                      "recoverableitemsdeletions")
HIDDEN_FOLDERS = ("recoverableitemsdeletions",)   # outside the folders GET /messages lists
REMEDIATION_ACTIONS = ("moveToJunk", "moveToInbox", "hardDelete", "softDelete", "moveToDeletedItems")
REMEDIATION_SEVERITIES = ("low", "medium", "high")
# Default error codes per status, as Graph names them.
_CODES = {400: "BadRequest", 401: "InvalidAuthenticationToken", 403: "Forbidden", 404: "ResourceNotFound",
          409: "Conflict", 429: "TooManyRequests", 500: "InternalServerError", 502: "BadGateway",
          503: "ServiceUnavailable", 504: "GatewayTimeout"}

Hunting = Callable[[str, "str | None"], "tuple[list[Any], list[dict[str, Any]]] | dict[str, Any]"]
OnRemediate = Callable[[str, list[dict[str, str]]], None]


# Most rows one advanced hunting result holds (see _hunt).
HUNTING_MAX_ROWS = 100_000


class GraphFault(Exception):
    """Raised by a pluggable handler (``hunting``) to answer an error in Graph's shape."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "Error")
        self.message = message
        self.retry_after = retry_after


@dataclass
class Call:
    """One request the fake received, and the status it answered."""

    method: str
    path: str                          # decoded, e.g. /v1.0/users/a@contoso.com/messages
    query: dict[str, str]              # decoded query parameters ($filter, $select, ...)
    json: Any                          # parsed JSON body, None when empty or not JSON
    body: bytes
    headers: dict[str, str] = field(repr=False)   # lower-case names; includes authorization
    status: int = 0
    started: float = field(default=0.0, repr=False)    # time.monotonic() when received
    finished: float = field(default=0.0, repr=False)   # ... and when answered (0.0 while in flight)

    @property
    def url(self) -> str:
        """Path plus decoded query, for readable assertions."""
        if not self.query:
            return self.path
        return self.path + "?" + "&".join(f"{k}={v}" for k, v in self.query.items())


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int | None                 # None: latency only
    times: int | None
    retry_after: float | None = None
    code: str | None = None
    message: str | None = None
    latency: float = 0.0
    applied: bool = False
    body_contains: str | None = None   # only requests whose raw body holds this text
    hits: int = 0
    reset: bool = False                # close the connection with no reply (inject_reset)

    @property
    def answers(self) -> bool:
        """An error or a reset (as opposed to added latency only)."""
        return self.status is not None or self.reset

    def matches(self, method: str, path: str, body: bytes = b"") -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.body_contains is not None and self.body_contains.encode("utf-8") not in body:
            return False
        return self.method in ("*", method) and self.pattern.search(path) is not None


@dataclass
class Remediation:
    bulk_id: str
    action: str
    emails: list[dict[str, str]]
    body: dict[str, Any]
    location: str


# Entra roles whose holders may change the sensitive properties of (and revoke sessions for) an admin
# in ``privileged_role``; everything else needs Privileged Authentication Administrator (or Global
# Administrator). https://learn.microsoft.com/graph/api/user-update#permissions ("Who can perform
# sensitive actions") and https://learn.microsoft.com/entra/identity/role-based-access-control/
# privileged-roles-permissions#who-can-perform-sensitive-actions
PRIVILEGED_ACTORS = {
    "Helpdesk Administrator": {"Helpdesk Administrator", "User Administrator",
                               "Privileged Authentication Administrator", "Global Administrator"},
    "User Administrator": {"User Administrator", "Privileged Authentication Administrator",
                           "Global Administrator"},
}
TOP_PRIVILEGED_ACTORS = {"Privileged Authentication Administrator", "Global Administrator"}


@dataclass
class FakeUser:
    id: str
    user_principal_name: str
    account_enabled: bool = True
    display_name: str = ""
    mail: str | None = None              # primary SMTP address when it is not the UPN
    privileged_role: str | None = None   # an Entra admin role the user holds
    # Reset to the current time by revokeSignInSessions (https://learn.microsoft.com/graph/api/
    # user-revokesigninsessions); ISO 8601 UTC, whole seconds, as Graph answers DateTimeOffset values.
    sign_in_sessions_valid_from: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "userPrincipalName": self.user_principal_name,
                "mail": self.mail or self.user_principal_name,
                "displayName": self.display_name or self.user_principal_name.split("@")[0],
                "accountEnabled": self.account_enabled}

    def selected(self, select: str | None) -> dict[str, Any]:
        """The user as ``GET /users/{id}`` answers it: the default properties, or only those named in
        ``$select``. signInSessionsValidFromDateTime is "Returned only on $select"
        (https://learn.microsoft.com/graph/api/resources/user#properties)."""
        if not select:
            return self.to_json()
        every = {**self.to_json(), "signInSessionsValidFromDateTime": self.sign_in_sessions_valid_from}
        wanted = [p.strip() for p in select.split(",") if p.strip()]
        by_lower = {k.lower(): k for k in every}
        return {by_lower[w.lower()]: every[by_lower[w.lower()]] for w in wanted if w.lower() in by_lower}


@dataclass
class FakeMessage:
    id: str
    internet_message_id: str
    folder: str                        # well-known name or custom folder name
    subject: str = ""
    received: str = ""
    # The richer message (devtools/fakegraph_push.py renders it as Graph's message resource and
    # builds realistic ones: FakeGraph.push.deliver_inbound / add_sent). Addresses are (name, address).
    sender: tuple[str, str] | None = None
    from_: tuple[str, str] | None = None            # None: the sender
    to: tuple[tuple[str, str], ...] = ()
    cc: tuple[tuple[str, str], ...] = ()
    body: str = ""
    body_type: str = "text"                         # "text" or "html"
    headers: tuple[tuple[str, str], ...] = ()       # internetMessageHeaders, in order
    conversation_id: str = ""
    sent: str = ""                                  # sentDateTime; "" means receivedDateTime


class UserStore:
    def __init__(self, lock: threading.RLock):
        self._lock = lock
        self._by_key: dict[str, FakeUser] = {}

    def add(self, upn: str, *, id: str | None = None, account_enabled: bool = True,
            display_name: str = "", mail: str | None = None, privileged_role: str | None = None) -> FakeUser:
        with self._lock:
            existing = self.get(upn)
            if existing is not None:
                return existing
            user = FakeUser(id or str(uuid.uuid5(uuid.NAMESPACE_URL, "user:" + upn.lower())), upn,
                            account_enabled, display_name, mail, privileged_role)
            self._by_key[upn.lower()] = user
            self._by_key[user.id.lower()] = user
            return user

    def get(self, upn_or_id: str) -> FakeUser | None:
        with self._lock:
            return self._by_key.get(upn_or_id.lower())

    def all(self) -> list[FakeUser]:
        with self._lock:
            return list({u.id: u for u in self._by_key.values()}.values())


class MailboxStore:
    """Messages per user, each in one folder; a move gives the message a new id (as Exchange does)."""

    def __init__(self, lock: threading.RLock, users: UserStore):
        self._lock = lock
        self._users = users
        self._boxes: dict[str, dict[str, FakeMessage]] = {}   # user id -> message id -> message
        self._folders: dict[str, set[str]] = {}               # user id -> custom folder names
        self._ids = itertools.count(1)
        # Called under the lock as (event, user id, message): "created" when a message appears in a
        # folder (added or moved in), "removed" when it leaves one (moved out). The push side
        # (devtools/fakegraph_push.py) turns these into change notifications and delta answers.
        self.listeners: list[Callable[[str, str, FakeMessage], None]] = []

    def _emit(self, event: str, user_id: str, msg: FakeMessage) -> None:
        for listener in self.listeners:
            listener(event, user_id, msg)

    def _box(self, user: str) -> dict[str, FakeMessage]:
        u = self._users.add(user)
        return self._boxes.setdefault(u.id, {})

    def new_message_id(self) -> str:
        return f"AAMkAGI2{next(self._ids):08d}{uuid.uuid4().hex[:12]}"

    def add(self, user: str, internet_message_id: str, folder: str = "inbox", *, subject: str = "",
            received: str | None = None, **fields: Any) -> str:
        """Put a message in ``folder``; ``fields`` are the richer FakeMessage fields (sender, to, ...)."""
        with self._lock:
            msg = FakeMessage(self.new_message_id(), internet_message_id, folder, subject,
                              received or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), **fields)
            self._box(user)[msg.id] = msg
            self.add_folder(user, folder)
            self._emit("created", self._users.add(user).id, msg)
            return msg.id

    def add_folder(self, user: str, name: str) -> str:
        """Create a (custom) folder; returns its id. Well-known folders always exist."""
        with self._lock:
            u = self._users.add(user)
            if name.lower() not in WELL_KNOWN_FOLDERS:
                self._folders.setdefault(u.id, set()).add(name)
            return folder_id(u.id, name)

    def folders(self, user_id: str) -> set[str]:
        with self._lock:
            return set(WELL_KNOWN_FOLDERS) | self._folders.get(user_id, set())

    def messages(self, user: str) -> list[FakeMessage]:
        with self._lock:
            u = self._users.get(user)
            return list(self._boxes.get(u.id, {}).values()) if u else []

    def find(self, user: str, internet_message_id: str) -> list[FakeMessage]:
        return [m for m in self.messages(user) if m.internet_message_id == internet_message_id]

    def folder_of(self, user: str, internet_message_id: str) -> str | None:
        found = self.find(user, internet_message_id)
        return found[0].folder if found else None

    def get(self, user_id: str, message_id: str) -> FakeMessage | None:
        with self._lock:
            return self._boxes.get(user_id, {}).get(message_id)

    def move(self, user_id: str, message_id: str, folder: str) -> FakeMessage | None:
        with self._lock:
            box = self._boxes.get(user_id, {})
            msg = box.pop(message_id, None)
            if msg is None:
                return None
            moved = dataclasses.replace(msg, id=self.new_message_id(), folder=folder)
            box[moved.id] = moved
            self._emit("removed", user_id, msg)
            self._emit("created", user_id, moved)
            return moved


def folder_id(user_id: str, name: str) -> str:
    """Opaque, stable folder id per mailbox (real ids are opaque too: never compare them to names)."""
    return "AQMkFolder" + uuid.uuid5(uuid.NAMESPACE_URL, f"folder:{user_id}:{name.lower()}").hex


class ConnectorStore:
    def __init__(self, lock: threading.RLock):
        self._lock = lock
        self._items: dict[str, dict[str, Any]] = {}

    def add(self, name: str, direction: str = "inbound", *, enabled: bool = True, **properties: Any) -> dict:
        if direction not in ("inbound", "outbound"):
            raise ValueError(f"connector direction must be inbound or outbound, not {direction!r}")
        with self._lock:
            item = {"Name": name, "Identity": name, "Enabled": enabled, "Direction": direction,
                    "Guid": str(uuid.uuid5(uuid.NAMESPACE_URL, "connector:" + name)), **properties}
            self._items[name.lower()] = item
            return item

    def get(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get(name.lower())

    def of(self, direction: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._items.values() if c["Direction"] == direction]


@dataclass
class _OutlookLimits:
    concurrent: int
    per_window: int
    window: float
    retry_after: float


class _Drop(Exception):
    """Internal: close the connection without answering (an injected reset)."""


class _Reply(Exception):
    """Internal: answer with this status, headers and body."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def graph_error(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code or _CODES.get(status, "Error"), "message": message,
                      "innerError": {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                                     "request-id": str(uuid.uuid4()),
                                     "client-request-id": str(uuid.uuid4())}}}


def _error(status: int, message: str, code: str | None = None, retry_after: float | None = None) -> _Reply:
    headers = {"Retry-After": _fmt_seconds(retry_after)} if retry_after is not None else {}
    return _Reply(status, graph_error(status, message, code), headers)


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_USER = r"/v1\.0/users/(?P<user>[^/]+)"
_MAILBOX_PATH = re.compile(_USER + r"/(messages|mailFolders)")


class FakeGraph:
    """See the module docstring."""

    def __init__(self, *, tenant_id: str = DEFAULT_TENANT_ID, hunting: Hunting | None = None,
                 on_remediate: OnRemediate | None = None, host: str = "127.0.0.1", port: int = 0):
        self.tenant_id = tenant_id
        self.hunting = hunting
        self.on_remediate = on_remediate
        self._lock = threading.RLock()
        self.users = UserStore(self._lock)
        self.mailboxes = MailboxStore(self._lock, self.users)
        self.connectors = ConnectorStore(self._lock)
        self.remediations: list[Remediation] = []
        self.compromised: set[str] = set()
        self.revoked: list[str] = []
        self.app_roles: set[str] = set()   # Entra roles assigned to the app's identity (privileged targets)
        self._local = threading.local()      # the request being handled, per server thread
        self._calls: list[Call] = []
        self._faults: list[Fault] = []
        self._limits: _OutlookLimits | None = None
        self._inflight: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        self._window: dict[str, list[float]] = {}
        self._host, self._port = host, port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        from devtools.fakegraph_push import PushService  # its own module; it imports this one

        self.push = PushService(self)
        # Push routes first: .../messages/delta must not be read as a message id.
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Any]]] = [*self.push.routes(),
            ("POST", re.compile(r"^/v1\.0/security/(microsoft\.graph\.security\.)?runHuntingQuery$"),
             self._hunt),
            ("POST", re.compile(r"^/v1\.0/security/collaboration/analyzedEmails/"
                                r"(microsoft\.graph\.security\.)?remediate$"), self._remediate),
            ("GET", re.compile(_USER + r"/messages$"), self._list_messages),
            ("GET", re.compile(_USER + r"/messages/(?P<msg>[^/]+)$"), self._get_message),
            ("POST", re.compile(_USER + r"/messages/(?P<msg>[^/]+)/(microsoft\.graph\.)?move$"), self._move),
            ("GET", re.compile(_USER + r"/mailFolders/(?P<folder>[^/]+)$"), self._get_folder),
            ("GET", re.compile(_USER + r"/mailFolders/(?P<folder>[^/]+)/messages$"), self._list_messages),
            ("GET", re.compile(_USER + r"/mailFolders/(?P<folder>[^/]+)/messages/(?P<msg>[^/]+)$"),
             self._get_message),
            ("POST", re.compile(_USER + r"/(microsoft\.graph\.)?revokeSignInSessions$"), self._revoke),
            ("GET", re.compile(_USER + r"$"), self._get_user),
            ("PATCH", re.compile(_USER + r"$"), self._patch_user),
            ("POST", re.compile(r"^/v1\.0/identityProtection/riskyUsers/"
                                r"(microsoft\.graph\.)?confirmCompromised$"),
             self._confirm_compromised),
            ("GET", re.compile(r"^/v1\.0/identityProtection/riskyUsers/(?P<rid>[0-9a-fA-F-]{36})$"),
             self._get_risky_user),
            ("POST", re.compile(r"^/adminapi/beta/(?P<tenant>[^/]+)/InvokeCommand$"), self._invoke_command),
        ]

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> FakeGraph:
        handler = type("_Handler", (_Handler,), {"fake": self})
        self._server = _Server((self._host, self._port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fakegraph", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.push.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeGraph:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def root_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeGraph is not running (use it as a context manager or call start())")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1.0"

    @property
    def exchange_base_url(self) -> str:
        return self.root_url + "/adminapi/beta"

    # --- recording --------------------------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str, path_regex: str) -> list[Call]:
        pattern = re.compile(path_regex)
        return [c for c in self.calls if method in ("*", c.method) and pattern.search(c.path)]

    def peak_overlap(self, method: str, path_regex: str) -> int:
        """Most of the matching calls that were in flight at the same moment (any endpoint, any user)."""
        edges = sorted((t, d) for c in self.calls_to(method, path_regex)
                       for t, d in ((c.started, 1), (c.finished or float("inf"), -1)))
        peak = level = 0
        for _, d in edges:   # at equal times -1 sorts first: one call ending as another starts is not overlap
            level += d
            peak = max(peak, level)
        return peak

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    # --- faults and limits ------------------------------------------------------------------------------

    def inject(self, method: str, path_regex: str, status: int, *, times: int | None = 1,
               retry_after: float | None = None, code: str | None = None, message: str | None = None,
               latency: float = 0.0, applied: bool = False, body_contains: str | None = None) -> Fault:
        if not 400 <= status <= 599:
            raise ValueError(f"inject: status must be an HTTP error (400-599), not {status}")
        if times is not None and times < 1:
            raise ValueError("inject: times must be at least 1 (or None for forever)")
        fault = Fault(method.upper(), re.compile(path_regex), status, times, retry_after, code, message,
                      latency, applied, body_contains)
        with self._lock:
            self._faults.append(fault)
        return fault

    def inject_reset(self, method: str, path_regex: str, *, times: int | None = 1, applied: bool = False,
                     latency: float = 0.0, body_contains: str | None = None) -> Fault:
        """The connection is closed with no reply (the client sees a reset / "server disconnected"), before
        the request is processed, or after it with ``applied=True``: the caller cannot tell which, as with
        a real connection lost in flight. Recorded with status 0."""
        if times is not None and times < 1:
            raise ValueError("inject_reset: times must be at least 1 (or None for forever)")
        fault = Fault(method.upper(), re.compile(path_regex), None, times, latency=latency, applied=applied,
                      body_contains=body_contains, reset=True)
        with self._lock:
            self._faults.append(fault)
        return fault

    def add_latency(self, seconds: float, method: str = "*", path_regex: str = ".*",
                    times: int | None = None, body_contains: str | None = None) -> Fault:
        if seconds < 0:
            raise ValueError("add_latency: seconds must not be negative")
        fault = Fault(method.upper(), re.compile(path_regex), None, times, latency=seconds,
                      body_contains=body_contains)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def outlook_limits(self, concurrent: int | None = 4, per_window: int = 10_000, window: float = 600.0,
                       retry_after: float = 1.0) -> None:
        """Enforce Outlook's per-mailbox limits on mailbox endpoints (``concurrent=None`` turns them off)."""
        with self._lock:
            self._limits = None if concurrent is None else _OutlookLimits(concurrent, per_window, window,
                                                                           retry_after)

    def peak_concurrency(self, user: str) -> int:
        u = self.users.get(user)
        with self._lock:
            return self._peak.get(u.id if u else user.lower(), 0)

    # --- dispatch (called on the server's threads) --------------------------------------------------------

    def _handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> _Reply:
        split = urlsplit(raw_path)
        path = unquote(split.path)
        query = {k: v for k, v in parse_qsl(split.query, keep_blank_values=True)}
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                parsed = None
        call = Call(method, path, query, parsed, body, headers, started=time.monotonic())
        self._local.headers = headers
        with self._lock:
            self._calls.append(call)
        mailbox = self._mailbox_key(path)
        entered = False
        try:
            if mailbox is not None:
                limited = self._enter_mailbox(mailbox)
                entered = limited is None
                if limited is not None:
                    call.status = limited.status
                    return limited
            fault, latency = self._pick_fault(method, path, body)
            if latency:
                time.sleep(latency)
            if fault is not None and fault.reset:
                if fault.applied:
                    self._route(method, path, query, parsed, body)
                call.status = 0
                raise _Drop()
            if fault is not None and not fault.applied:
                reply = _error(fault.status or 500, fault.message or f"injected {fault.status}", fault.code,
                               fault.retry_after)
            else:
                reply = self._route(method, path, query, parsed, body)
                if fault is not None:
                    reply = _error(fault.status or 500, fault.message or f"injected {fault.status}",
                                   fault.code, fault.retry_after)
            call.status = reply.status
            return reply
        finally:
            call.finished = time.monotonic()
            if entered and mailbox is not None:
                with self._lock:
                    self._inflight[mailbox] -= 1

    def _pick_fault(self, method: str, path: str, body: bytes = b"") -> tuple[Fault | None, float]:
        latency = 0.0
        with self._lock:
            for f in self._faults:
                if not f.answers and f.matches(method, path, body):
                    f.hits += 1
                    latency += f.latency
            for f in self._faults:
                if f.answers and f.matches(method, path, body):
                    f.hits += 1
                    return f, latency + f.latency
        return None, latency

    def _mailbox_key(self, path: str) -> str | None:
        m = _MAILBOX_PATH.match(path)
        if m is None:
            return None
        u = self.users.get(m.group("user"))
        return u.id if u else m.group("user").lower()

    def _enter_mailbox(self, key: str) -> _Reply | None:
        with self._lock:
            limits = self._limits
            now = time.monotonic()
            if limits is not None:
                if self._inflight.get(key, 0) >= limits.concurrent:
                    # Outlook: 4 concurrent requests per app per mailbox, then 429 with Retry-After
                    # (https://learn.microsoft.com/graph/throttling-limits#outlook-service-limits); the body
                    # is the one clients report (learn.microsoft.com/answers/questions/734143).
                    return _error(429, "Application is over its MailboxConcurrency limit.",
                                  "ApplicationThrottled", limits.retry_after)
                recent = [t for t in self._window.get(key, []) if now - t < limits.window]
                if len(recent) >= limits.per_window:
                    self._window[key] = recent
                    return _error(429, "Application is over its IncomingBytes/Requests limit.",
                                  "ApplicationThrottled", limits.retry_after)
                recent.append(now)
                self._window[key] = recent
            self._inflight[key] = self._inflight.get(key, 0) + 1
            self._peak[key] = max(self._peak.get(key, 0), self._inflight[key])
        return None

    def _route(self, method: str, path: str, query: dict[str, str], body: Any, raw: bytes) -> _Reply:
        for m, pattern, fn in self._routes:
            match = pattern.match(path)
            if match and m == method:
                try:
                    return fn(match, query, body)
                except _Reply as reply:
                    return reply
        if any(p.match(path) for _, p, _ in self._routes):
            return _error(405, f"{method} is not allowed on {path}", "MethodNotAllowed")
        return _error(400, f"Resource not found for the segment in {path}", "BadRequest")

    # --- Graph: hunting and Defender remediation -----------------------------------------------------------

    def _hunt(self, _m: re.Match[str], _q: dict[str, str], body: Any) -> _Reply:
        body = _object(body)
        query = _key(body, "Query")
        if not isinstance(query, str) or not query.strip():
            raise _error(400, "Query is required.", "BadRequest")
        timespan = _key(body, "Timespan")
        if self.hunting is None:
            raise _error(400, "This fake has no hunting handler.", "BadRequest")
        try:
            answer = self.hunting(query, timespan)
        except GraphFault as fault:
            raise _error(fault.status, fault.message, fault.code, fault.retry_after) from None
        except Exception as exc:   # the handler is test/demo code (the local engine): a 500 names it
            raise _error(500, f"hunting handler failed: {type(exc).__name__}: {exc}") from None
        if isinstance(answer, dict):   # a whole response body, as given (malformed-response tests)
            return _Reply(200, answer)
        schema, rows = answer
        # "Results can return up to 100,000 rows" (https://learn.microsoft.com/defender-xdr/api-advanced-hunting,
        # quotas): the service cuts longer results without saying so, and so does this fake.
        rows = list(rows)[:HUNTING_MAX_ROWS]
        cols = [c if isinstance(c, dict) else {"name": c[0], "type": c[1]} for c in schema]
        return _Reply(200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#"
                                              "microsoft.graph.security.huntingQueryResults",
                            "schema": cols, "results": rows})

    def _remediate(self, _m: re.Match[str], _q: dict[str, str], body: Any) -> _Reply:
        body = _object(body)
        action = body.get("action")
        if action not in REMEDIATION_ACTIONS:
            raise _error(400, f"Invalid action {action!r}.", "BadRequest")
        if body.get("severity") not in REMEDIATION_SEVERITIES:
            raise _error(400, f"Invalid severity {body.get('severity')!r}.", "BadRequest")
        if not isinstance(body.get("displayName"), str) or not body["displayName"].strip():
            raise _error(400, "displayName is required.", "BadRequest")
        emails = body.get("analyzedEmails")
        if not isinstance(emails, list) or not emails:
            raise _error(400, "analyzedEmails must be a non-empty list.", "BadRequest")
        for e in emails:
            if not (isinstance(e, dict) and e.get("networkMessageId") and e.get("recipientEmailAddress")):
                raise _error(400, "Each analyzed email needs networkMessageId and recipientEmailAddress.",
                             "BadRequest")
        bulk = str(uuid.uuid4())
        location = (f'https://security.microsoft.com/action-center/history?filters={{"bulkId":["{bulk}"]}}'
                    f"&tid={self.tenant_id}")
        pairs = [{"networkMessageId": e["networkMessageId"],
                  "recipientEmailAddress": e["recipientEmailAddress"]} for e in emails]
        with self._lock:
            self.remediations.append(Remediation(bulk, action, pairs, body, location))
        if self.on_remediate is not None:
            try:
                self.on_remediate(action, pairs)
            except Exception as exc:   # the hook is test/demo code: surface its failure as a 500
                raise _error(500, f"on_remediate hook failed: {exc}", "InternalServerError") from None
        return _Reply(202, None, {"Location": location})

    # --- Graph: mailboxes ---------------------------------------------------------------------------------

    def _user(self, m: re.Match[str]) -> FakeUser:
        user = self.users.get(m.group("user"))
        if user is None:
            raise _error(404, f"Resource '{m.group('user')}' does not exist or one of its queried reference-"
                              "property objects are not present.", "Request_ResourceNotFound")
        return user

    def _message_json(self, user: FakeUser, msg: FakeMessage, select: str | None = None) -> dict[str, Any]:
        from devtools.fakegraph_push import message_json

        return message_json(user.id, msg, select)

    def _list_messages(self, m: re.Match[str], q: dict[str, str], _b: Any) -> _Reply:
        user = self._user(m)
        flt = q.get("$filter")
        msgs = self.mailboxes.messages(user.id)
        folder = m.groupdict().get("folder")
        if folder is None:
            # /messages lists the user's folders "including the Deleted Items and Clutter folders"
            # (https://learn.microsoft.com/graph/api/user-list-messages), not Recoverable Items, which is
            # outside them: a soft-deleted message is only listed through that folder.
            msgs = [x for x in msgs if x.folder not in HIDDEN_FOLDERS]
        else:
            name = self._resolve_folder(user, folder)
            if name is None:
                raise _error(404, "The specified folder could not be found in the store.",
                             "ErrorItemNotFound")
            msgs = [x for x in msgs if x.folder.lower() == name.lower()]
        if flt is not None:
            fm = re.fullmatch(r"\s*internetMessageId\s+eq\s+'((?:[^']|'')*)'\s*", flt)
            if fm is None:
                raise _error(400, f"Invalid filter clause: {flt}", "ErrorInvalidUrlQueryFilter")
            wanted = fm.group(1).replace("''", "'")
            msgs = [x for x in msgs if x.internet_message_id == wanted]
        ctx = f"https://graph.microsoft.com/v1.0/$metadata#users('{user.id}')/messages"
        select = q.get("$select")
        return _Reply(200, {"@odata.context": ctx,
                            "value": [self._message_json(user, x, select) for x in msgs]})

    def _get_message(self, m: re.Match[str], q: dict[str, str], _b: Any) -> _Reply:
        """``GET /users/{id}/messages/{id}`` and ``.../mailFolders/{folder}/messages/{id}`` ($select honoured;
        the item id alone names the message, as Exchange item ids are mailbox-wide)."""
        user = self._user(m)
        folder = m.groupdict().get("folder")
        if folder is not None and self._resolve_folder(user, folder) is None:
            raise _error(404, "The specified folder could not be found in the store.", "ErrorItemNotFound")
        msg = self.mailboxes.get(user.id, m.group("msg"))
        if msg is None:
            raise _error(404, "The specified object was not found in the store.", "ErrorItemNotFound")
        return _Reply(200, self._message_json(user, msg, q.get("$select")))

    def _resolve_folder(self, user: FakeUser, ref: str) -> str | None:
        if ref.lower() in WELL_KNOWN_FOLDERS:
            return ref.lower()
        names = self.mailboxes.folders(user.id)
        return next((n for n in names if folder_id(user.id, n) == ref), None)

    def _move(self, m: re.Match[str], _q: dict[str, str], body: Any) -> _Reply:
        user = self._user(m)
        body = _object(body)
        dest = _key(body, "destinationId")
        if not isinstance(dest, str) or not dest:
            raise _error(400, "destinationId is required.", "ErrorInvalidRequest")
        folder = self._resolve_folder(user, dest)
        if folder is None:
            raise _error(404, "The specified folder could not be found in the store.", "ErrorItemNotFound")
        moved = self.mailboxes.move(user.id, m.group("msg"), folder)
        if moved is None:
            raise _error(404, "The specified object was not found in the store.", "ErrorItemNotFound")
        return _Reply(201, self._message_json(user, moved))

    def _get_folder(self, m: re.Match[str], _q: dict[str, str], _b: Any) -> _Reply:
        user = self._user(m)
        name = self._resolve_folder(user, m.group("folder"))
        if name is None:
            raise _error(404, "The specified folder could not be found in the store.", "ErrorItemNotFound")
        return _Reply(200, {"id": folder_id(user.id, name), "displayName": name, "wellKnownName": name})

    # --- Graph: accounts ------------------------------------------------------------------------------------

    def _get_user(self, m: re.Match[str], q: dict[str, str], _b: Any) -> _Reply:
        return _Reply(200, self._user(m).selected(q.get("$select")))

    def _refuse_privileged(self, user: FakeUser) -> None:
        """403 for a sensitive action on an admin the app's roles do not cover (module doc)."""
        if user.privileged_role is None:
            return
        allowed = PRIVILEGED_ACTORS.get(user.privileged_role, TOP_PRIVILEGED_ACTORS)
        if not self.app_roles & allowed:
            raise _error(403, "Insufficient privileges to complete the operation.",
                         "Authorization_RequestDenied")

    def _patch_user(self, m: re.Match[str], _q: dict[str, str], body: Any) -> _Reply:
        user = self._user(m)
        body = _object(body)
        if "accountEnabled" in body:
            self._refuse_privileged(user)
            if not isinstance(body["accountEnabled"], bool):
                raise _error(400, "Invalid value for accountEnabled.", "Request_BadRequest")
            with self._lock:
                user.account_enabled = body["accountEnabled"]
        return _Reply(204)

    def _revoke(self, m: re.Match[str], _q: dict[str, str], _b: Any) -> _Reply:
        user = self._user(m)
        self._refuse_privileged(user)
        with self._lock:
            self.revoked.append(user.id)
            user.sign_in_sessions_valid_from = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return _Reply(200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Edm.Boolean",
                            "value": True})

    def _confirm_compromised(self, _m: re.Match[str], _q: dict[str, str], body: Any) -> _Reply:
        ids = _object(body).get("userIds")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise _error(400, "userIds must be a non-empty list of user object ids.", "BadRequest")
        unknown = [i for i in ids if self.users.get(i) is None or self.users.get(i).id != i]  # type: ignore[union-attr]
        if unknown:
            raise _error(400, f"Invalid user ids: {', '.join(unknown)}.", "BadRequest")
        with self._lock:
            self.compromised.update(ids)
        return _Reply(204)

    def _get_risky_user(self, m: re.Match[str], _q: dict[str, str], _b: Any) -> _Reply:
        """riskyUser Get (https://learn.microsoft.com/graph/api/riskyuser-get; shape from the riskyUser
        resource page). A user never flagged risky is not in the collection: 404, as for any missing item."""
        rid = m.group("rid").lower()
        user = self.users.get(rid)
        with self._lock:
            confirmed = rid in {c.lower() for c in self.compromised}
        if user is None or not confirmed:
            raise _error(404, f"Resource '{rid}' does not exist.", "ResourceNotFound")
        return _Reply(200, {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#identityProtection/riskyUsers/$entity",
            "id": user.id, "isDeleted": False, "isProcessing": False, "riskLevel": "high",
            "riskState": "confirmedCompromised", "riskDetail": "adminConfirmedUserCompromised",
            "riskLastUpdatedDateTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "userDisplayName": user.display_name, "userPrincipalName": user.user_principal_name})

    # --- Exchange admin API ---------------------------------------------------------------------------------

    def _invoke_command(self, m: re.Match[str], _q: dict[str, str], body: Any) -> _Reply:
        if m.group("tenant").lower() != self.tenant_id.lower():
            raise _error(404, f"Tenant {m.group('tenant')} not found.", "NotFound")
        anchor = (getattr(self._local, "headers", None) or {}).get("x-anchormailbox", "")
        if not _ANCHOR.fullmatch(anchor) or (anchor.upper().startswith("APP:")
                                             and anchor.split("@", 1)[1].lower() != self.tenant_id.lower()):
            # Undocumented: every public client anchors on the arbitration mailbox, so the fake refuses a
            # request that does not (a client the service would route anywhere must not pass the tests).
            raise _error(400, f"X-AnchorMailbox must name the arbitration mailbox, not {anchor!r}.",
                         "BadRequest")
        cmd = _object(_object(body).get("CmdletInput"))
        name = cmd.get("CmdletName")
        params = cmd.get("Parameters") or {}
        if not isinstance(params, dict):
            raise _error(400, "Parameters must be an object.", "BadRequest")
        verbs = {"Get-InboundConnector": ("get", "inbound"), "Get-OutboundConnector": ("get", "outbound"),
                 "Set-InboundConnector": ("set", "inbound"), "Set-OutboundConnector": ("set", "outbound")}
        if name not in verbs:
            raise _error(400, f"The term '{name}' is not recognized as a cmdlet this fake serves.",
                         "BadRequest")
        verb, direction = verbs[name]
        ctx = "https://outlook.office365.com/adminapi/beta/$metadata#Collection(Exchange.GenericHashTable)"
        identity = params.get("Identity")
        if verb == "get" and identity is None:
            return _Reply(200, {"@odata.context": ctx, "value": self.connectors.of(direction)})
        if not isinstance(identity, str) or not identity:
            raise _error(400, "Parameter Identity is required.", "BadRequest")
        item = self.connectors.get(identity)
        if item is None or item["Direction"] != direction:
            raise _cmdlet_not_found(identity)
        if verb == "get":
            return _Reply(200, {"@odata.context": ctx, "value": [dict(item)]})
        extra = set(params) - {"Identity", "Enabled", "Confirm"}
        if extra:
            raise _error(400, f"This fake only sets Enabled, not {sorted(extra)}.", "BadRequest")
        if "Enabled" in params:
            if not isinstance(params["Enabled"], bool):
                raise _error(400, "Cannot convert value to type System.Boolean for parameter 'Enabled'.",
                             "BadRequest")
            with self._lock:
                item["Enabled"] = params["Enabled"]
        return _Reply(200, {"@odata.context": ctx, "value": []})


_ANCHOR = re.compile(r"(?i)(APP|UPN):SystemMailbox\{bb558c35-97f1-4cb9-8ff7-d53741dc928c\}@[^@\s]+")
_NOT_FOUND_TYPE = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"


def _cmdlet_not_found(identity: str) -> _Reply:
    """A cmdlet's "object not found" as InvokeCommand answers it: a generic envelope; the cmdlet's message
    and type in ``details[].message`` (JSON text) and ``innererror.internalexception`` (the fields CIPP's
    New-ExoRequest.ps1 reads, in KelvinTegelaar/CIPP-API)."""
    text = f"The operation couldn't be performed because object '{identity}' couldn't be found on " \
           "'AM0PR01A011DC01.EURPR01A011.PROD.OUTLOOK.COM'."
    detail = json.dumps({"Message": text, "TypeName": _NOT_FOUND_TYPE, "StackTrace": None,
                         "InnerError": None})
    return _Reply(400, {"error": {
        "code": "BadRequest", "message": "Error executing cmdlet",
        "details": [{"code": "Context", "target": "", "message": detail}],
        "innererror": {"message": "Error executing cmdlet",
                       "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                       "internalexception": {"message": text, "type": _NOT_FOUND_TYPE}}}})


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _error(400, "The request body must be a JSON object.", "BadRequest")
    return body


def _key(body: dict[str, Any], name: str) -> Any:
    """Graph matches property names case-insensitively (SDK: ``DestinationId``, docs: ``destinationId``)."""
    for k, v in body.items():
        if k.lower() == name.lower():
            return v
    return None


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a client opening many connections at once (the
    # mailbox strategy across 100 mailboxes) has SYNs dropped and retried after 1 s, 3 s, ...
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        # A client that closes its keep-alive connection (an event loop that ended) is not an error.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK adds ~40 ms to
    # every response (25 requests a second at most). TCP_NODELAY removes that stall.
    disable_nagle_algorithm = True
    fake: FakeGraph

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read fake.calls instead
        return

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            reply = self.fake._handle(self.command, self.path, headers, body)
        except _Drop:
            self.close_connection = True   # no status line, no headers: the client sees the connection end
            return
        data = b"" if reply.body is None else json.dumps(reply.body).encode("utf-8")
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        if data:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve


def seed_mailboxes(fake: FakeGraph, items: Iterable[tuple[str, str, str]]) -> None:
    """Convenience for the demo: ``(user, internet_message_id, folder)`` triples."""
    for user, imid, folder in items:
        fake.mailboxes.add(user, imid, folder)
