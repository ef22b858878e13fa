"""What the notification endpoint makes of Graph's POST (issue 15): pure, no I/O.

Two kinds of request reach ``api/push/notifications``
(https://learn.microsoft.com/graph/change-notifications-delivery-webhooks):

* the validation handshake: ``POST ?validationToken=...`` when a subscription is created (both its
  notificationUrl and lifecycleNotificationUrl); answered 200 ``text/plain`` with the URL-decoded token
  within 10 seconds, nothing queued;
* a ``changeNotificationCollection``: ``{"value": [changeNotification, ...]}``, change notifications and
  lifecycle notifications (an item with ``lifecycleEvent``,
  https://learn.microsoft.com/graph/change-notifications-lifecycle-events) mixed in one batch. Graph
  wants a 2xx within 3 seconds, so the endpoint validates and queues (one ``push-notification/1``
  message per item, push/contract.py) and answers 202; the push worker does the rest.

Each item is checked on its own: an item that fails (clientState, tenant, resource, changeType, shape)
is dropped and reported as a :class:`Rejected` naming the field, never the value; the rest of the batch
is still queued. A body that is not a collection at all is a :class:`BadBody` (400/413).
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.request import RequestInvalid, loads_bounded
from push.contract import LIFECYCLE_EVENTS, SCHEMA

# Graph's batches are small JSON documents (a change notification without resource data is under 1 KB);
# 1 MiB holds a thousand of them and keeps a hostile body from costing more than it is worth.
MAX_BODY_BYTES = 1024 * 1024
MAX_ITEMS = 1000
# The token is opaque and Graph may change its format; today it is a sentence of about 100 characters.
MAX_TOKEN_CHARS = 1024
# Graph "never sends any value containing HTML or JavaScript code" (the page above): a token with markup
# or control characters is not Graph's, and is never echoed.
_TOKEN_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029<>\"'`]")
VALIDATION_TOKEN = "validationToken"

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
GUID_RE = re.compile(_GUID)
# A Graph message id is URL-safe base64 (A-Z a-z 0-9 - _ and = padding), about 150 characters.
MESSAGE_ID_RE = re.compile(r"[A-Za-z0-9_=-]{1,512}")
# The resource of a message notification: "Users/{user id}/Messages/{message id}" as Graph sends it, or
# "users/{user id}@{tenant id}/messages/{message id}" as the delivery page's example shows it.
RESOURCE_RE = re.compile(rf"(?i:users)/(?P<user>{_GUID})(?:@(?P<tenant>{_GUID}))?"
                         r"/(?i:messages)/(?P<message>[A-Za-z0-9_=-]{1,512})")
_TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,7})?(?:Z|[+-]\d{2}:\d{2})")
_SAFE_TEXT = re.compile(r"[\x21-\x7e]{1,256}")   # printable ASCII, no spaces: ids and etags
# changeNotification's documented properties
# (https://learn.microsoft.com/graph/api/resources/changenotification); anything else is not Graph's.
ITEM_KEYS = frozenset({"@odata.type", "changeType", "clientState", "encryptedContent", "id", "lifecycleEvent",
                       "resource", "resourceData", "subscriptionExpirationDateTime", "subscriptionId",
                       "tenantId"})
RESOURCE_DATA_KEYS = frozenset({"@odata.type", "@odata.id", "@odata.etag", "id"})
COLLECTION_KEYS = frozenset({"value", "validationTokens"})
# Subscriptions are created for new mail only (push/subscriptions.py): anything else is not ours.
CHANGE_TYPE = "created"
_DEDUP_KEYS = ("kind", "subscription_id", "message_id", "lifecycle_event")
_NOTIFICATION_TYPE, _MESSAGE_TYPE = "microsoft.graph.changenotification", "microsoft.graph.message"


class BadBody(ValueError):
    """The request is not a notification collection (or handshake) at all: answered 400 (413 if too big)."""

    def __init__(self, field_name: str, message: str, status: int = 400):
        super().__init__(f"{field_name}: {message}")
        self.field, self.message, self.status = field_name, message, status


@dataclass(frozen=True)
class Rejected:
    """One item dropped: where (its index), which field and why. Never the item's values: a forged item's
    content is the attacker's, and a real one's clientState is the secret."""

    index: int
    field: str
    reason: str
    subscription_id: str | None = None   # only once it has been checked to be a GUID

    def describe(self) -> str:
        sub = f" (subscription {self.subscription_id})" if self.subscription_id else ""
        return f"value[{self.index}].{self.field}: {self.reason}{sub}"


@dataclass(frozen=True)
class Intake:
    """What to do with one POST: answer the handshake, or queue ``messages`` (JSON strings)."""

    validation_token: str | None = None
    messages: tuple[str, ...] = ()
    rejected: tuple[Rejected, ...] = ()
    duplicates: int = 0
    notifications: list[dict[str, Any]] = field(default_factory=list, repr=False, compare=False)


def validation_token(params: Mapping[str, str]) -> str | None:
    """The handshake's token (the host has URL-decoded it), or None when this is not a handshake.

    Only ``validationToken`` may be in the query string: our notificationUrl has no query of its own, and
    anything else a caller adds is refused rather than ignored."""
    unknown = sorted(k for k in params if k != VALIDATION_TOKEN)
    if unknown:
        raise BadBody(f"query.{unknown[0][:64]}", f"unknown query parameter (only {VALIDATION_TOKEN})")
    if VALIDATION_TOKEN not in params:
        return None
    token = params[VALIDATION_TOKEN]
    if not token:
        raise BadBody(f"query.{VALIDATION_TOKEN}", "empty")
    if len(token) > MAX_TOKEN_CHARS:
        raise BadBody(f"query.{VALIDATION_TOKEN}", f"longer than {MAX_TOKEN_CHARS} characters")
    if _TOKEN_FORBIDDEN.search(token):
        raise BadBody(f"query.{VALIDATION_TOKEN}", "control characters or markup (Graph never sends them)")
    return token


def parse(body: bytes, params: Mapping[str, str], *, client_state: str, tenant_id: str | None,
          now: datetime) -> Intake:
    """The handshake's token, or one queue message per valid notification in the body.

    ``client_state`` is RESPONDER_PUSH_CLIENT_STATE; ``tenant_id`` (RESPONDER_TENANT_ID) when set must be
    every item's tenantId (one app per tenant). Raises :class:`BadBody` when the request as a whole is
    not one Graph would send."""
    token = validation_token(params)
    if token is not None:
        return Intake(validation_token=token)
    if len(body) > MAX_BODY_BYTES:
        raise BadBody("body", f"larger than {MAX_BODY_BYTES} bytes", status=413)
    if not body.strip():
        raise BadBody("body", f"empty (expected a change notification collection or ?{VALIDATION_TOKEN}=)")
    try:
        doc = loads_bounded(body)
    except RequestInvalid as exc:
        raise BadBody("body", str(exc).removeprefix("(message): ")) from None
    if not isinstance(doc, dict):
        raise BadBody("body", "expected a JSON object (a change notification collection)")
    unknown = sorted(set(doc) - COLLECTION_KEYS)
    if unknown:
        raise BadBody(unknown[0][:64], "unknown property (a collection has value and validationTokens)")
    items = doc.get("value")
    if not isinstance(items, list):
        raise BadBody("value", "required: an array of change notifications")
    if len(items) > MAX_ITEMS:
        raise BadBody("value", f"more than {MAX_ITEMS} notifications in one request")
    tokens = doc.get("validationTokens", [])
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise BadBody("validationTokens", "expected an array of strings")

    secret = client_state.encode("utf-8")
    expected_tenant = tenant_id.lower() if tenant_id else None
    received_at = now.isoformat().replace("+00:00", "Z")
    messages: list[str] = []
    notes: list[dict[str, Any]] = []
    rejected: list[Rejected] = []
    seen: set[tuple[str, ...]] = set()
    duplicates = 0
    for index, item in enumerate(items):
        try:
            note = _item(item, secret, expected_tenant)
        except _ItemError as err:
            rejected.append(Rejected(index, err.field, err.reason, err.subscription_id))
            continue
        key = tuple(str(note.get(k, "")) for k in _DEDUP_KEYS)
        if key in seen:       # the same notification twice in one batch: once is enough
            duplicates += 1
            continue
        seen.add(key)
        note = {"schema": SCHEMA, **note, "received_at": received_at}
        notes.append(note)
        messages.append(json.dumps(note, separators=(",", ":")))
    return Intake(messages=tuple(messages), rejected=tuple(rejected), duplicates=duplicates,
                  notifications=notes)


class _ItemError(ValueError):
    def __init__(self, field_name: str, reason: str, subscription_id: str | None = None):
        super().__init__(f"{field_name}: {reason}")
        self.field, self.reason, self.subscription_id = field_name, reason, subscription_id


def _item(item: Any, secret: bytes, expected_tenant: str | None) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _ItemError("(item)", "expected a JSON object")
    # clientState first: an item that does not carry the secret is not examined any further.
    state = item.get("clientState")
    if not isinstance(state, str):
        raise _ItemError("clientState", "missing")
    if not hmac.compare_digest(state.encode("utf-8"), secret):
        raise _ItemError("clientState", "does not match RESPONDER_PUSH_CLIENT_STATE")
    unknown = sorted(set(item) - ITEM_KEYS)
    if unknown:
        raise _ItemError(unknown[0][:64], "unknown property (not a documented changeNotification property)")
    sub = item.get("subscriptionId")
    if not isinstance(sub, str) or not GUID_RE.fullmatch(sub):
        raise _ItemError("subscriptionId", "expected a GUID")
    sub = sub.lower()

    def fail(field_name: str, reason: str) -> _ItemError:
        return _ItemError(field_name, reason, sub)

    tenant = item.get("tenantId")
    if not isinstance(tenant, str) or not GUID_RE.fullmatch(tenant):
        raise fail("tenantId", "expected a GUID")
    tenant = tenant.lower()
    if expected_tenant is not None and tenant != expected_tenant:
        raise fail("tenantId", "not this app's tenant (RESPONDER_TENANT_ID)")
    expiry = item.get("subscriptionExpirationDateTime")
    if not isinstance(expiry, str) or not _TIMESTAMP_RE.fullmatch(expiry):
        raise fail("subscriptionExpirationDateTime", "expected an ISO 8601 timestamp")
    if "id" in item and not (isinstance(item["id"], str) and _SAFE_TEXT.fullmatch(item["id"])):
        raise fail("id", "expected an id of at most 256 printable characters")
    odata_type = item.get("@odata.type", _NOTIFICATION_TYPE)
    if not isinstance(odata_type, str) or odata_type.lstrip("#").lower() != _NOTIFICATION_TYPE:
        raise fail("@odata.type", "not a changeNotification")
    if "encryptedContent" in item:
        # Our subscriptions never ask for resource data (the worker reads the message itself).
        raise fail("encryptedContent", "not expected: subscriptions do not include resource data")

    if "lifecycleEvent" in item:
        event = item["lifecycleEvent"]
        if event not in LIFECYCLE_EVENTS:
            raise fail("lifecycleEvent", f"expected one of {', '.join(LIFECYCLE_EVENTS)}")
        # A lifecycle notification is about the subscription, not a resource: nothing else is taken from it.
        return {"kind": "lifecycle", "subscription_id": sub, "lifecycle_event": event, "tenant_id": tenant}

    if item.get("changeType") != CHANGE_TYPE:
        raise fail("changeType", f"expected {CHANGE_TYPE} (subscriptions are for new mail only)")
    resource = item.get("resource")
    m = RESOURCE_RE.fullmatch(resource) if isinstance(resource, str) else None
    if m is None:
        raise fail("resource", "expected Users/{user id}/Messages/{message id}")
    if m.group("tenant") and m.group("tenant").lower() != tenant:
        raise fail("resource", "names another tenant than tenantId")
    user_id, message_id = m.group("user").lower(), m.group("message")
    _resource_data(item.get("resourceData"), user_id, message_id, fail)
    return {"kind": "change", "subscription_id": sub, "change_type": CHANGE_TYPE,
            "resource": f"Users/{user_id}/Messages/{message_id}", "user_id": user_id,
            "message_id": message_id, "tenant_id": tenant}


def _resource_data(data: Any, user_id: str, message_id: str, fail: Any) -> None:
    """resourceData is optional; when present it must describe the same message as ``resource``."""
    if data is None:
        return
    if not isinstance(data, dict):
        raise fail("resourceData", "expected an object")
    unknown = sorted(set(data) - RESOURCE_DATA_KEYS)
    if unknown:
        raise fail(f"resourceData.{unknown[0][:64]}", "unknown property")
    if "id" in data and data["id"] != message_id:
        raise fail("resourceData.id", "not the message in resource")
    if "@odata.id" in data:
        m = RESOURCE_RE.fullmatch(data["@odata.id"]) if isinstance(data["@odata.id"], str) else None
        if m is None or m.group("user").lower() != user_id or m.group("message") != message_id:
            raise fail("resourceData.@odata.id", "not the message in resource")
    odata_type = data.get("@odata.type", _MESSAGE_TYPE)
    if not isinstance(odata_type, str) or odata_type.lstrip("#").lower() != _MESSAGE_TYPE:
        raise fail("resourceData.@odata.type", "not a message")
    if "@odata.etag" in data and not (isinstance(data["@odata.etag"], str)
                                      and _SAFE_TEXT.fullmatch(data["@odata.etag"])):
        raise fail("resourceData.@odata.etag", "expected an etag of at most 256 printable characters")
