"""POST /api/push/notifications (issue 15): Graph's validation handshake, change and lifecycle notifications.

The function as the host indexes it, called with azure.functions objects, on a Runtime whose ledger is on
Azurite; what it queues is the queue output binding's value. Shapes follow
https://learn.microsoft.com/graph/change-notifications-delivery-webhooks (handshake, collection) and
https://learn.microsoft.com/graph/change-notifications-lifecycle-events (lifecycle items).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import pytest

from core.settings import PushSettings
from push.intake import MAX_BODY_BYTES, MAX_TOKEN_CHARS
from tests.functions.conftest import Env, Out, http

URL = "http://localhost/api/push/notifications"
SECRET = "s3cret-client-state-" + "x" * 24
TENANT = "00000000-0000-0000-0000-00000000abcd"     # RESPONDER_TENANT_ID in tests/functions/conftest.py
SUB = "7f105c7d-2dc5-4530-97cd-4e7ae6534c07"
USER = "8a1c0b2e-1f4d-4a6b-9c3d-2e5f6a7b8c9d"
MSG = ("AAMkAGVmMDEzMTM4LTZmYWUtNDdkNC1hMDZiLTU1OGY5OTZhYmY4OABGAAAAAAAiQ8W967B7TKBjgx9rVEURBwAiIsqMbYjsT5e-"
       "T7KzowPTAAAAAAEMAAAiIsqMbYjsT5e-T7KzowPTAAAYbvZDAAA=")
# Graph's own validation tokens are a sentence like this one (opaque; echoed as sent, URL-decoded).
TOKEN = "Validation: Testing client application reachability for subscription Request-Id: 9f4c3e1a-1d2b"


def push_on(env: Env, secret: str = SECRET) -> Env:
    push = PushSettings(enabled=True, notification_url="https://app.example/api/push/notifications",
                        client_state=secret)
    env.rt.config = dataclasses.replace(env.rt.config, push=push)
    return env


def change(message_id: str = MSG, *, user: str = USER, sub: str = SUB, **over: Any) -> dict[str, Any]:
    """A change notification for a new message, as the delivery page's example shows it."""
    item = {"subscriptionId": sub, "subscriptionExpirationDateTime": "2026-11-23T11:00:00.0000000Z",
            "clientState": SECRET, "changeType": "created", "resource": f"Users/{user}/Messages/{message_id}",
            "tenantId": TENANT, "id": "lsgTZMr9KwAAA",
            "resourceData": {"@odata.type": "#Microsoft.Graph.Message",
                             "@odata.id": f"Users/{user}/Messages/{message_id}",
                             "@odata.etag": 'W/"CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRHf"', "id": message_id}}
    item.update(over)
    return {k: v for k, v in item.items() if v is not None}


def lifecycle(event: str, *, sub: str = SUB, **over: Any) -> dict[str, Any]:
    item = {"subscriptionId": sub, "subscriptionExpirationDateTime": "2026-11-23T11:00:00.0000000Z",
            "tenantId": TENANT, "clientState": SECRET, "lifecycleEvent": event}
    item.update(over)
    return item


def post(env: Env, body: Any, params: dict[str, str] | None = None) -> tuple[int, bytes, Out, Any]:
    out = Out()
    resp = env.call("push_notifications", http("POST", URL, body, params=params), out)
    return resp.status_code, resp.get_body(), out, resp


def queued(out: Out) -> list[dict[str, Any]]:
    return [json.loads(m) for m in (out.value or [])]


def test_validation_handshake_echoes_the_token_as_plain_text_and_queues_nothing(env: Env) -> None:
    push_on(env)
    status, body, out, resp = post(env, b"", params={"validationToken": TOKEN})
    assert (status, body.decode("utf-8")) == (200, TOKEN)
    assert resp.mimetype == "text/plain"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert out.value is None and out.calls == 0


@pytest.mark.parametrize(("token", "why"), [("x" * (MAX_TOKEN_CHARS + 1), "longer than"),
                                            ("<script>alert(1)</script>", "markup"),
                                            ("abc\r\nSet-Cookie: a=b", "control characters"),
                                            ("", "empty")])
def test_a_token_graph_would_never_send_is_refused_not_echoed(env: Env, token: str, why: str) -> None:
    push_on(env)
    status, body, out, _ = post(env, b"", params={"validationToken": token})
    doc = json.loads(body)
    assert (status, doc["field"]) == (400, "query.validationToken")
    assert why in doc["message"]
    if token:
        assert token not in body.decode("utf-8")
    assert out.value is None


def test_good_batch_is_queued_one_message_per_notification_and_answered_202(env: Env) -> None:
    push_on(env)
    other = "AAMkAGVmMDEzMTM4LTZmYWUtNDdkNC1hMDZiLTU1OGY5OTZhYmY4OABGAAAAAAAiQ8W967B7TKBjgx9rVEURBwBB="
    status, body, out, _ = post(env, {"value": [change(), change(other)]})
    assert (status, body) == (202, b"")
    assert out.calls == 1                      # the whole batch in one output binding
    assert queued(out) == [
        {"schema": "push-notification/1", "kind": "change", "subscription_id": SUB, "change_type": "created",
         "resource": f"Users/{USER}/Messages/{mid}", "user_id": USER, "message_id": mid,
         "tenant_id": TENANT, "received_at": "2026-11-20T12:00:00Z"} for mid in (MSG, other)]


def test_the_delivery_page_s_resource_form_with_the_tenant_is_parsed_to_the_same_message(env: Env) -> None:
    push_on(env)
    item = change(resource=f"users/{USER.upper()}@{TENANT}/messages/{MSG}")
    status, _, out, _ = post(env, {"value": [item]})
    (msg,) = queued(out)
    assert (status, msg["user_id"], msg["message_id"]) == (202, USER, MSG)
    assert msg["resource"] == f"Users/{USER}/Messages/{MSG}"


def test_bad_client_state_drops_only_that_item_and_logs_no_body(env: Env,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    push_on(env)
    forged_id = "AAMkFORGEDmessageid="
    items = [change(), change(forged_id, clientState="guessed-" + SECRET),
             change(forged_id, clientState=None), lifecycle("missed")]
    with caplog.at_level(logging.INFO, logger="app.push_endpoint"):
        status, body, out, _ = post(env, {"value": items})
    assert (status, body) == (202, b"")
    assert [(m["kind"], m.get("message_id")) for m in queued(out)] == [("change", MSG), ("lifecycle", None)]
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert "value[1].clientState: does not match" in logs and "value[2].clientState: missing" in logs
    assert forged_id not in logs and SECRET not in logs and USER not in logs


@pytest.mark.parametrize(("resource", "field"), [
    (f"Users/{USER}/Messages/{MSG}/attachments/1", "resource"),           # something under the message
    (f"Users/{USER}/Events/{MSG}", "resource"),                           # not a message
    (f"Users/admin@contoso.com/Messages/{MSG}", "resource"),              # a UPN, not the object id
    (f"Users/{USER}/Messages/{MSG}?$select=body", "resource"),           # a query smuggled in
    (f"Users/{USER}/Messages/../../{MSG}", "resource"),
    (f"Users/{USER}/Messages/{MSG}\n", "resource"),                       # $ would let this through
    (f"users/{USER}@11111111-2222-3333-4444-555555555555/messages/{MSG}", "resource"),   # another tenant
    (None, "resource")])
def test_forged_resource_is_dropped_and_the_rest_queued(env: Env, resource: str | None, field: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    push_on(env)
    other = "AAMkAGOTHER="
    bad = change(resource=resource) if resource is not None else change(resource=None)
    with caplog.at_level(logging.WARNING, logger="app.push_endpoint"):
        status, _, out, _ = post(env, {"value": [bad, change(other)]})
    assert status == 202
    assert [m["message_id"] for m in queued(out)] == [other]
    assert f"value[0].{field}:" in caplog.text and f"subscription {SUB}" in caplog.text


def test_resource_data_naming_another_message_is_dropped(env: Env) -> None:
    push_on(env)
    bad = change(resourceData={"@odata.type": "#Microsoft.Graph.Message", "id": "AAMkANOTHER="})
    status, _, out, _ = post(env, {"value": [bad]})
    assert (status, out.value) == (202, None)


@pytest.mark.parametrize("change_type", ["updated", "deleted", "created,updated", None, 1])
def test_wrong_change_type_is_dropped(env: Env, change_type: Any, caplog: pytest.LogCaptureFixture) -> None:
    push_on(env)
    with caplog.at_level(logging.WARNING, logger="app.push_endpoint"):
        status, _, out, _ = post(env, {"value": [change(changeType=change_type)]})
    assert (status, out.value) == (202, None)
    assert "value[0].changeType: expected created" in caplog.text


@pytest.mark.parametrize(("over", "field"), [
    ({"tenantId": "11111111-2222-3333-4444-555555555555"}, "tenantId"),   # another tenant's notification
    ({"subscriptionId": "not-a-guid"}, "subscriptionId"),
    ({"subscriptionExpirationDateTime": 5}, "subscriptionExpirationDateTime"),
    ({"encryptedContent": {"data": "x"}}, "encryptedContent"),
    ({"surprise": 1}, "surprise"),
    ({"resourceData": {"id": MSG, "extra": "x"}}, "resourceData.extra"),
    ({"@odata.type": "#microsoft.graph.user"}, "@odata.type")])
def test_items_of_unknown_or_wrong_shape_are_dropped_naming_the_field(
        env: Env, over: dict[str, Any], field: str, caplog: pytest.LogCaptureFixture) -> None:
    push_on(env)
    with caplog.at_level(logging.WARNING, logger="app.push_endpoint"):
        status, _, out, _ = post(env, {"value": [change(**over), lifecycle("missed")]})
    assert status == 202
    assert [m["kind"] for m in queued(out)] == ["lifecycle"]
    assert f"value[0].{field}:" in caplog.text


def test_lifecycle_notifications_are_queued_and_checked_like_changes(env: Env) -> None:
    push_on(env)
    sub2 = "1c1b9a0e-0d5f-4c4e-8f3a-6b2d1e0f9a8b"
    items = [lifecycle("reauthorizationRequired"), lifecycle("subscriptionRemoved", sub=sub2),
             lifecycle("missed"), lifecycle("missed", clientState="nope"), lifecycle("somethingNew")]
    status, _, out, _ = post(env, {"value": items})
    assert status == 202
    assert queued(out) == [
        {"schema": "push-notification/1", "kind": "lifecycle", "subscription_id": sub, "lifecycle_event": ev,
         "tenant_id": TENANT, "received_at": "2026-11-20T12:00:00Z"}
        for sub, ev in ((SUB, "reauthorizationRequired"), (sub2, "subscriptionRemoved"), (SUB, "missed"))]


def test_the_same_notification_twice_in_one_batch_is_queued_once(env: Env) -> None:
    push_on(env)
    status, _, out, _ = post(env, {"value": [change(), change(), lifecycle("missed"), lifecycle("missed")]})
    assert status == 202 and [m["kind"] for m in queued(out)] == ["change", "lifecycle"]


def test_oversized_body_is_413_and_nothing_is_queued(env: Env) -> None:
    push_on(env)
    padding = " " * (MAX_BODY_BYTES + 1 - len(json.dumps({"value": [change()]})))
    status, body, out, _ = post(env, (json.dumps({"value": [change()]}) + padding).encode())
    assert status == 413 and json.loads(body)["field"] == "body"
    assert json.loads(body)["error"] == "payload too large"
    assert out.value is None


@pytest.mark.parametrize(("raw", "field", "message"), [
    (b'{"value": [', "body", "not JSON"),
    (b"\xff\xfe", "body", "not JSON"),
    (b"[" * 40 + b"]" * 40, "body", "nested deeper"),
    (b'{"value": ' + b"[" * 40 + b"]" * 40 + b"}", "body", "nested deeper"),
    (b"", "body", "empty"),
    (b"[]", "body", "JSON object"),
    (b'{"values": []}', "values", "unknown property"),
    (b'{"value": {}}', "value", "array"),
    (b"{}", "value", "required"),
    (b'{"value": [], "validationTokens": "x"}', "validationTokens", "array of strings"),
    (json.dumps({"value": [{}] * 1001}).encode(), "value", "more than 1000")])
def test_malformed_body_is_a_400_naming_what_is_wrong(env: Env, raw: bytes, field: str, message: str) -> None:
    push_on(env)
    status, body, out, _ = post(env, raw)
    doc = json.loads(body)
    assert (status, doc["field"]) == (400, field), doc
    assert message in doc["message"]
    assert out.value is None


def test_unknown_query_parameter_is_a_400(env: Env) -> None:
    push_on(env)
    status, body, out, _ = post(env, {"value": [change()]}, params={"code": "x"})
    assert (status, json.loads(body)["field"]) == (400, "query.code")
    assert out.value is None


def test_push_off_is_404_for_handshake_and_notifications(env: Env) -> None:
    # the session's app is imported with RESPONDER_PUSH unset: off
    assert env.rt.config.push is not None and not env.rt.config.push.enabled
    for params, body in (({"validationToken": TOKEN}, b""), (None, {"value": [change()]})):
        status, raw, out, _ = post(env, body, params=params)
        assert status == 404 and TOKEN.encode() not in raw
        assert out.value is None


def test_a_batch_whose_every_item_fails_is_still_202_with_nothing_queued(env: Env) -> None:
    # 202 either way: the answer never tells a sender which of its items passed.
    push_on(env, secret="another-secret-of-at-least-32-characters")
    status, body, out, _ = post(env, {"value": [change(), lifecycle("missed")]})
    assert (status, body, out.value) == (202, b"", None)


def test_a_flood_of_bad_items_logs_a_few_lines_and_a_count(env: Env,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    push_on(env)
    with caplog.at_level(logging.WARNING, logger="app.push_endpoint"):
        status, _, out, _ = post(env, {"value": [change(clientState="x")] * 500 + [change()]})
    assert status == 202 and [m["message_id"] for m in queued(out)] == [MSG]
    assert len(caplog.records) == 11
    assert "490 more dropped in the same request" in caplog.records[-1].getMessage()
