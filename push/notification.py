"""Decode and validate one ``push-notification/1`` queue message (push/contract.py) strictly.

The endpoint wrote it, but a queue is writable by anything holding the storage account's data role, so
the worker trusts nothing: a bounded size, exactly the fields of its kind (an unknown field, a missing
one or a wrong type is an error naming the field), ids in the character sets Graph uses, and the
resource consistent with the ids parsed from it. The error never echoes a value (logs are read by people;
values are attacker text).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from push.contract import KINDS, LIFECYCLE_EVENTS, SCHEMA

MAX_BODY_BYTES = 8 * 1024    # a notification pointer is a few hundred bytes
CHANGE_TYPES = ("created",)  # the only changeType the subscriptions ask for
_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# Graph subscription ids are GUIDs; user ids (Entra object ids) are GUIDs; message ids are Exchange REST
# ids: URL-safe base64 (letters, digits, - _ and = padding), a few hundred characters at most.
_SUBSCRIPTION_ID = re.compile(f"^{_GUID}$")
_USER_ID = re.compile(f"^{_GUID}$")
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9_=-]{1,512}$")
_TENANT_ID = re.compile(f"^{_GUID}$")
_RESOURCE = re.compile(r"^Users/(?P<user>[^/]+)/Messages/(?P<msg>[^/]+)$", re.IGNORECASE)

_REQUIRED = {
    "change": ("schema", "kind", "subscription_id", "change_type", "resource", "user_id", "message_id",
               "tenant_id", "received_at"),
    "lifecycle": ("schema", "kind", "subscription_id", "lifecycle_event", "tenant_id", "received_at"),
    "message": ("schema", "kind", "subscription_id", "user_id", "message_id", "received_at"),
    "sweep": ("schema", "kind", "rule", "campaign", "chain_id", "seq", "received_at"),
}
_OPTIONAL = {"change": (), "lifecycle": (), "message": ("tenant_id",), "sweep": ("tenant_id",)}
_RULE = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}\Z")    # a rule slug (detections/catalog.py file names)
_CAMPAIGN = re.compile(r"^[0-9a-f]{64}\Z")           # SHA-256 hex of the campaign key
_CHAIN = re.compile(r"^[0-9a-f]{32}\Z")
MAX_SEQ = 1_000_000


class NotificationInvalid(ValueError):
    """Not a valid push-notification/1 message; the text names the field, never its value."""


@dataclass(frozen=True)
class Notification:
    kind: str
    subscription_id: str
    received_at: datetime
    tenant_id: str = ""
    change_type: str = ""
    resource: str = ""
    user_id: str = ""
    message_id: str = ""
    lifecycle_event: str = ""
    rule: str = ""
    campaign: str = ""
    chain_id: str = ""
    seq: int = 0

    def describe(self) -> str:
        """Ids only, for logs."""
        if self.kind == "sweep":
            return f"sweep {self.seq} of {self.rule}/{self.campaign[:16]} (chain {self.chain_id[:8]})"
        what = self.lifecycle_event if self.kind == "lifecycle" else f"message {self.message_id[-16:]}"
        return f"{self.kind} ({what}) of subscription {self.subscription_id}"


def parse_notification(body: str | bytes) -> Notification:
    raw = body.encode("utf-8") if isinstance(body, str) else body
    if len(raw) > MAX_BODY_BYTES:
        raise NotificationInvalid(f"(message): {len(raw)} bytes, more than {MAX_BODY_BYTES}")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise NotificationInvalid("(message): not JSON") from None
    if not isinstance(data, dict):
        raise NotificationInvalid("(message): not a JSON object")
    if data.get("schema") != SCHEMA:
        raise NotificationInvalid(f"schema: expected {SCHEMA}")
    kind = data.get("kind")
    if kind not in KINDS:
        raise NotificationInvalid(f"kind: expected one of {', '.join(KINDS)}")
    required, optional = _REQUIRED[kind], _OPTIONAL[kind]
    unknown = sorted(k for k in data if k not in required and k not in optional)
    if unknown:
        raise NotificationInvalid(f"{_name(unknown[0])}: unknown field for kind {kind}")
    for name in required:
        if name not in data:
            raise NotificationInvalid(f"{name}: missing")
    for name in data:
        if name == "seq":
            seq = data[name]
            if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
                raise NotificationInvalid(f"seq: expected an integer from 0 to {MAX_SEQ}")
        elif not isinstance(data[name], str):
            raise NotificationInvalid(f"{name}: expected a string")
    if "tenant_id" in data:
        _match(data, "tenant_id", _TENANT_ID)
    if kind == "sweep":
        _match(data, "rule", _RULE)
        _match(data, "campaign", _CAMPAIGN)
        _match(data, "chain_id", _CHAIN)
        return Notification(kind=kind, subscription_id="", received_at=_received_at(data["received_at"]),
                            tenant_id=data.get("tenant_id", "").lower(), rule=data["rule"],
                            campaign=data["campaign"], chain_id=data["chain_id"], seq=data["seq"])
    _match(data, "subscription_id", _SUBSCRIPTION_ID)
    fields: dict[str, Any] = {"kind": kind, "subscription_id": data["subscription_id"].lower(),
                              "received_at": _received_at(data["received_at"]),
                              "tenant_id": data.get("tenant_id", "").lower()}
    if kind == "lifecycle":
        if data["lifecycle_event"] not in LIFECYCLE_EVENTS:
            raise NotificationInvalid(f"lifecycle_event: expected one of {', '.join(LIFECYCLE_EVENTS)}")
        return Notification(**fields, lifecycle_event=data["lifecycle_event"])
    _match(data, "user_id", _USER_ID)
    _match(data, "message_id", _MESSAGE_ID)
    fields.update(user_id=data["user_id"].lower(), message_id=data["message_id"])
    if kind == "change":
        if data["change_type"] not in CHANGE_TYPES:
            raise NotificationInvalid(f"change_type: expected one of {', '.join(CHANGE_TYPES)}")
        m = _RESOURCE.match(data["resource"])
        if m is None or m["user"].lower() != fields["user_id"] or m["msg"] != data["message_id"]:
            raise NotificationInvalid("resource: not Users/{user_id}/Messages/{message_id} of this message")
        fields.update(change_type=data["change_type"], resource=data["resource"])
    return Notification(**fields)


def _name(field: str) -> str:
    """A field name fit for a log line (it is attacker text too)."""
    return field if re.fullmatch(r"[A-Za-z0-9_@.-]{1,64}", field) else "(a field)"


def _match(data: dict[str, Any], name: str, pattern: re.Pattern[str]) -> None:
    if not pattern.match(data[name]):
        raise NotificationInvalid(f"{name}: not a valid id")


def _received_at(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise NotificationInvalid("received_at: not an ISO 8601 date and time") from None
    if moment.tzinfo is None:
        raise NotificationInvalid("received_at: no time zone (expected UTC)")
    return moment
