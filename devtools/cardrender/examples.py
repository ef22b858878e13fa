"""Realistic example reports for each card kind: the docs/cards PNGs, the render tests, the demo.

Built through the real request contract (``make_request``) so they look exactly like queue messages.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from core.request import make_request
from notifications.reports import DigestReport, FailureReport, RunReport
from remediation.outcome import Outcome

NOW = datetime(2026, 11, 20, 12, 0, 5, tzinfo=UTC)
TENANT = "72f988bf-0000-4000-8000-000000000001"
CAMPAIGN = "shared-mailbox-consumer-sender"
CONNECTOR_RULE = "malicious-connector-change"
MAILBOXES = ["support@contoso.com", "sales@contoso.com", "info@contoso.com", "billing@contoso.com",
             "hr@contoso.com", "jobs@contoso.com"]


def campaign_requests(count: int, *, senders: int = 3) -> list[dict[str, Any]]:
    """``count`` move-to-Junk requests from a consumer-sender campaign over several shared mailboxes."""
    out = []
    for i in range(count):
        sender = f"j.smith{i % senders}@gmail.com"
        recipient = MAILBOXES[i % len(MAILBOXES)] if i < len(MAILBOXES) else f"shared{i}@contoso.com"
        out.append(make_request(
            rule=CAMPAIGN, action="move_to_junk", mode="auto",
            target={"network_message_id": f"5d3a{i:04d}-7c1e-4b2a-9f00-0a1b2c3d{i:04d}",
                    "recipient": recipient, "internet_message_id": f"<CAF{i:05d}@mail.gmail.com>"},
            evidence={"Timestamp": (NOW - timedelta(minutes=9, seconds=i)).isoformat(),
                      "SenderMailFromAddress": sender, "RecipientEmailAddress": recipient,
                      "Subject": "Re: Invoice 4471 overdue" if i % 2 else "Invoice 4471 overdue",
                      "TotalEmailCount": count},
            detected_at=NOW, run={"id": "run-20261120T1200-7f3a", "index": i, "total": count},
            severity="Medium", rule_name="Consumer sender mails several protected shared mailboxes"))
    return out


def connector_request() -> dict[str, Any]:
    return make_request(
        rule=CONNECTOR_RULE, action="disable_connector", mode="approval",
        target={"connector": "Partner relay (Fabrikam)", "connector_type": "inbound"},
        evidence={"Timestamp": "2026-11-20T11:41:12Z", "ActionType": "Set-InboundConnector",
                  "AccountUpn": "admin.backup@contoso.onmicrosoft.com", "IPAddress": "203.0.113.77",
                  "CountryCode": "NG", "MailVolume1h": 4812, "P1P2Mismatch": 4790},
        detected_at=NOW, run={"id": "run-20261120T1200-c0n1", "index": 0, "total": 2},
        severity="High", rule_name="Exchange connector changed, then relays mismatched mail")


def revoke_request() -> dict[str, Any]:
    return make_request(
        rule=CONNECTOR_RULE, action="revoke_sessions", mode="approval",
        target={"user": "admin.backup@contoso.onmicrosoft.com"},
        evidence={"Timestamp": "2026-11-20T11:40:02Z", "AccountUpn": "admin.backup@contoso.onmicrosoft.com",
                  "FailedLogons": 37, "SuccessFrom": "203.0.113.77 (NG)"},
        detected_at=NOW, run={"id": "run-20261120T1200-c0n1", "index": 1, "total": 2},
        severity="High", rule_name="Exchange connector changed, then relays mismatched mail")


CONNECTOR_COMMAND = "Set-InboundConnector -Identity 'Partner relay (Fabrikam)' -Enabled $false"


def scan_report(count: int = 24) -> RunReport:
    """A campaign run after the worker processed it: most done, a few submitted, skipped and failed."""
    requests = campaign_requests(count)
    outcomes = []
    for i, r in enumerate(requests):
        state, error, link, detail = "confirmed", None, None, "moved to Junk Email"
        if i % 8 == 3:
            state, link = "submitted", "https://security.microsoft.com/action-center/history?actionId=4c1f09"
        elif i % 8 == 5:
            state, detail = "skipped", "already in Junk Email"
        elif i == 7:
            state, error = "failed", "ErrorItemNotFound: the message was deleted by the user before the move"
        outcomes.append(Outcome(request_id=r["id"], rule=r["rule"], action=r["action"], target=r["target"],
                                mode=r["mode"], state=state, detail=detail, error=error, link=link,
                                attempts=1))
    return RunReport(rule=CAMPAIGN, rule_name="Consumer sender mails several protected shared mailboxes",
                     severity="Medium", rows=count, requests=requests, outcomes=outcomes,
                     run_id="run-20261120T1200-7f3a", started_at=NOW - timedelta(seconds=4), finished_at=NOW,
                     backend="defender", tenant_id=TENANT)


def connector_scan_report() -> RunReport:
    requests = [connector_request(), revoke_request()]
    outcomes = [Outcome(request_id=r["id"], rule=r["rule"], action=r["action"], target=r["target"],
                        mode=r["mode"], state="held", hold_reason="approval") for r in requests]
    return RunReport(rule=CONNECTOR_RULE, rule_name="Exchange connector changed, then relays mismatched mail",
                     severity="High", rows=2, requests=requests, outcomes=outcomes,
                     run_id="run-20261120T1200-c0n1", started_at=NOW - timedelta(seconds=6), finished_at=NOW,
                     backend="defender", tenant_id=TENANT)


def approval_example() -> dict[str, Any]:
    """Keyword arguments for ``approval_card``."""
    report = connector_scan_report()
    return {"requests": report.held(), "outcomes": report.outcomes,
            "commands": {report.requests[0]["id"]: CONNECTOR_COMMAND},
            "api_base": "https://func-xdr-contoso.azurewebsites.net", "tenant_id": TENANT}


def poison_failure() -> FailureReport:
    r = connector_request()
    return FailureReport(
        kind="poison", summary="A remediation request failed 5 times and went to the poison queue",
        reason="ExchangeAdminError: 403 Forbidden from InvokeCommand (Set-InboundConnector): the app has no "
               "Exchange admin role assigned",
        rule=r["rule"], rule_name=r["rule_name"], request_id=r["id"], request=r, attempts=5,
        occurred_at=NOW, run_id="run-20261120T1200-c0n1", tenant_id=TENANT)


def quota_failure() -> FailureReport:
    return FailureReport(
        kind="quota",
        summary="Advanced hunting refused the query: CPU quota for this 15-minute cycle is used up",
        reason="429 TooManyRequests: Tenant CPU quota exceeded (runHuntingQuery)", rule=CAMPAIGN,
        retry_after=540, occurred_at=NOW, tenant_id=TENANT)


def digest_report() -> DigestReport:
    counts = {
        CAMPAIGN: {"confirmed": 212, "submitted": 9, "skipped": 31, "failed": 2},
        CONNECTOR_RULE: {"held": 2, "rejected": 1},
        "mass-external-burst": {"confirmed": 14, "skipped": 3},
        "failed-then-unusual-logon": {"held": 1, "confirmed": 2, "not_applied": 1},
    }
    return DigestReport(
        period_start=NOW - timedelta(days=1), period_end=NOW, counts=counts,
        rule_names={CAMPAIGN: "Consumer sender mails several protected shared mailboxes",
                    CONNECTOR_RULE: "Exchange connector changed, then relays mismatched mail",
                    "mass-external-burst": "Burst of mail to external domains",
                    "failed-then-unusual-logon": "Failed logons, then success from an unusual place"},
        severities={CAMPAIGN: "Medium", CONNECTOR_RULE: "High", "mass-external-burst": "Medium",
                    "failed-then-unusual-logon": "High"},
        runs={CAMPAIGN: 288, CONNECTOR_RULE: 96, "mass-external-burst": 96, "failed-then-unusual-logon": 96},
        run_errors={CAMPAIGN: 1}, oldest_held=NOW - timedelta(hours=3, minutes=12), tenant_id=TENANT)


def all_cards() -> dict[str, dict[str, Any]]:
    """One example card per kind, named as the PNGs in docs/cards/."""
    from notifications.cards import approval_card, digest_card, failure_card, scan_card

    return {
        "scan": scan_card(scan_report()),
        "approval": approval_card(**approval_example()),
        "failure": failure_card(poison_failure()),
        "digest": digest_card(digest_report()),
    }
