"""push/notification.py: the push-notification/1 queue message, validated strictly (hostile input)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from push.notification import MAX_BODY_BYTES, NotificationInvalid, parse_notification

UID = "6F1E2D7C-9B10-4D0E-9A43-5B1F3F8E6C7A"
SUB = "7d1c0a1e-1111-4222-8333-944455556666"
TENANT = "00000000-0000-0000-0000-00000000abcd"
MID = "AAMkAGI2TAAA="


def change(**over: Any) -> dict[str, Any]:
    return {"schema": "push-notification/1", "kind": "change", "subscription_id": SUB,
            "change_type": "created", "resource": f"Users/{UID}/Messages/{MID}", "user_id": UID,
            "message_id": MID, "tenant_id": TENANT, "received_at": "2026-11-20T12:00:00Z", **over}


def parse(obj: Any) -> Any:
    return parse_notification(json.dumps(obj))


def test_a_change_notification_parses_with_ids_normalised() -> None:
    n = parse(change())
    assert (n.kind, n.subscription_id, n.user_id, n.message_id, n.tenant_id) == (
        "change", SUB, UID.lower(), MID, TENANT)
    assert n.received_at == datetime(2026, 11, 20, 12, tzinfo=UTC)
    assert parse_notification(json.dumps(change()).encode()).user_id == UID.lower()


def test_lifecycle_and_message_kinds() -> None:
    lc = parse({"schema": "push-notification/1", "kind": "lifecycle", "subscription_id": SUB,
                "lifecycle_event": "reauthorizationRequired", "tenant_id": TENANT,
                "received_at": "2026-11-20T12:00:00+00:00"})
    assert (lc.kind, lc.lifecycle_event) == ("lifecycle", "reauthorizationRequired")
    msg = parse({"schema": "push-notification/1", "kind": "message", "subscription_id": SUB, "user_id": UID,
                 "message_id": MID, "received_at": "2026-11-20T12:00:00Z"})
    assert (msg.kind, msg.message_id, msg.tenant_id) == ("message", MID, "")


@pytest.mark.parametrize(("obj", "field"), [
    (change(kind="delete"), "kind"),
    (change(kind=None), "kind"),
    (change(schema="push-notification/2"), "schema"),
    ({k: v for k, v in change().items() if k != "message_id"}, "message_id: missing"),
    (change(extra="x"), "extra: unknown field"),
    (change(**{"bad name\n": 1}), r"\(a field\): unknown field"),
    (change(lifecycle_event="missed"), "lifecycle_event: unknown field for kind change"),
    (change(user_id=7), "user_id: expected a string"),
    (change(subscription_id="not-a-guid"), "subscription_id: not a valid id"),
    (change(user_id="admin@contoso.com", resource=f"Users/admin@contoso.com/Messages/{MID}"), "user_id"),
    (change(message_id="../../me/sendMail", resource=f"Users/{UID}/Messages/../../me/sendMail"),
     "message_id"),
    (change(message_id="a" * 513), "message_id"),
    (change(tenant_id="contoso"), "tenant_id"),
    (change(change_type="deleted"), "change_type"),
    (change(resource=f"Users/{UID}/Messages/OTHER="), "resource"),
    (change(resource=f"Users/{SUB}/Messages/{MID}"), "resource"),
    (change(resource=f"Users/{UID}/Events/{MID}"), "resource"),
    (change(received_at="yesterday"), "received_at"),
    (change(received_at="2026-11-20T12:00:00"), "received_at: no time zone"),
    ({"schema": "push-notification/1", "kind": "lifecycle", "subscription_id": SUB,
      "lifecycle_event": "deleted", "tenant_id": TENANT, "received_at": "2026-11-20T12:00:00Z"},
     "lifecycle_event"),
    ([change()], r"\(message\): not a JSON object"),
])
def test_invalid_messages_name_the_field(obj: Any, field: str) -> None:
    with pytest.raises(NotificationInvalid, match=field):
        parse(obj)


@pytest.mark.parametrize("body", [b"\xff\xfe", b"{", b"[" * 100_000, "x" * (MAX_BODY_BYTES + 1)])
def test_garbage_and_oversized_bodies_are_invalid(body: Any) -> None:
    with pytest.raises(NotificationInvalid, match=r"\(message\)"):
        parse_notification(body)


def test_errors_never_echo_the_value() -> None:
    secret = "<script>alert(1)</script>"
    with pytest.raises(NotificationInvalid) as info:
        parse(change(subscription_id=secret))
    assert secret not in str(info.value)
