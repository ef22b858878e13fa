"""The push side of the fake Graph: subscriptions, change/lifecycle notifications, message delta, rich mail.

Owned by ``FakeGraph`` as ``fake.push`` (devtools/fakegraph.py registers the routes). Every behaviour
follows the Microsoft page cited beside it; the one deliberate deviation is that ``http://`` notification
URLs on loopback (127.x, localhost, ::1) are accepted, where Graph requires HTTPS
(https://learn.microsoft.com/graph/api/resources/subscription, notificationUrl: "must make use of the
HTTPS protocol"), so a local function host can receive the notifications.

Public API (``fake.push``)::

    fake.push.configure(*, manual=None, time_scale=None, drop_rate=None, seed=None, retry_delays=None,
                        post_timeout=None, validation_timeout=None, latency=None, transport=None)
        -> PushService
        manual=True: the clock moves only with advance(); manual=False: real time x (1 / time_scale)
        (time_scale=0.01: 3 simulated minutes pass in 1.8 s) with a background thread delivering.
        drop_rate: share of change notifications dropped (seeded by seed); latency: rng -> seconds
        (default devtools.pushlatency.draw_latency); retry_delays: simulated seconds between attempts
        when the endpoint fails (default 60, 300, 900), then the notification is discarded.
        transport: (url, headers, body, timeout) -> (status, content type, text) replaces HTTP (e.g. to
        call a function app's handler in-process); raise TimeoutError / ConnectionError for no answer.
    fake.push.now() -> datetime                 (the simulated clock, UTC; use it as the client's clock)
    fake.push.advance(seconds) -> None          (manual: move the clock, deliver what falls due, in order)
    fake.push.wait_idle(timeout=10.0) -> bool   (scaled: until nothing is pending but expiries)
    fake.push.subscriptions -> list[FakeSubscription]     fake.push.get(subscription_id)
    fake.push.require_reauthorization(subscription_id, *, pause_after=None)
        sends reauthorizationRequired; with pause_after (simulated s) change delivery then pauses
        (changes are lost) until POST /subscriptions/{id}/reauthorize or a PATCH renewal
    fake.push.remove_subscription(subscription_id)    (service-side removal: subscriptionRemoved)
    fake.push.stats -> dict[str, int]   delivered, dropped, failed, lost, missed, reauthorization_required,
                                        subscription_removed, lifecycle_failed
    fake.push.notices -> list[Notice]   every change/lifecycle notification and what became of it
    fake.push.validations -> list[Validation]   every validation handshake
    fake.push.deliver_inbound(user, *, sender, subject="", to=None, cc=(), envelope_sender=None,
                              links=(), html=None, network_message_id=None, internet_message_id=None,
                              conversation_id=None, folder="inbox", headers=()) -> FakeMessage
    fake.push.add_sent(user, *, to, subject="", links=(), html=None, reply_to=None, cc=(),
                       network_message_id=None, internet_message_id=None) -> FakeMessage  (sentitems)

Endpoints (relative to ``/v1.0``): ``POST/GET /subscriptions``, ``GET/PATCH/DELETE /subscriptions/{id}``,
``POST /subscriptions/{id}/reauthorize``, ``GET /users/{id}/mailFolders/{folder}/messages/delta`` (also
``delta()``, the SDK's form). Message JSON (``message_json``) is used by every message endpoint.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import httpx

from devtools.fakegraph import HIDDEN_FOLDERS, FakeMessage, FakeUser, _error, _object, _Reply, folder_id
from devtools.pushlatency import draw_latency

if TYPE_CHECKING:
    from devtools.fakegraph import FakeGraph

# --- limits and shapes, each from the page cited ---------------------------------------------------------

# "Outlook message, event, contact: 10,080 minutes (under 7 days)"; 1,440 with resource data
# (https://learn.microsoft.com/graph/change-notifications-overview#subscription-lifetime).
MAX_MESSAGE_MINUTES = 10_080
# clientState: "The maximum length is 255 characters" (https://learn.microsoft.com/graph/api/resources/
# changenotification, clientState; the subscription page says the same in its current version).
MAX_CLIENT_STATE = 255
# "The client must respond ... within 10 seconds" (https://learn.microsoft.com/graph/
# change-notifications-delivery-webhooks#notificationurl-validation).
VALIDATION_TIMEOUT_S = 10.0
# Notifications are "published using an HTTP client with a 3-second timeout"; without a 2xx Graph
# "tries to resend the change notification multiple times, for up to 4 hours" and then discards it
# (same page, "Processing the change notification" and "Throttling"). The schedule is not documented:
# three retries over 21 minutes (simulated) keep tests short while staying inside the 4 hours.
POST_TIMEOUT_S = 3.0
RETRY_DELAYS_S = (60.0, 300.0, 900.0)
CHANGE_TYPES = ("created", "updated", "deleted")
TLS_VERSIONS = ("v1_0", "v1_1", "v1_2", "v1_3")
# The token Graph sends, as clients log it (microsoftgraph/msgraph-sdk-go#237): opaque, with spaces and
# colons, so an endpoint that echoes it still URL-encoded fails as it would on the service.
_TOKEN = "Validation: Testing client application reachability for subscription Request-Id: {}"
_NOT_200 = ("Subscription validation request failed. Notification endpoint must respond with 200 OK to "
            "validation request.")
# Writable subscription properties (https://learn.microsoft.com/graph/api/subscription-post-subscriptions).
_CREATE_KEYS = {"changetype", "notificationurl", "resource", "expirationdatetime", "clientstate",
                "lifecyclenotificationurl", "latestsupportedtlsversion", "includeresourcedata",
                "encryptioncertificate", "encryptioncertificateid", "notificationurlappid",
                "notificationqueryoptions", "@odata.type"}
# Update: "expirationDateTime" (renew) and/or "notificationUrl" (https://learn.microsoft.com/graph/api/
# subscription-update); lifecycleNotificationUrl cannot be added by an update (webhooks-lifecycle page).
_PATCH_KEYS = {"expirationdatetime", "notificationurl", "@odata.type"}
# users/{id}/mailFolders('inbox')/messages, /users/{id}/mailFolders/inbox/messages, users/{id}/messages
# (https://learn.microsoft.com/graph/outlook-change-notifications-overview, supported resource paths).
_RESOURCE = re.compile(r"/?users/(?P<user>[^/()']+)/"
                       r"(?:mailfolders(?:\('(?P<qf>[^'/]+)'\)|/(?P<pf>[^/()']+))/)?messages", re.IGNORECASE)
APPLICATION_ID = "24a3f6d0-5b1e-4c8a-9e7f-3d2c1b0a9f8e"   # the fake's app registration
# How the fake reaches an endpoint: (url, headers, body, timeout) -> (status, content type, text), raising
# TimeoutError or ConnectionError when there is no answer. Default: HTTP (httpx); a test may plug in a
# function app's handler directly.
Transport = Callable[[str, dict[str, str], bytes, float], tuple[int, str, str]]
_DELTA_PAGE = 10            # Graph's default page for messages; Prefer: odata.maxpagesize overrides it


def _iso(when: datetime) -> str:
    """DateTimeOffset as Graph writes it (UTC, 7 fractional digits, Z)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


# --- messages as Graph returns them -----------------------------------------------------------------------

# The message resource's properties (https://learn.microsoft.com/graph/api/resources/message#properties);
# internetMessageHeaders and uniqueBody are "Returned only on applying a $select query option".
DEFAULT_PROPERTIES = ("id", "createdDateTime", "lastModifiedDateTime", "changeKey", "categories",
                      "receivedDateTime", "sentDateTime", "hasAttachments", "internetMessageId", "subject",
                      "bodyPreview", "importance", "parentFolderId", "conversationId", "conversationIndex",
                      "isDeliveryReceiptRequested", "isReadReceiptRequested", "isRead", "isDraft", "webLink",
                      "inferenceClassification", "body", "sender", "from", "toRecipients", "ccRecipients",
                      "bccRecipients", "replyTo", "flag")
SELECT_ONLY_PROPERTIES = ("internetMessageHeaders", "uniqueBody")


def _recipient(addr: tuple[str, str] | None) -> dict[str, Any] | None:
    if addr is None:
        return None
    return {"emailAddress": {"name": addr[0] or addr[1], "address": addr[1]}}


def _etag(msg: FakeMessage) -> str:
    return 'W/"CQAAABYAAAA' + hashlib.sha256(msg.id.encode()).hexdigest()[:20] + '"'


def message_json(user_id: str, msg: FakeMessage, select: str | None = None) -> dict[str, Any]:
    """One message as ``GET /users/{id}/messages/{id}`` answers it: the default properties, or ``id`` plus
    those in ``$select`` (a name the type does not have is 400, as on the service)."""
    text = re.sub(r"<[^>]+>", " ", msg.body) if msg.body_type == "html" else msg.body
    body = {"contentType": msg.body_type, "content": msg.body}
    every: dict[str, Any] = {
        "id": msg.id, "createdDateTime": msg.received, "lastModifiedDateTime": msg.received,
        "changeKey": _etag(msg)[3:-1], "categories": [], "receivedDateTime": msg.received,
        "sentDateTime": msg.sent or msg.received, "hasAttachments": False,
        "internetMessageId": msg.internet_message_id, "subject": msg.subject,
        "bodyPreview": " ".join(text.split())[:255], "importance": "normal",
        "parentFolderId": folder_id(user_id, msg.folder), "conversationId": msg.conversation_id or None,
        "conversationIndex": None, "isDeliveryReceiptRequested": False, "isReadReceiptRequested": False,
        "isRead": False, "isDraft": False,
        "webLink": f"https://outlook.office365.com/owa/?ItemID={msg.id}&exvsurl=1&viewmodel=ReadMessageItem",
        "inferenceClassification": "focused", "body": body,
        "sender": _recipient(msg.sender), "from": _recipient(msg.from_ or msg.sender),
        "toRecipients": [_recipient(a) for a in msg.to], "ccRecipients": [_recipient(a) for a in msg.cc],
        "bccRecipients": [], "replyTo": [], "flag": {"flagStatus": "notFlagged"},
        "internetMessageHeaders": [{"name": n, "value": v} for n, v in msg.headers], "uniqueBody": body,
    }
    out: dict[str, Any] = {"@odata.etag": _etag(msg)}
    if not select:
        out.update((k, every[k]) for k in DEFAULT_PROPERTIES)
        return out
    by_lower = {k.lower(): k for k in every}
    out["id"] = msg.id   # "The id property is always returned" (delta-query-messages; same for GET)
    for name in (p.strip() for p in select.split(",")):
        if not name:
            continue
        if name.lower() not in by_lower:
            raise _error(400, f"Could not find a property named '{name}' on type 'microsoft.graph.message'.",
                         "RequestBroker--ParseUri")
        out[by_lower[name.lower()]] = every[by_lower[name.lower()]]
    return out


def _address(value: str | tuple[str, str]) -> tuple[str, str]:
    """"Name <a@b>", "a@b" or (name, address) -> (name, address)."""
    if isinstance(value, tuple):
        return value
    m = re.fullmatch(r"\s*(.*?)\s*<([^<>]+)>\s*", value)
    return (m.group(1).strip('"'), m.group(2)) if m else ("", value.strip())


def _header_address(addr: tuple[str, str]) -> str:
    return f'"{addr[0]}" <{addr[1]}>' if addr[0] else f"<{addr[1]}>"


def _html(subject: str, links: Iterable[str]) -> str:
    anchors = "".join(f'<p><a href="{escape(u, quote=True)}">{escape(u)}</a></p>' for u in links)
    return f"<html><head></head><body><p>{escape(subject)}</p>{anchors}</body></html>"


# --- state --------------------------------------------------------------------------------------------------

@dataclass
class FakeSubscription:
    id: str
    resource: str                       # as the client sent it
    user_id: str
    folder: str | None                  # folder name (well-known or custom); None: every folder
    change_types: tuple[str, ...]
    notification_url: str
    expiration: datetime
    client_state: str | None = None
    lifecycle_url: str | None = None
    latest_tls: str = "v1_2"
    encryption_certificate_id: str | None = None
    creator_id: str = ""
    pause_at: datetime | None = None    # reauthorizationRequired not answered: delivery pauses from here

    def to_json(self) -> dict[str, Any]:
        """The subscription resource (https://learn.microsoft.com/graph/api/resources/subscription)."""
        return {"id": self.id, "resource": self.resource, "applicationId": APPLICATION_ID,
                "changeType": ",".join(self.change_types), "clientState": self.client_state,
                "notificationUrl": self.notification_url, "notificationQueryOptions": None,
                "lifecycleNotificationUrl": self.lifecycle_url, "expirationDateTime": _iso(self.expiration),
                "creatorId": self.creator_id, "includeResourceData": False,
                "latestSupportedTlsVersion": self.latest_tls, "encryptionCertificate": None,
                "encryptionCertificateId": self.encryption_certificate_id, "notificationUrlAppId": None}


@dataclass
class Notice:
    """One change or lifecycle notification and what became of it."""

    kind: str                           # "change" or "lifecycle"
    subscription_id: str
    url: str
    created: datetime                   # simulated time of the change (or of the lifecycle event)
    due: datetime                       # simulated time of the next attempt
    change_type: str | None = None
    user_id: str | None = None
    message_id: str | None = None
    lifecycle_event: str | None = None
    status: str = "pending"             # pending | delivered | dropped | failed | lost
    attempts: int = 0
    answers: list[int] = field(default_factory=list)   # HTTP status per attempt (0: no answer)
    delivered_at: datetime | None = None
    body: dict[str, Any] | None = None  # the last payload sent
    removed: FakeSubscription | None = field(default=None, repr=False)   # subscriptionRemoved: the gone one


@dataclass
class Validation:
    url: str
    token: str
    status: int                         # what the endpoint answered (0: no answer)
    body: str
    ok: bool


class _Clock:
    """Simulated UTC time: moved by advance() (manual) or real time divided by time_scale."""

    def __init__(self, start: datetime, *, manual: bool, time_scale: float):
        self.manual, self.time_scale = manual, time_scale
        self._start, self._t0, self._offset = start, time.monotonic(), 0.0

    def now(self) -> datetime:
        if self.manual:
            return self._start + timedelta(seconds=self._offset)
        return self._start + timedelta(seconds=(time.monotonic() - self._t0) / self.time_scale)

    def move_to(self, when: datetime) -> None:
        self._offset = max(self._offset, (when - self._start).total_seconds())

    def real_seconds_until(self, when: datetime) -> float:
        return (when - self.now()).total_seconds() * self.time_scale


class PushService:
    """See the module docstring."""

    def __init__(self, fake: FakeGraph):
        self._fake = fake
        self._lock = fake._lock
        self._cond = threading.Condition(self._lock)
        self._subs: dict[str, FakeSubscription] = {}
        self._heap: list[tuple[datetime, int, str, Any]] = []   # (due, seq, "notice"|"expire", payload)
        self._seq = itertools.count()
        self._log: dict[tuple[str, str], list[tuple[int, str, str]]] = {}   # (user, folder) -> events
        self._log_seq = itertools.count(1)
        self._tokens: dict[str, dict[str, Any]] = {}
        self.notices: list[Notice] = []
        self.validations: list[Validation] = []
        self.stats = {"delivered": 0, "dropped": 0, "failed": 0, "lost": 0, "missed": 0,
                      "reauthorization_required": 0, "subscription_removed": 0, "lifecycle_failed": 0}
        self.drop_rate = 0.0
        self.retry_delays: tuple[float, ...] = RETRY_DELAYS_S
        self.post_timeout = POST_TIMEOUT_S
        self.validation_timeout = VALIDATION_TIMEOUT_S
        self.latency: Callable[[random.Random], float] = draw_latency
        self._seed(0)
        self._clock = _Clock(datetime.now(UTC), manual=False, time_scale=1.0)
        self._http = httpx.Client(trust_env=False)   # loopback endpoints: never through a proxy
        self.transport: Transport | None = None
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._stopped = False
        self._busy = 0
        fake.mailboxes.listeners.append(self._on_mailbox)

    def _seed(self, seed: int) -> None:
        self._latency_rng = random.Random(f"latency:{seed}")
        self._drop_rng = random.Random(f"drop:{seed}")

    # --- configuration and clock --------------------------------------------------------------------------

    def configure(self, *, manual: bool | None = None, time_scale: float | None = None,
                  drop_rate: float | None = None, seed: int | None = None,
                  retry_delays: Iterable[float] | None = None, post_timeout: float | None = None,
                  validation_timeout: float | None = None,
                  latency: Callable[[random.Random], float] | None = None,
                  transport: Transport | None = None) -> PushService:
        with self._lock:
            if transport is not None:
                self.transport = transport
            if drop_rate is not None:
                if not 0.0 <= drop_rate <= 1.0:
                    raise ValueError(f"drop_rate must be within 0..1, not {drop_rate}")
                self.drop_rate = drop_rate
            if time_scale is not None and time_scale <= 0:
                raise ValueError(f"time_scale must be positive, not {time_scale}")
            if seed is not None:
                self._seed(seed)
            if retry_delays is not None:
                self.retry_delays = tuple(retry_delays)
            if post_timeout is not None:
                self.post_timeout = post_timeout
            if validation_timeout is not None:
                self.validation_timeout = validation_timeout
            if latency is not None:
                self.latency = latency
            if manual is not None or time_scale is not None:
                self._clock = _Clock(self._clock.now(),
                                     manual=self._clock.manual if manual is None else manual,
                                     time_scale=self._clock.time_scale if time_scale is None else time_scale)
            self._ensure_thread()
            self._cond.notify_all()
        return self

    def now(self) -> datetime:
        with self._lock:
            return self._clock.now()

    def _post(self, url: str, headers: dict[str, str], body: bytes, timeout: float) -> tuple[int, str, str]:
        """POST to an endpoint: (status, content type, text); TimeoutError or ConnectionError: no answer."""
        if self.transport is not None:
            return self.transport(url, headers, body, timeout)
        try:
            r = self._http.post(url, content=body, headers=headers, timeout=timeout)
        except httpx.TimeoutException as exc:
            raise TimeoutError(str(exc)) from None
        except httpx.HTTPError as exc:
            raise ConnectionError(str(exc)) from None
        return r.status_code, r.headers.get("content-type", ""), r.text

    def advance(self, seconds: float) -> None:
        """Manual clock: move ``seconds`` forward, carrying out (synchronously, in due order) every delivery,
        retry and expiry that falls due on the way. Blocks while it POSTs to the endpoints."""
        if seconds < 0:
            raise ValueError("advance: seconds must not be negative")
        with self._lock:
            if not self._clock.manual:
                raise RuntimeError("advance() needs the manual clock: configure(manual=True)")
            target = self._clock.now() + timedelta(seconds=seconds)
        while True:
            with self._lock:
                if not self._heap or self._heap[0][0] > target:
                    self._clock.move_to(target)
                    return
                due, _, kind, item = heapq.heappop(self._heap)
                self._clock.move_to(due)
            self._run(kind, item)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Scaled clock: wait (real seconds) until no notification is pending or being sent."""
        end = time.monotonic() + timeout
        with self._lock:
            while any(k == "notice" for _, _, k, _ in self._heap) or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def close(self) -> None:
        with self._lock:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    # --- scheduling ----------------------------------------------------------------------------------------

    def _schedule(self, due: datetime, kind: str, item: Any) -> None:
        """Under the lock."""
        heapq.heappush(self._heap, (due, next(self._seq), kind, item))
        self._ensure_thread()
        self._cond.notify_all()

    def _ensure_thread(self) -> None:
        """Under the lock: the scaled clock's delivery thread, started on first need."""
        if self._heap and not self._clock.manual and self._thread is None and not self._stopped:
            self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fakegraph-push-post")
            self._thread = threading.Thread(target=self._loop, name="fakegraph-push", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._stopped:
                    return
                if self._clock.manual or not self._heap:
                    self._cond.wait(0.5)
                    continue
                wait = self._clock.real_seconds_until(self._heap[0][0])
                if wait > 0:
                    self._cond.wait(min(wait, 0.5))
                    continue
                _, _, kind, item = heapq.heappop(self._heap)
                self._busy += 1
            try:
                assert self._pool is not None
                self._pool.submit(self._run_counted, kind, item)
            except RuntimeError:   # the pool shut down under us: close() is under way
                return

    def _run_counted(self, kind: str, item: Any) -> None:
        try:
            self._run(kind, item)
        finally:
            with self._lock:
                self._busy -= 1
                self._cond.notify_all()

    def _run(self, kind: str, item: Any) -> None:
        if kind == "expire":
            self._expire(item)
        else:
            self._attempt(item)

    # --- mailbox events -> change notifications ---------------------------------------------------------

    def _on_mailbox(self, event: str, user_id: str, msg: FakeMessage) -> None:
        """Called by MailboxStore under the lock: log for delta, notify matching subscriptions."""
        folder = msg.folder.lower()
        self._log.setdefault((user_id, folder), []).append((next(self._log_seq), event, msg.id))
        change = "created" if event == "created" else "deleted"
        now = self._clock.now()
        for sub in list(self._subs.values()):
            if sub.user_id != user_id or change not in sub.change_types:
                continue
            if sub.folder is None and folder in HIDDEN_FOLDERS:
                continue
            if sub.folder is not None and sub.folder.lower() != folder:
                continue
            notice = Notice("change", sub.id, sub.notification_url, now, now, change_type=change,
                            user_id=user_id, message_id=msg.id)
            self.notices.append(notice)
            if sub.pause_at is not None and now >= sub.pause_at:
                # Delivery paused by an unanswered reauthorizationRequired: "notifications about resource
                # changes that happen when the change notification delivery pauses ... are lost"
                # (https://learn.microsoft.com/graph/change-notifications-lifecycle-events).
                notice.status = "lost"
                self.stats["lost"] += 1
                continue
            delay = timedelta(seconds=self.latency(self._latency_rng))
            if self._drop_rng.random() < self.drop_rate:
                notice.status = "dropped"
                self.stats["dropped"] += 1
                self._lifecycle(sub, "missed", now + delay)
                continue
            notice.due = now + delay
            self._schedule(notice.due, "notice", notice)

    def _lifecycle(self, sub: FakeSubscription, event: str, due: datetime) -> None:
        """Queue a lifecycle notification; "Existing subscriptions without a lifecycleNotificationUrl property
        don't receive the lifecycle notifications" (change-notifications-lifecycle-events)."""
        if sub.lifecycle_url is None:
            return
        notice = Notice("lifecycle", sub.id, sub.lifecycle_url, self._clock.now(), due, lifecycle_event=event)
        self.notices.append(notice)
        self._schedule(due, "notice", notice)

    def _payload(self, notice: Notice, sub: FakeSubscription) -> dict[str, Any]:
        item: dict[str, Any] = {"subscriptionId": sub.id,
                                "subscriptionExpirationDateTime": _iso(sub.expiration)}
        if notice.kind == "change":
            # changeNotification with Outlook resourceData (https://learn.microsoft.com/graph/
            # change-notifications-delivery-webhooks#change-notification-example, .../resources/resourcedata)
            path = f"Users/{notice.user_id}/Messages/{notice.message_id}"
            item.update({"changeType": notice.change_type, "resource": path,
                         "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "@odata.id": path,
                                          "@odata.etag": 'W/"CQAAABYAAAA'
                                          + hashlib.sha256(str(notice.message_id).encode()).hexdigest()[:20]
                                          + '"',
                                          "id": notice.message_id}})
        else:
            # Lifecycle notification structure (change-notifications-lifecycle-events).
            item["lifecycleEvent"] = notice.lifecycle_event
        if sub.client_state is not None:
            item["clientState"] = sub.client_state
        item["tenantId"] = self._fake.tenant_id
        return {"value": [item]}

    def _attempt(self, notice: Notice) -> None:
        with self._lock:
            sub = self._subs.get(notice.subscription_id) or notice.removed
            if sub is None:
                notice.status = "lost"           # the subscription is gone: nothing is sent for it
                if notice.kind == "change":
                    self.stats["lost"] += 1
                return
            if notice.kind == "change" and sub.pause_at is not None and self._clock.now() >= sub.pause_at:
                notice.status = "lost"
                self.stats["lost"] += 1
                return
            body = self._payload(notice, sub)
            notice.body = body
            notice.attempts += 1
            url = notice.url
        try:
            status = self._post(url, {"Content-Type": "application/json; charset=utf-8"},
                                json.dumps(body).encode("utf-8"), self.post_timeout)[0]
        except (TimeoutError, ConnectionError):
            status = 0
        with self._lock:
            notice.answers.append(status)
            now = self._clock.now()
            if 200 <= status < 300:
                notice.status, notice.delivered_at = "delivered", now
                if notice.kind == "change":
                    self.stats["delivered"] += 1
                else:
                    key = {"missed": "missed", "reauthorizationRequired": "reauthorization_required",
                           "subscriptionRemoved": "subscription_removed"}[str(notice.lifecycle_event)]
                    self.stats[key] += 1
                return
            if notice.attempts <= len(self.retry_delays):
                notice.due = now + timedelta(seconds=self.retry_delays[notice.attempts - 1])
                self._schedule(notice.due, "notice", notice)
                return
            if notice.kind == "change":
                # Discarded after the retries: the service tells the app through a `missed` lifecycle event
                # ("some change notifications weren't delivered", change-notifications-lifecycle-events).
                notice.status = "failed"
                self.stats["failed"] += 1
                self._lifecycle(sub, "missed", now)
            else:
                notice.status = "failed"
                self.stats["lifecycle_failed"] += 1

    def _expire(self, sub_id: str) -> None:
        with self._lock:
            sub = self._subs.get(sub_id)
            if sub is None or sub.expiration > self._clock.now():
                return   # deleted, or renewed since this expiry was scheduled
        self.remove_subscription(sub_id)

    # --- on-demand lifecycle events -------------------------------------------------------------------------

    @property
    def subscriptions(self) -> list[FakeSubscription]:
        with self._lock:
            return list(self._subs.values())

    def get(self, subscription_id: str) -> FakeSubscription | None:
        with self._lock:
            return self._subs.get(subscription_id)

    def require_reauthorization(self, subscription_id: str, *, pause_after: float | None = None) -> None:
        """Send reauthorizationRequired now; with ``pause_after`` (simulated seconds) change delivery pauses
        from then on until the app reauthorizes or renews ("eventually change notification delivery pauses,
        until you take the required action", change-notifications-lifecycle-events)."""
        with self._lock:
            sub = self._subs[subscription_id]
            now = self._clock.now()
            if pause_after is not None:
                sub.pause_at = now + timedelta(seconds=pause_after)
            self._lifecycle(sub, "reauthorizationRequired", now)

    def remove_subscription(self, subscription_id: str) -> None:
        """The service removes the subscription (expiry or a change in access) and sends subscriptionRemoved
        ("alert you when Microsoft Graph has removed a subscription", change-notifications-lifecycle-events).
        """
        with self._lock:
            sub = self._subs.pop(subscription_id, None)
            if sub is None or sub.lifecycle_url is None:
                return
            now = self._clock.now()
            notice = Notice("lifecycle", sub.id, sub.lifecycle_url, now, now,
                            lifecycle_event="subscriptionRemoved", removed=sub)
            self.notices.append(notice)
            self._schedule(now, "notice", notice)

    # --- mail helpers --------------------------------------------------------------------------------------

    def deliver_inbound(self, user: str, *, sender: str | tuple[str, str], subject: str = "",
                        to: Iterable[str | tuple[str, str]] | None = None,
                        cc: Iterable[str | tuple[str, str]] = (), envelope_sender: str | None = None,
                        links: Iterable[str] = (), html: str | None = None,
                        network_message_id: str | None = None, internet_message_id: str | None = None,
                        conversation_id: str | None = None, folder: str = "inbox",
                        headers: Iterable[tuple[str, str]] = ()) -> FakeMessage:
        """An external mail as Exchange delivers it to ``user``'s Inbox: the envelope sender in Return-Path
        (https://learn.microsoft.com/exchange/mail-flow-best-practices/message-headers: "Return-Path"), the
        network message id in X-MS-Exchange-Organization-Network-Message-Id (the NetworkMessageId that
        EmailEvents carries), From/To as given, an HTML body with the links. Fires the subscriptions."""
        owner = self._fake.users.add(user)
        frm = _address(sender)
        rcpts = [_address(a) for a in (to if to is not None else [owner.user_principal_name])]
        ccs = [_address(a) for a in cc]
        links = list(links)
        nmid = network_message_id or str(uuid.uuid4())
        imid = internet_message_id or f"<{uuid.uuid4().hex}@{frm[1].rsplit('@', 1)[-1]}>"
        now = self.now()
        when = _iso(now)[:19] + "Z"
        hdrs = [("Return-Path", f"<{envelope_sender or frm[1]}>"),
                ("From", _header_address(frm)), ("To", ", ".join(_header_address(a) for a in rcpts))]
        if ccs:
            hdrs.append(("Cc", ", ".join(_header_address(a) for a in ccs)))
        hdrs += [("Subject", subject), ("Date", format_datetime(now)), ("Message-ID", imid),
                 ("Content-Type", 'text/html; charset="utf-8"'), ("MIME-Version", "1.0"),
                 ("X-MS-Exchange-Organization-Network-Message-Id", nmid), *headers]
        return self._put(owner, imid, folder, subject=subject, received=when, sender=frm, to=tuple(rcpts),
                         cc=tuple(ccs), body=html if html is not None else _html(subject, links),
                         body_type="html", headers=tuple(hdrs),
                         conversation_id=conversation_id or self._conversation(imid))

    def add_sent(self, user: str, *, to: Iterable[str | tuple[str, str]], subject: str = "",
                 links: Iterable[str] = (), html: str | None = None, reply_to: FakeMessage | None = None,
                 cc: Iterable[str | tuple[str, str]] = (), network_message_id: str | None = None,
                 internet_message_id: str | None = None) -> FakeMessage:
        """A mail ``user`` sent (a reply when ``reply_to`` is given: same conversationId, In-Reply-To),
        as it sits in Sent Items. Fires sentitems subscriptions."""
        owner = self._fake.users.add(user)
        me = (owner.display_name, owner.mail or owner.user_principal_name)
        rcpts = [_address(a) for a in to]
        ccs = [_address(a) for a in cc]
        imid = internet_message_id or f"<{uuid.uuid4().hex}@{me[1].rsplit('@', 1)[-1]}>"
        now = self.now()
        when = _iso(now)[:19] + "Z"
        hdrs = [("From", _header_address(me)), ("To", ", ".join(_header_address(a) for a in rcpts))]
        if ccs:
            hdrs.append(("Cc", ", ".join(_header_address(a) for a in ccs)))
        hdrs += [("Subject", subject), ("Date", format_datetime(now)), ("Message-ID", imid)]
        if reply_to is not None:
            hdrs += [("In-Reply-To", reply_to.internet_message_id),
                     ("References", reply_to.internet_message_id)]
        hdrs += [("Content-Type", 'text/html; charset="utf-8"'), ("MIME-Version", "1.0"),
                 ("X-MS-Exchange-Organization-Network-Message-Id", network_message_id or str(uuid.uuid4()))]
        conversation = reply_to.conversation_id if reply_to is not None and reply_to.conversation_id \
            else self._conversation(imid)
        return self._put(owner, imid, "sentitems", subject=subject, received=when, sender=me, to=tuple(rcpts),
                         cc=tuple(ccs), body=html if html is not None else _html(subject, links),
                         body_type="html", headers=tuple(hdrs), conversation_id=conversation)

    @staticmethod
    def _conversation(seed: str) -> str:
        return "AAQkAGI2" + hashlib.sha256(seed.encode()).hexdigest()[:32]

    def _put(self, owner: FakeUser, imid: str, folder: str, **fields: Any) -> FakeMessage:
        mid = self._fake.mailboxes.add(owner.id, imid, folder, **fields)
        msg = self._fake.mailboxes.get(owner.id, mid)
        assert msg is not None
        return msg

    # --- routes --------------------------------------------------------------------------------------------

    def routes(self) -> list[tuple[str, re.Pattern[str], Callable[..., Any]]]:
        sid = r"^/v1\.0/subscriptions/(?P<sid>[^/]+)"
        user = r"^/v1\.0/users/(?P<user>[^/]+)"
        return [
            ("POST", re.compile(r"^/v1\.0/subscriptions$"), self._create),
            ("GET", re.compile(r"^/v1\.0/subscriptions$"), self._list),
            ("POST", re.compile(sid + r"/(microsoft\.graph\.)?reauthorize$"), self._reauthorize),
            ("GET", re.compile(sid + "$"), self._get),
            ("PATCH", re.compile(sid + "$"), self._patch),
            ("DELETE", re.compile(sid + "$"), self._delete),
            ("GET", re.compile(user + r"/mail[Ff]olders/(?P<folder>[^/]+)/messages/(microsoft\.graph\.)?"
                               r"delta(\(\))?$"), self._delta),
        ]

    def _sub_or_404(self, sid: str) -> FakeSubscription:
        sub = self._subs.get(sid)
        if sub is None:
            raise _error(404, f"The object was not found. Subscription '{sid}' does not exist.",
                         "ResourceNotFound")
        return sub

    @staticmethod
    def _keys(body: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
        """Property names are matched case-insensitively (as Graph does); an unknown one is 400."""
        out: dict[str, Any] = {}
        for k, v in body.items():
            if k.lower() not in allowed:
                raise _error(400, f"The property '{k}' does not exist on type "
                                  "'microsoft.graph.subscription'. Make sure to only use property names that "
                                  "are defined by the type.", "BadRequest")
            out[k.lower()] = v
        return out

    @staticmethod
    def _url(name: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise _error(400, f"{name} is required and must be a URL.", "ValidationError")
        parts = urlsplit(value)
        # Graph: "This URL must make use of the HTTPS protocol" (resources/subscription). The fake also takes
        # http:// on loopback: its one documented deviation (module doc).
        if parts.scheme == "https" and parts.hostname:
            return value
        if parts.scheme == "http" and _is_loopback(value):
            return value
        raise _error(400, f"{name} must use the HTTPS protocol: {value!r}.", "ValidationError")

    def _expiration(self, value: Any) -> datetime:
        if not isinstance(value, str):
            raise _error(400, "expirationDateTime is required.", "BadRequest")
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise _error(400, f"expirationDateTime is not a valid DateTimeOffset: {value!r}.",
                         "BadRequest") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        now = self._clock.now()
        if when <= now:
            raise _error(400, "Subscription expiration must be in the future.", "ExtensionError")
        if when - now > timedelta(minutes=MAX_MESSAGE_MINUTES):
            # The service's wording for this limit (microsoftgraph/microsoft-graph-docs-contrib#7726).
            raise _error(400, f"Subscription expiration can only be {MAX_MESSAGE_MINUTES} minutes in the "
                              "future.", "ExtensionError")
        return when

    def _resource(self, value: Any) -> tuple[str, str | None]:
        if not isinstance(value, str) or not value:
            raise _error(400, "resource is required.", "BadRequest")
        m = _RESOURCE.fullmatch(value)
        if m is None:
            raise _error(400, f"resource {value!r} is not a supported Outlook message resource "
                              "(users/{id}/mailFolders('{folder}')/messages or users/{id}/messages).",
                         "InvalidRequest")
        user = self._fake.users.get(m.group("user"))
        if user is None:
            raise _error(404, f"Resource '{m.group('user')}' does not exist or one of its queried reference-"
                              "property objects are not present.", "ResourceNotFound")
        ref = m.group("qf") or m.group("pf")
        if ref is None:
            return user.id, None
        name = self._fake._resolve_folder(user, ref)
        if name is None:
            raise _error(404, "The specified folder could not be found in the store.", "ErrorItemNotFound")
        return user.id, name

    def _handshake(self, url: str) -> None:
        """notificationUrl validation (https://learn.microsoft.com/graph/change-notifications-delivery-
        webhooks#notificationurl-validation): POST {url}?validationToken={token} (text/plain, empty body);
        the endpoint must answer 200, text/plain, the decoded token, within 10 s; else no subscription. The
        error codes and messages are the service's as clients report them
        (microsoftgraph/nodejs-webhooks-sample#158 and #350, microsoftgraph/msgraph-sdk-go#237)."""
        token = _TOKEN.format(uuid.uuid4())
        target = url + ("&" if urlsplit(url).query else "?") + urlencode({"validationToken": token})
        try:
            status, ctype, text = self._post(target, {"Content-Type": "text/plain; charset=utf-8",
                                                      "Accept": "text/plain"}, b"", self.validation_timeout)
        except TimeoutError:
            self.validations.append(Validation(url, token, 0, "", False))
            raise _error(400, "Subscription validation request timed out.", "InvalidRequest") from None
        except ConnectionError:
            self.validations.append(Validation(url, token, 0, "", False))
            raise _error(400, _NOT_200, "ValidationError") from None
        ctype = ctype.split(";")[0].strip().lower()
        ok = status == 200 and ctype == "text/plain" and text == token
        self.validations.append(Validation(url, token, status, text, ok))
        if status != 200:
            raise _error(400, _NOT_200, "ValidationError")
        if ctype != "text/plain":
            raise _error(400, "Subscription validation request failed. The response must have content type "
                              f"text/plain, not {ctype or 'none'!r}.", "ValidationError")
        if text != token:
            raise _error(400, "Subscription validation request failed. Response must exactly match "
                              "validationToken query parameter.", "InvalidRequest")

    def _create(self, _m: re.Match[str], _q: dict[str, str], body: Any) -> _Reply:
        """Create subscription (https://learn.microsoft.com/graph/api/subscription-post-subscriptions)."""
        b = self._keys(_object(body), _CREATE_KEYS)
        raw = b.get("changetype")
        kinds = [k.strip() for k in raw.split(",")] if isinstance(raw, str) else []
        if not kinds or any(k not in CHANGE_TYPES for k in kinds) or len(set(kinds)) != len(kinds):
            raise _error(400, f"changeType must be a comma-separated list of {', '.join(CHANGE_TYPES)}; "
                              f"got {raw!r}.", "BadRequest")
        url = self._url("notificationUrl", b.get("notificationurl"))
        lifecycle = b.get("lifecyclenotificationurl")
        if lifecycle is not None:
            lifecycle = self._url("lifecycleNotificationUrl", lifecycle)
        user_id, folder = self._resource(b.get("resource"))
        if b.get("includeresourcedata") not in (None, False):
            # Rich notifications need encryptionCertificate and cap the lifetime at 1,440 minutes
            # (change-notifications-with-resource-data); the fake does not encrypt, so it refuses them.
            raise _error(400, "includeResourceData is not supported by this fake (it does not encrypt "
                              "resource data).", "BadRequest")
        with self._lock:
            expiration = self._expiration(b.get("expirationdatetime"))
        state = b.get("clientstate")
        if state is not None and (not isinstance(state, str) or len(state) > MAX_CLIENT_STATE):
            raise _error(400, f"clientState must be a string of at most {MAX_CLIENT_STATE} characters.",
                         "BadRequest")
        tls = b.get("latestsupportedtlsversion") or "v1_2"
        if tls not in TLS_VERSIONS:
            raise _error(400, f"latestSupportedTlsVersion must be one of {', '.join(TLS_VERSIONS)}.",
                         "BadRequest")
        # Both URLs are validated ("you must validate both lifecycleNotificationUrl and notificationUrl",
        # change-notifications-lifecycle-events); outside the lock: the endpoint may call the fake.
        self._handshake(url)
        if lifecycle is not None:
            self._handshake(lifecycle)
        sub = FakeSubscription(str(uuid.uuid4()), b["resource"], user_id, folder, tuple(kinds), url,
                               expiration, state, lifecycle, tls, b.get("encryptioncertificateid"),
                               creator_id=str(uuid.uuid5(uuid.NAMESPACE_URL, "sp:" + APPLICATION_ID)))
        with self._lock:
            self._subs[sub.id] = sub
            self._schedule(sub.expiration, "expire", sub.id)
            out = sub.to_json()
        return _Reply(201, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
                            **out})

    def _list(self, _m: re.Match[str], _q: dict[str, str], _b: Any) -> _Reply:
        with self._lock:
            value = [s.to_json() for s in self._subs.values()]
        return _Reply(200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions",
                            "value": value})

    def _get(self, m: re.Match[str], _q: dict[str, str], _b: Any) -> _Reply:
        with self._lock:
            out = self._sub_or_404(m.group("sid")).to_json()
        return _Reply(200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
                            **out})

    def _patch(self, m: re.Match[str], _q: dict[str, str], body: Any) -> _Reply:
        """Renew (https://learn.microsoft.com/graph/api/subscription-update): 200 with the subscription;
        "renewing your subscription also reauthorizes" (change-notifications-lifecycle-events)."""
        b = self._keys(_object(body), _PATCH_KEYS)
        with self._lock:
            self._sub_or_404(m.group("sid"))
            expiration = self._expiration(b["expirationdatetime"]) if "expirationdatetime" in b else None
        url = self._url("notificationUrl", b["notificationurl"]) if "notificationurl" in b else None
        if url is not None:
            self._handshake(url)
        with self._lock:
            sub = self._sub_or_404(m.group("sid"))
            if expiration is not None:
                sub.expiration = expiration
                self._schedule(expiration, "expire", sub.id)
            if url is not None:
                sub.notification_url = url
            sub.pause_at = None
            out = sub.to_json()
        return _Reply(200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
                            **out})

    def _delete(self, m: re.Match[str], _q: dict[str, str], _b: Any) -> _Reply:
        """Delete (https://learn.microsoft.com/graph/api/subscription-delete): 204, no lifecycle event."""
        with self._lock:
            self._sub_or_404(m.group("sid"))
            del self._subs[m.group("sid")]
        return _Reply(204)

    def _reauthorize(self, m: re.Match[str], _q: dict[str, str], _b: Any) -> _Reply:
        """Reauthorize (https://learn.microsoft.com/graph/api/subscription-reauthorize): 204; the expiry
        stays as it was."""
        with self._lock:
            self._sub_or_404(m.group("sid")).pause_at = None
        return _Reply(204)

    # --- delta ------------------------------------------------------------------------------------------

    def _delta(self, m: re.Match[str], q: dict[str, str], _b: Any) -> _Reply:
        """message: delta (https://learn.microsoft.com/graph/api/message-delta and
        https://learn.microsoft.com/graph/delta-query-messages): a round of pages linked by @odata.nextLink
        ($skiptoken), ending in @odata.deltaLink ($deltatoken); the next round returns what changed since:
        messages created in the folder, and messages that left it as {"id", "@removed": {"reason":
        "deleted"}}. Query options are encoded in the tokens; Prefer: odata.maxpagesize sets the page."""
        user = self._fake._user(m)
        ref = m.group("folder")
        folder = self._fake._resolve_folder(user, ref)
        if folder is None:
            raise _error(404, "The specified folder could not be found in the store.", "ErrorItemNotFound")
        allowed = {"$select", "$skiptoken", "$deltatoken", "changeType", "$top"}
        extra = sorted(set(q) - allowed)
        if extra:
            raise _error(400, f"Query option(s) {', '.join(extra)} are not supported by this fake's delta "
                              f"(supported: {', '.join(sorted(allowed))}).", "BadRequest")
        page = self._page_size(q.get("$top"))
        with self._lock:
            token = q.get("$skiptoken") or q.get("$deltatoken")
            if token is not None:
                state = self._tokens.get(token)
                kind = "skip" if "$skiptoken" in q else "delta"
                if state is None or state["kind"] != kind or state["user"] != user.id \
                        or state["folder"] != folder.lower():
                    raise _error(400, "The sync state data is corrupt or otherwise invalid.",
                                 "ErrorInvalidSyncStateData")
                if kind == "delta":
                    state = self._round(user.id, folder.lower(), state["select"], state["change_type"],
                                        since=state["seq"])
            else:
                change_type = q.get("changeType")
                if change_type is not None and change_type not in CHANGE_TYPES:
                    raise _error(400, f"changeType must be one of {', '.join(CHANGE_TYPES)}.", "BadRequest")
                state = self._round(user.id, folder.lower(), q.get("$select"), change_type, since=None)
            items, rest = state["items"][:page], state["items"][page:]
            value = []
            for what, mid in items:
                if what == "removed":
                    value.append({"@odata.type": "#microsoft.graph.message", "id": mid,
                                  "@removed": {"reason": "deleted"}})
                    continue
                msg = self._fake.mailboxes.get(user.id, mid)
                # It may have left the folder since the round began.
                if msg is not None and msg.folder.lower() == folder.lower():
                    value.append({"@odata.type": "#microsoft.graph.message",
                                  **message_json(user.id, msg, state["select"])})
            link = f"{self._fake.base_url}/users/{user.id}/mailFolders/{ref}/messages/delta?"
            out: dict[str, Any] = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(message)"}
            if rest:
                tok = secrets.token_urlsafe(18)
                self._tokens[tok] = {**state, "kind": "skip", "items": rest}
                out["@odata.nextLink"] = f"{link}$skiptoken={tok}"   # token_urlsafe: no escaping
            else:
                tok = secrets.token_urlsafe(18)
                self._tokens[tok] = {"kind": "delta", "user": user.id, "folder": folder.lower(),
                                     "select": state["select"], "change_type": state["change_type"],
                                     "seq": state["seq"]}
                out["@odata.deltaLink"] = f"{link}$deltatoken={tok}"
            out["value"] = value
        return _Reply(200, out)

    def _page_size(self, top: str | None) -> int:
        prefer = (getattr(self._fake._local, "headers", None) or {}).get("prefer", "")
        size = _DELTA_PAGE
        pm = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer)
        if pm:
            size = int(pm.group(1))
        if top is not None:
            if not top.isdigit() or int(top) < 1:
                raise _error(400, f"$top must be a positive integer, not {top!r}.", "BadRequest")
            size = min(size, int(top))
        return max(size, 1)

    def _round(self, user_id: str, folder: str, select: str | None, change_type: str | None,
               since: int | None) -> dict[str, Any]:
        """Under the lock: the items of a round and the log position it ends at."""
        log = self._log.get((user_id, folder), [])
        seq = log[-1][0] if log else 0
        if since is None:
            # Initial round: every message in the folder ("an initial full synchronization").
            items = [("message", x.id) for x in self._fake.mailboxes.messages(user_id)
                     if x.folder.lower() == folder]
        else:
            net: dict[str, str] = {}
            for s, event, mid in log:
                if s <= since:
                    continue
                if event == "created":
                    net[mid] = "created"
                elif net.pop(mid, None) is None:   # created and gone within the gap: never seen, not reported
                    net[mid] = "removed"
            wanted = {"created": ("created",), "deleted": ("removed",), "updated": ()}.get(
                change_type or "", ("created", "removed"))
            items = [("message" if kind == "created" else "removed", mid) for mid, kind in net.items()
                     if kind in wanted]
        if select:   # an unknown property is refused on the first request, as the service does
            probe = FakeMessage("probe", "", folder)
            message_json(user_id, probe, select)
        return {"kind": "round", "user": user_id, "folder": folder, "select": select,
                "change_type": change_type, "items": items, "seq": seq}
