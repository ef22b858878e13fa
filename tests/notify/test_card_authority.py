"""Issue 13: a forged or unknown-rule request cannot put Markdown on a card (severity and rule name from
the catalog only), and a value that cannot be serialised is replaced, never drops the card."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from devtools.webhook_sink import WebhookSink
from notifications.cards import approval_card
from notifications.message import serialize, to_workflows_message
from notifications.reporter import card_for
from notifications.teams import TeamsWebhookNotifier
from remediation.reporting import Report
from tests.remediation.factories import email_request, make_rule

RULE = make_rule()      # severity Medium, name "rule shared-mailboxes"
MARKDOWN = "**CRITICAL** [open](https://evil.example/x) _now_"


def forged(**extra: str) -> dict:
    req = email_request("nm-1", mode="approval")
    req.update(extra)
    return req


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    with WebhookSink() as s:
        yield s


def test_severity_and_rule_name_come_from_the_catalog_not_the_message() -> None:
    report = Report("held", "held", [], [forged(severity=MARKDOWN, rule_name=MARKDOWN)])
    text = json.dumps(card_for(report, rules={RULE.slug: RULE}))
    assert "evil.example" not in text and "CRITICAL" not in text
    assert "Medium" in text and "rule shared-mailboxes" in text


def test_an_unknown_rule_shows_no_severity_and_no_name_from_the_message() -> None:
    req = forged(rule="no-such-rule", severity=MARKDOWN, rule_name=MARKDOWN)
    text = json.dumps(card_for(Report("skipped", "out of scope", [], [req]), rules={RULE.slug: RULE}))
    assert "evil.example" not in text and "CRITICAL" not in text


def test_a_severity_outside_the_schema_never_reaches_a_markdown_textblock() -> None:
    # Without the catalog (CLI batch), the card still shows only a known severity.
    card = approval_card([forged(severity=MARKDOWN)])
    assert "evil.example" not in json.dumps(card)
    card = approval_card([forged(severity="high")])
    assert "High severity" in json.dumps(card)


def test_lone_surrogates_are_replaced_and_the_card_is_delivered(sink: WebhookSink) -> None:
    req = forged(severity="Medium")
    req["evidence"]["Subject"] = "invoice \ud800 due"
    card = approval_card([req])
    body = serialize(to_workflows_message(card))
    assert "invoice \ufffd due" in body.decode("utf-8")
    assert asyncio.run(TeamsWebhookNotifier(sink.url).send(card)) is True
    assert len(sink.cards) == 1
