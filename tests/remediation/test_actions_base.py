"""The action factory, the result type, notify, and Retry-After parsing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from devtools.fakegraph import FakeGraph
from remediation.actions import ActionResult, get_action
from remediation.actions.errors import parse_retry_after
from tests.remediation.actionkit import execute
from tests.remediation.factories import email_request, user_request


@pytest.mark.parametrize(("action", "strategy", "cls"), [
    ("move_to_junk", "defender", "DefenderEmailAction"), ("soft_delete", "mailbox", "MailboxEmailAction"),
    ("move_to_inbox", "mailbox", "MailboxEmailAction"), ("revoke_sessions", "mailbox", "RevokeSessions"),
    ("disable_user", "defender", "DisableUser"), ("confirm_compromised", "defender", "ConfirmCompromised"),
    ("disable_connector", "defender", "DisableConnector"), ("notify", "defender", "NotifyAction")])
def test_get_action_picks_the_implementation(action: str, strategy: str, cls: str) -> None:
    impl = get_action(action, strategy)
    assert type(impl).__name__ == cls and impl.name == action


def test_get_action_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown action 'purge'"):
        get_action("purge", "defender")
    with pytest.raises(ValueError, match="unknown email strategy 'pigeon'"):
        get_action("move_to_junk", "pigeon")


def test_result_state_is_checked() -> None:
    with pytest.raises(ValueError, match="state"):
        ActionResult("x", "done")


def test_notify_confirms_without_calling_anything() -> None:
    with FakeGraph() as fake:
        req = {**email_request("nm-1"), "action": "notify"}
        [res] = asyncio.run(execute(fake, "notify", [req]))
        assert fake.calls == []
    assert (res.state, res.detail) == ("confirmed", "notified")


def test_an_action_given_another_actions_request_fails_that_request_only() -> None:
    with FakeGraph() as fake:
        fake.users.add("a@contoso.com")
        results = asyncio.run(execute(fake, "revoke_sessions", [email_request("nm-1"),
                                                                user_request("a@contoso.com")]))
    assert [r.state for r in results] == ["failed", "confirmed"]
    assert results[0].error == "'move_to_junk' request given to revoke_sessions"


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after("Fri, 20 Nov 2026 12:00:45 GMT", now=now) == 45.0
    assert parse_retry_after("Fri, 20 Nov 2026 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
