"""push/intake.py on its own (pure: bytes and query in, queue messages and rejections out). The HTTP function
around it is tested in tests/functions/test_push_endpoint.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from push.intake import BadBody, parse

NOW = datetime(2026, 12, 2, 5, 0, 1, 250000, tzinfo=UTC)
SECRET = "k" * 40
TENANT = "84bd8158-6d4d-4958-8b9f-9d6445542f95"
USER = "0f7e5d4c-3b2a-4190-8877-665544332211"


def item(**over: Any) -> dict[str, Any]:
    base = {"subscriptionId": "7F105C7D-2DC5-4530-97CD-4E7AE6534C07", "clientState": SECRET,
            "subscriptionExpirationDateTime": "2026-12-05T05:00:00.0000000Z", "changeType": "created",
            "resource": f"Users/{USER}/Messages/AAMkAD=", "tenantId": TENANT}
    base.update(over)
    return base


def run(*items: Any, tenant: str | None = TENANT) -> Any:
    return parse(json.dumps({"value": list(items)}).encode(), {}, client_state=SECRET, tenant_id=tenant,
                 now=NOW)


def test_ids_are_normalised_and_received_at_is_the_clock() -> None:
    (msg,) = [json.loads(m) for m in run(item()).messages]
    assert msg["subscription_id"] == "7f105c7d-2dc5-4530-97cd-4e7ae6534c07"
    assert msg["received_at"] == "2026-12-02T05:00:01.250000Z"


@pytest.mark.parametrize("resource", [f"users/{USER}/messages/AAMkAD=", f"USERS/{USER}/MESSAGES/AAMkAD=",
                                      f"Users/{USER}@{TENANT}/Messages/AAMkAD="])
def test_the_documented_spellings_of_a_message_resource(resource: str) -> None:
    (msg,) = [json.loads(m) for m in run(item(resource=resource)).messages]
    assert (msg["user_id"], msg["message_id"]) == (USER, "AAMkAD=")


def test_without_a_configured_tenant_any_tenant_guid_passes_and_a_wrong_one_otherwise_fails() -> None:
    other = "11111111-2222-3333-4444-555555555555"
    assert len(run(item(tenantId=other), tenant=None).messages) == 1
    (rejected,) = run(item(tenantId=other)).rejected
    assert (rejected.index, rejected.field) == (0, "tenantId")


def test_the_client_state_is_checked_before_anything_else_about_an_item() -> None:
    # A forged item full of other faults is reported for its clientState only: nothing else is examined.
    (rejected,) = run({"clientState": "nope", "resource": "x", "bogus": 1}).rejected
    assert (rejected.field, rejected.subscription_id) == ("clientState", None)


def test_a_handshake_ignores_the_body_and_never_parses_it() -> None:
    got = parse(b"\x00not json", {"validationToken": "abc def:1"}, client_state=SECRET, tenant_id=None,
                now=NOW)
    assert (got.validation_token, got.messages) == ("abc def:1", ())


def test_bad_body_carries_status_and_field() -> None:
    with pytest.raises(BadBody) as err:
        parse(b"x" * (1024 * 1024 + 1), {}, client_state=SECRET, tenant_id=None, now=NOW)
    assert (err.value.status, err.value.field) == (413, "body")
