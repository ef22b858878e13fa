"""The fake's additions for issue 13: connection resets, signInSessionsValidFromDateTime, call overlap."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from devtools.fakegraph import FakeGraph
from remediation.exchange import anchor_mailbox

USER = "ada@contoso.com"


def revoke(fake: FakeGraph, client: httpx.Client) -> httpx.Response:
    return client.post(f"{fake.base_url}/users/{USER}/revokeSignInSessions")


@pytest.mark.parametrize("applied", [False, True])
def test_a_reset_closes_the_connection_with_no_reply_before_or_after_applying(applied: bool) -> None:
    with FakeGraph() as fake, httpx.Client() as client:
        user = fake.users.add(USER)
        fake.inject_reset("POST", r"/revokeSignInSessions$", applied=applied)
        with pytest.raises(httpx.RemoteProtocolError):
            revoke(fake, client)
        assert fake.revoked == ([user.id] if applied else [])
        assert [c.status for c in fake.calls] == [0]
        assert revoke(fake, client).status_code == 200        # times=1: the next call is answered
        assert fake.revoked == ([user.id] * (2 if applied else 1))


def test_a_reset_can_target_one_body() -> None:
    with FakeGraph() as fake, httpx.Client() as client:
        fake.inject_reset("POST", r"remediate$", times=None, body_contains='"nm-bad"')
        url = f"{fake.base_url}/security/collaboration/analyzedEmails/remediate"
        body = {"action": "moveToJunk", "severity": "low", "displayName": "x",
                "analyzedEmails": [{"networkMessageId": "nm-ok", "recipientEmailAddress": "a@contoso.com"}]}
        assert client.post(url, json=body).status_code == 202
        body["analyzedEmails"][0]["networkMessageId"] = "nm-bad"
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(url, json=body)
    assert len(fake.remediations) == 1


def test_revoke_sets_sign_in_sessions_valid_from_which_is_returned_only_on_select() -> None:
    with FakeGraph() as fake, httpx.Client() as client:
        fake.users.add(USER)
        before = datetime.now(UTC).replace(microsecond=0)
        assert revoke(fake, client).json()["value"] is True
        plain = client.get(f"{fake.base_url}/users/{USER}").json()
        chosen = client.get(f"{fake.base_url}/users/{USER}",
                            params={"$select": "id,signInSessionsValidFromDateTime"}).json()
    assert "signInSessionsValidFromDateTime" not in plain and plain["accountEnabled"] is True
    assert set(chosen) == {"id", "signInSessionsValidFromDateTime"}
    valid_from = datetime.fromisoformat(chosen["signInSessionsValidFromDateTime"].replace("Z", "+00:00"))
    assert before <= valid_from <= datetime.now(UTC) + timedelta(seconds=1)


def test_a_user_never_revoked_has_no_valid_from() -> None:
    with FakeGraph() as fake, httpx.Client() as client:
        fake.users.add(USER)
        got = client.get(f"{fake.base_url}/users/{USER}",
                         params={"$select": "signInSessionsValidFromDateTime"})
    assert got.json() == {"signInSessionsValidFromDateTime": None}


def test_peak_overlap_counts_calls_in_flight_together() -> None:
    with FakeGraph() as fake:
        for i in range(3):
            fake.users.add(f"u{i}@contoso.com")
        fake.add_latency(1.0, "POST", r"/revokeSignInSessions$", times=3)
        ready = threading.Barrier(3)

        def call(i: int, barrier: threading.Barrier | None = None) -> None:
            with httpx.Client() as client:
                if barrier is not None:
                    barrier.wait()   # all three send at once, each answered a second later
                client.post(f"{fake.base_url}/users/u{i}@contoso.com/revokeSignInSessions")

        threads = [threading.Thread(target=call, args=(i, ready)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        together = fake.peak_overlap("POST", r"/revokeSignInSessions$")
        for i in range(3):   # one after the other: no overlap added
            call(i)
        assert fake.peak_overlap("POST", r"/revokeSignInSessions$") == together
        assert fake.peak_overlap("GET", ".*") == 0
    assert together == 3
    assert all(c.finished >= c.started > 0 for c in fake.calls)


def test_latency_can_target_one_body() -> None:
    with FakeGraph() as fake, httpx.Client() as client:
        fake.connectors.add("A", "inbound")
        fault = fake.add_latency(0.01, "POST", r"InvokeCommand$", body_contains='"B"')
        headers = {"X-AnchorMailbox": anchor_mailbox(fake.tenant_id)}
        body = {"CmdletInput": {"CmdletName": "Get-InboundConnector", "Parameters": {"Identity": "A"}}}
        assert client.post(f"{fake.exchange_base_url}/{fake.tenant_id}/InvokeCommand", json=body,
                           headers=headers).status_code == 200
    assert fault.hits == 0
