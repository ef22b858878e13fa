"""Card builders: content, honest truncation, the size limit and what Teams Workflows accepts."""

from __future__ import annotations

import re

import pytest

from core.request import make_request
from devtools.cardrender import examples
from notifications.cards import approval_card, digest_card, failure_card, scan_card
from notifications.elements import card_kind
from notifications.message import (
    MAX_MESSAGE_BYTES,
    CardTooLarge,
    fit,
    message_size,
    to_workflows_message,
    workflows_problems,
)
from notifications.message import (
    walk_nodes as walk,
)
from notifications.reports import DigestReport, FailureReport, RunReport
from remediation.outcome import Outcome


def markdown_texts(card: dict) -> list[str]:
    """Text that Teams parses as Markdown: TextBlock text and FactSet titles/values."""
    out = [n["text"] for n in walk(card) if n.get("type") == "TextBlock"]
    for n in walk(card):
        if n.get("type") == "FactSet":
            out += [f["title"] for f in n["facts"]] + [f["value"] for f in n["facts"]]
    return out


def all_text(card: dict) -> str:
    parts = [n["text"] for n in walk(card) if n.get("type") in ("TextBlock", "TextRun")]
    for n in walk(card):
        if n.get("type") == "FactSet":
            parts += [f"{f['title']}: {f['value']}" for f in n["facts"]]
    return "\n".join(parts)


def facts_of(card: dict) -> dict[str, str]:
    return {f["title"]: f["value"] for n in walk(card) if n.get("type") == "FactSet" for f in n["facts"]}


def buttons(card: dict) -> list[dict]:
    return [n for n in walk(card) if str(n.get("type", "")).startswith("Action.")]


def assert_teams_ok(card: dict) -> None:
    assert workflows_problems(to_workflows_message(card)) == []


# --- message ---------------------------------------------------------------------------------------

def test_workflows_message_shape() -> None:
    card = scan_card(examples.scan_report())
    msg = to_workflows_message(card)
    assert msg["type"] == "message"
    assert msg["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert msg["attachments"][0]["content"] is card
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.5"
    with pytest.raises(ValueError):
        to_workflows_message({"type": "message"})


def test_workflows_problems_names_what_teams_would_reject() -> None:
    card = scan_card(examples.scan_report())
    bad = {**card, "version": "1.6", "actions": [{"type": "Action.Submit", "title": "Approve"}]}
    problems = workflows_problems(to_workflows_message(bad))
    assert any("version must be 1.5" in p for p in problems)
    assert any("Action.Submit" in p for p in problems)
    assert any("over the" in p for p in workflows_problems(to_workflows_message(card), limit=100))


def test_fit_raises_when_nothing_fits() -> None:
    with pytest.raises(CardTooLarge):
        fit(lambda n, w: {"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock",
                                                                              "text": "x" * 5000}]},
            limit=1000)


# --- scan card -------------------------------------------------------------------------------------

def test_scan_card_counts_every_bucket() -> None:
    report = examples.scan_report(24)
    card = scan_card(report)
    assert_teams_ok(card)
    f = facts_of(card)
    states = [o.state for o in report.outcomes]
    assert f["Rows found"] == "24" and f["Requests"] == "24"
    assert f["Done"] == str(states.count("confirmed"))
    assert f["Submitted / in progress"] == str(states.count("submitted"))
    assert f["Skipped"] == str(states.count("skipped"))
    assert f["Failed"] == str(states.count("failed")) == "1"
    assert f["Held for approval"] == "0"
    assert "Queued" not in f
    text = all_text(card)
    assert report.rule_name in text and report.rule in text
    assert "Medium severity" in text
    assert "17 done, 3 submitted, 3 skipped, 1 failed" in text
    assert "ErrorItemNotFound" in text          # the failure's reason is on the card
    assert card_kind(card) == "scan"


def with_sources(report: RunReport, sources: list[str | None]) -> RunReport:
    report.requests = [{**r, "source": src} if src else {k: v for k, v in r.items() if k != "source"}
                       for r, src in zip(report.requests, sources, strict=True)]
    return report


def test_scan_card_says_which_path_found_the_requests() -> None:
    pushed = scan_card(with_sources(examples.scan_report(3), ["push", "push", "push"]))
    assert_teams_ok(pushed)
    assert facts_of(pushed)["Found by"] == "push path"
    assert "These requests were found by the push path" in all_text(pushed)
    mixed = scan_card(with_sources(examples.scan_report(3), ["push", "scheduled", "push"]))
    assert facts_of(mixed)["Found by"] == "push path (2), scheduled scan (1)"
    assert "2 of these requests were found by the push path" in all_text(mixed)
    scheduled = scan_card(with_sources(examples.scan_report(3), ["scheduled"] * 3))
    assert facts_of(scheduled)["Found by"] == "scheduled scan"
    assert "push path" not in all_text(scheduled)
    unknown = scan_card(with_sources(examples.scan_report(3), [None] * 3))   # requests from before `source`
    assert "Found by" not in facts_of(unknown)


def test_a_push_runs_card_names_the_push_path_as_its_backend_not_the_query_backend() -> None:
    # A push run read the mailboxes (Graph change notifications); the app's query backend never ran.
    pushed = with_sources(examples.scan_report(3), ["push"] * 3)
    pushed.backend = "defender"
    assert facts_of(scan_card(pushed))["Backend"] == "push path (Graph change notifications)"
    scheduled = with_sources(examples.scan_report(3), ["scheduled"] * 3)
    scheduled.backend = "defender"
    assert facts_of(scan_card(scheduled))["Backend"] == "defender"
    mixed = with_sources(examples.scan_report(3), ["push", "scheduled", "push"])   # a scan's run
    mixed.backend = "sentinel"
    assert facts_of(scan_card(mixed))["Backend"] == "sentinel"


def test_scan_card_severity_colour() -> None:
    for severity, colour in (("High", "attention"), ("Medium", "warning"), ("Low", "accent")):
        report = examples.scan_report(2)
        report.severity = severity
        card = scan_card(report)
        header = card["body"][0]
        assert header["style"] == colour
        sev = [n for n in walk(header) if n.get("text") == f"{severity} severity"]
        assert sev and sev[0]["color"] == colour


def test_scan_card_before_processing_counts_queued_and_held() -> None:
    report = examples.connector_scan_report()
    report.outcomes = []          # the timer path: requests queued, the worker has not run yet
    card = scan_card(report)
    f = facts_of(card)
    assert f["Queued"] == "2"
    text = all_text(card)
    assert "Waiting for approval (2)" in text
    for r in report.requests:
        assert f"python -m responder approve {r['id']}" in text


def test_scan_card_links() -> None:
    report = examples.scan_report(24)
    report.outcomes[0].link = "javascript:alert(1)"   # only https links become buttons
    card = scan_card(report)
    acts = buttons(card)
    assert acts and all(a["type"] == "Action.OpenUrl" for a in acts)
    urls = [a["url"] for a in acts]
    assert all(u.startswith("https://") for u in urls)
    assert "https://security.microsoft.com/action-center/history?actionId=4c1f09" in urls
    assert f"https://security.microsoft.com/v2/advanced-hunting?tid={examples.TENANT}" in urls
    assert not any("javascript" in u for u in urls)
    assert len(acts) <= 4


def test_scan_card_connector_run_links_exchange_admin() -> None:
    card = scan_card(examples.connector_scan_report())
    assert "https://admin.exchange.microsoft.com/#/connectors" in [a["url"] for a in buttons(card)]


def test_scan_card_query_error_and_partial() -> None:
    report = RunReport(rule="r1", rule_name="Rule one", severity="High", rows=0,
                       error="BackendError: 400 Bad Request: 'Subjectt' is not a column", partial=False)
    text = all_text(scan_card(report))
    assert "The query failed" in text and "'Subjectt' is not a column" in text
    report = examples.scan_report(3)
    report.partial, report.partial_reason = True, "LogsQueryPartialResult: query timed out"
    text = all_text(scan_card(report))
    assert "Partial result" in text and "query timed out" in text


def test_scan_card_truncates_thousands_of_entities_honestly() -> None:
    report = examples.scan_report(2500)
    for i, r in enumerate(report.requests):        # 2500 distinct senders too
        r["evidence"]["SenderMailFromAddress"] = f"sender{i}@outlook.com"
    card = scan_card(report)
    assert message_size(card) <= MAX_MESSAGE_BYTES
    assert_teams_ok(card)
    lists = {n["inlines"][0]["text"]: n["inlines"] for n in walk(card)
             if n.get("type") == "RichTextBlock" and n["inlines"][0]["text"].endswith("): ")}
    recipients = lists["Recipients (2500): "]
    shown = recipients[1]["text"].split(", ")
    assert shown[:2] == ["support@contoso.com", "sales@contoso.com"]
    assert recipients[2]["text"].strip() == f"and {2500 - len(shown)} more"
    senders = lists["Senders (2500): "]
    assert senders[2]["text"].strip() == f"and {2500 - len(senders[1]['text'].split(', '))} more"


def test_scan_card_with_many_held_and_failed_fits_by_tightening() -> None:
    report = examples.scan_report(3000)
    for i, o in enumerate(report.outcomes):
        if i % 2:
            o.state, o.error = "failed", f"#{i} " + "E" * 400
        else:
            o.state, o.hold_reason = "held", "cap"
    card = scan_card(report)
    assert message_size(card) <= MAX_MESSAGE_BYTES
    text = all_text(card)
    held_shown = text.count("python -m responder approve ")
    assert f"and {1500 - held_shown} more held requests" in text
    failed_shown = len(re.findall(r"^#\d+ E", text, re.MULTILINE))
    assert failed_shown < 1500 and f"and {1500 - failed_shown} more failures" in text


def test_untrusted_text_never_reaches_markdown() -> None:
    evil = "[Reset your password](https://evil.example/login) **urgent**"
    report = examples.scan_report(3)
    for r in report.requests:
        r["evidence"]["Subject"] = evil
        r["evidence"]["SenderMailFromAddress"] = "_x_@evil.example"
    report.outcomes[0].state, report.outcomes[0].error = "failed", evil
    cards = [scan_card(report), approval_card(report.requests),
             failure_card(FailureReport(kind="action", summary=evil, reason=evil,
                                        request=report.requests[0]))]
    for card in cards:
        assert "evil.example" in all_text(card)                       # shown...
        assert not any("evil.example" in t for t in markdown_texts(card))  # ...but never as Markdown


# --- approval card ---------------------------------------------------------------------------------

def test_approval_card_has_evidence_command_and_how_to_approve() -> None:
    kwargs = examples.approval_example()
    card = approval_card(**kwargs)
    assert_teams_ok(card)
    text = all_text(card)
    connector, revoke = kwargs["requests"]
    assert examples.CONNECTOR_COMMAND in text                       # verbatim, never clipped
    for r in (connector, revoke):
        assert f"python -m responder approve {r['id']}" in text
        assert f"POST /api/requests/{r['id']}/approve" in text
        assert f"POST /api/requests/{r['id']}/reject" in text
    assert "203.0.113.77" in text and "Set-InboundConnector" in text   # evidence
    assert "https://func-xdr-contoso.azurewebsites.net" in text
    assert "Held because this action runs in approval mode." in text
    assert "2 actions wait for a person" in text
    assert card_kind(card) == "approval"
    assert not [b for b in buttons(card) if b["type"] != "Action.OpenUrl"]


def test_approval_card_cap_reason_and_empty() -> None:
    r = examples.campaign_requests(1)[0]
    o = Outcome(request_id=r["id"], rule=r["rule"], action=r["action"], target=r["target"], mode="auto",
                state="held", hold_reason="cap")
    assert "past the rule's cap" in all_text(approval_card([r], outcomes=[o]))
    with pytest.raises(ValueError):
        approval_card([])


def test_approval_card_with_thousands_of_requests() -> None:
    requests = examples.campaign_requests(2000)
    for r in requests:
        r["evidence"]["Subject"] = "S" * 2000
    card = approval_card(requests)
    assert message_size(card) <= MAX_MESSAGE_BYTES
    assert_teams_ok(card)
    text = all_text(card)
    blocks = text.count("python -m responder approve ")
    assert blocks >= 1
    assert f"and {2000 - blocks} more held requests" in text
    ids_line = next(n for n in walk(card) if n.get("type") == "RichTextBlock"
                    and n["inlines"][0]["text"] == "Their ids: ")
    listed = ids_line["inlines"][1]["text"].split(", ")
    assert listed[0] == requests[blocks]["id"]
    assert ids_line["inlines"][2]["text"].strip() == f"and {2000 - blocks - len(listed)} more"


def test_approval_card_respects_a_smaller_limit() -> None:
    requests = examples.campaign_requests(60)
    big = approval_card(requests)
    small = approval_card(requests, limit=8000)
    assert message_size(small) <= 8000 < message_size(big)
    assert all_text(small).count("python -m responder approve ") < all_text(big).count(
        "python -m responder approve ")


# --- failure card ----------------------------------------------------------------------------------

def test_poison_failure_card() -> None:
    report = examples.poison_failure()
    card = failure_card(report)
    assert_teams_ok(card)
    text = all_text(card)
    assert report.summary in text and report.reason in text
    assert report.request_id in text
    assert "after 5 attempts" in text and "poison queue" in text and "not retried automatically" in text
    assert facts_of(card)["Attempts"] == "5"
    assert card["body"][0]["style"] == "attention"
    assert card_kind(card) == "failure"


def test_quota_and_backend_failure_say_what_happens_next() -> None:
    text = all_text(failure_card(examples.quota_failure()))
    assert "Retry after" in text and "540 s" in text
    assert "On-demand re-scans are refused" in text
    backend = FailureReport(kind="backend", summary="Sentinel query failed", reason="timeout",
                            next_step="Custom next step from the caller.")
    assert "Custom next step from the caller." in all_text(failure_card(backend))
    config = FailureReport(kind="config", summary="Out of scope", reason="recipient not protected")
    text = all_text(failure_card(config))
    assert "configuration problem" in text and "Nothing was done" in text


def test_failure_card_survives_a_malformed_poison_message() -> None:
    garbage = {"target": "not-a-dict", "evidence": [1, 2], "action": 5}
    card = failure_card(FailureReport(kind="poison", summary="bad message", reason="RequestInvalid: target",
                                      request=garbage, attempts=5))
    assert_teams_ok(card)
    assert "not-a-dict" in all_text(card)


def test_failure_card_clips_a_huge_reason_honestly() -> None:
    reason = "Traceback " + "x" * 100_000
    card = failure_card(FailureReport(kind="other", summary="boom", reason=reason))
    assert message_size(card) <= MAX_MESSAGE_BYTES
    clipped = next(t for t in all_text(card).splitlines() if t.startswith("Traceback"))
    m = re.search(r"… \(\+(\d+) characters\)$", clipped)
    assert m is not None
    assert len(clipped) - len(m.group(0)) + int(m.group(1)) == len(reason)


# --- digest card -----------------------------------------------------------------------------------

def test_digest_card_tallies_per_rule() -> None:
    report = examples.digest_report()
    card = digest_card(report)
    assert_teams_ok(card)
    f = facts_of(card)
    assert f["Requests"] == "278"
    # not_applied counts as failed: Defender accepted a submission that never took effect.
    assert f["Done"] == "228" and f["Held for approval"] == "3" and f["Failed"] == "3"
    table = next(n for n in walk(card) if n.get("type") == "Table")
    rows = table["rows"][1:]
    first = [c["items"][0] for c in rows[0]["cells"]]
    # High severity first; then by volume.
    assert first[0]["inlines"][1]["text"].strip() == "failed-then-unusual-logon"
    assert [c["text"] for c in first[1:]] == ["2", "0", "1", "0", "1"]
    text = all_text(card)
    assert "3 requests wait for approval" in text and "2026-11-20 08:48:05 UTC" in text
    assert card_kind(card) == "digest"


def test_digest_from_states_and_many_rules() -> None:
    pairs = [(f"rule-{i:03d}", "confirmed") for i in range(300)] + [("rule-000", "held")]
    report = DigestReport.from_states(pairs, period_start=examples.NOW, period_end=examples.NOW)
    assert report.counts["rule-000"] == {"confirmed": 1, "held": 1}
    card = digest_card(report)
    assert message_size(card) <= MAX_MESSAGE_BYTES
    table = next(n for n in walk(card) if n.get("type") == "Table")
    shown = len(table["rows"]) - 1
    assert f"and {300 - shown} more rules ({301 - 2 - (shown - 1)} requests)" in all_text(card)


def test_empty_digest() -> None:
    card = digest_card(DigestReport(period_start=examples.NOW, period_end=examples.NOW))
    assert "No rule produced a request in this period." in all_text(card)


def test_run_report_from_rule_run() -> None:
    class R:
        slug, name, severity = "r1", "Rule one", "Low"

    class Run:
        rule = R()
        rows = [{}, {}, {}]
        requests = [make_request(rule="r1", action="revoke_sessions", mode="approval",
                                 target={"user": "a@contoso.com"}, evidence={}, detected_at=examples.NOW)]
        partial, error, run_id = True, None, "run-1"

    report = RunReport.from_rule_run(Run(), backend="local")
    assert (report.rule, report.rule_name, report.severity, report.rows) == ("r1", "Rule one", "Low", 3)
    assert report.partial and report.run_id == "run-1" and report.held() == Run.requests
    assert report.bucket_counts()["queued"] == 1


# The remediate call's Location, as documented (security-analyzedemail-remediate, Response).
DOCUMENTED_LOCATION = ('https://security.microsoft.com/action-center/history?filters={"bulkId":'
                       '["0f8e7d6c-5b4a-4392-8170-6e5d4c3b2a19"]}&tid=8f4a2c1e-0b7d-4e59-9c36-2d1f0a7b5e43')
URI_CHARS = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@/?#%]+$")


def test_action_center_link_is_percent_encoded_on_the_button() -> None:
    from urllib.parse import unquote

    report = examples.scan_report(24)
    report.outcomes[0].link = DOCUMENTED_LOCATION
    urls = [a["url"] for a in buttons(scan_card(report))]
    (submission,) = [u for u in urls if "action-center" in u and "bulkId" in unquote(u)]
    assert URI_CHARS.match(submission), submission
    assert submission == ("https://security.microsoft.com/action-center/history?filters=%7B%22bulkId%22:"
                          "%5B%220f8e7d6c-5b4a-4392-8170-6e5d4c3b2a19%22%5D%7D"
                          "&tid=8f4a2c1e-0b7d-4e59-9c36-2d1f0a7b5e43")
    assert unquote(submission) == DOCUMENTED_LOCATION


def test_encoding_keeps_valid_links_unchanged() -> None:
    from notifications.links import encode_url

    for url in ("https://admin.exchange.microsoft.com/#/connectors",
                "https://security.microsoft.com/v2/advanced-hunting?tid=abc",
                "https://security.microsoft.com/x?filters=%7B%22a%22%7D"):
        assert encode_url(url) == url
    once = encode_url(DOCUMENTED_LOCATION)
    assert encode_url(once) == once


# --- "Open" on the signed-in approval page (app/pages.py) --------------------------------------------

def test_each_held_request_gets_an_open_button_to_its_page() -> None:
    kwargs = examples.approval_example()
    card = approval_card(**kwargs)
    assert_teams_ok(card)
    opened = [b["url"] for b in buttons(card) if b["title"] == "Open"]
    base = "https://func-xdr-contoso.azurewebsites.net"
    assert opened == [f"{base}/requests/{r['id']}" for r in kwargs["requests"]]
    # No app URL (local runs): no button rather than a relative link Teams cannot open.
    assert not [b for b in buttons(approval_card(kwargs["requests"])) if b["title"] == "Open"]


def test_scan_card_held_requests_get_open_buttons_within_the_size_guard() -> None:
    report = examples.scan_report(3000)
    report.api_base = "https://func-xdr-contoso.azurewebsites.net"
    for o in report.outcomes:
        o.state, o.hold_reason = "held", "cap"
    card = scan_card(report)
    assert message_size(card) <= MAX_MESSAGE_BYTES
    assert_teams_ok(card)
    opened = [b["url"] for b in buttons(card) if b["title"] == "Open"]
    shown = all_text(card).count("python -m responder approve ")
    assert opened and len(opened) == shown
    assert all(u.startswith("https://func-xdr-contoso.azurewebsites.net/requests/") for u in opened)
