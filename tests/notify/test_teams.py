"""Webhook delivery against a real loopback HTTP sink: retries, Retry-After, giving up, secrecy."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from core.settings import ConfigError, Settings
from devtools.cardrender import examples
from devtools.webhook_sink import WebhookSink
from notifications.cards import scan_card
from notifications.teams import (
    FileNotifier,
    MemoryNotifier,
    Notifier,
    NullNotifier,
    TeamsWebhookNotifier,
    notifier_from_settings,
)

CARD = scan_card(examples.scan_report(6))


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    with WebhookSink() as s:
        yield s


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    # Everything, httpx's own request log included: that is where a URL would leak first.
    caplog.set_level(logging.DEBUG)
    return caplog


class Sleeps:
    """Records the delays the notifier asks for instead of sleeping (tests assert them, not time)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def notifier(url: str, sleeps: Sleeps, **kw) -> TeamsWebhookNotifier:
    return TeamsWebhookNotifier(url, sleep=sleeps, backoff=0.5, **kw)


def assert_secret_absent(sink: WebhookSink, *texts: str) -> None:
    for t in texts:
        assert sink.signature not in t
        assert sink.flow not in t


def test_delivers_a_workflows_message(sink: WebhookSink, logs: pytest.LogCaptureFixture) -> None:
    sleeps = Sleeps()
    assert asyncio.run(notifier(sink.url, sleeps).send(CARD)) is True
    (d,) = sink.deliveries
    assert d.status == 202 and d.problems == []
    assert d.headers["content-type"].startswith("application/json")
    assert d.json == {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": CARD}]}
    assert sink.cards == [CARD] and sleeps.delays == []
    # httpx logged the request, with the URL redacted.
    # The exact-URL filter here, or core.logsafe's parsing one once an app or the CLI installed it.
    assert "HTTP Request: POST [redacted" in logs.text
    assert_secret_absent(sink, logs.text)


def test_retries_5xx_then_succeeds(sink: WebhookSink, logs: pytest.LogCaptureFixture) -> None:
    sink.answer(500)
    sink.answer(503)
    sleeps = Sleeps()
    assert asyncio.run(notifier(sink.url, sleeps).send(CARD)) is True
    assert [d.status for d in sink.deliveries] == [500, 503, 202]
    assert len(sleeps.delays) == 2 and all(0 < d <= 30 for d in sleeps.delays)
    assert "retrying" in logs.text
    assert_secret_absent(sink, logs.text)


def test_honours_retry_after_seconds(sink: WebhookSink) -> None:
    sink.answer(429, retry_after=7)
    sleeps = Sleeps()
    assert asyncio.run(notifier(sink.url, sleeps).send(CARD)) is True
    assert sleeps.delays == [7.0]
    assert [d.status for d in sink.deliveries] == [429, 202]


def test_honours_retry_after_http_date(sink: WebhookSink) -> None:
    sink.answer(503, retry_after=format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True))
    sleeps = Sleeps()
    assert asyncio.run(notifier(sink.url, sleeps).send(CARD)) is True
    (delay,) = sleeps.delays
    assert 10 <= delay <= 20


def test_gives_up_when_retry_after_is_too_long(sink: WebhookSink, logs: pytest.LogCaptureFixture) -> None:
    sink.answer(429, retry_after=3600)
    sleeps = Sleeps()
    assert asyncio.run(notifier(sink.url, sleeps, max_delay=30).send(CARD)) is False
    assert len(sink.deliveries) == 1 and sleeps.delays == []
    assert "asked to wait 3600s" in logs.text
    assert_secret_absent(sink, logs.text)


def test_returns_false_after_all_retries(sink: WebhookSink, logs: pytest.LogCaptureFixture) -> None:
    sink.answer(502, times=10, body=b"upstream flow failed")
    sleeps = Sleeps()
    assert asyncio.run(notifier(sink.url, sleeps, retries=2).send(CARD)) is False
    assert [d.status for d in sink.deliveries] == [502, 502, 502]
    assert len(sleeps.delays) == 2
    errors = [r for r in logs.records if r.levelno == logging.ERROR]
    assert errors
    assert "not delivered after 3 attempt(s): HTTP 502 (upstream flow failed)" in errors[-1].getMessage()
    assert_secret_absent(sink, logs.text)


def test_client_errors_are_not_retried(sink: WebhookSink, logs: pytest.LogCaptureFixture) -> None:
    wrong = sink.url.replace(sink.signature, "not-the-signature")
    sleeps = Sleeps()
    assert asyncio.run(notifier(wrong, sleeps).send(CARD)) is False
    assert [d.status for d in sink.deliveries] == [401]
    assert sleeps.delays == []
    assert "HTTP 401" in logs.text
    assert "not-the-signature" not in logs.text and sink.flow not in logs.text


def test_unreachable_webhook_returns_false(logs: pytest.LogCaptureFixture) -> None:
    with WebhookSink() as gone:
        url = gone.url
    sleeps = Sleeps()
    assert asyncio.run(notifier(url, sleeps, retries=1).send(CARD)) is False
    assert len(sleeps.delays) == 1                     # network errors are retried too
    assert "ConnectError" in logs.text
    assert gone.signature not in logs.text and gone.flow not in logs.text


def test_unexpected_client_failure_never_raises(logs: pytest.LogCaptureFixture) -> None:
    url = "https://prod-07.westeurope.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?sig=SEKRET123"

    def explode(request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"bug while posting to {request.url}")

    async def go() -> bool:
        async with httpx.AsyncClient(transport=httpx.MockTransport(explode)) as client:
            return await TeamsWebhookNotifier(url, client=client, sleep=Sleeps()).send(CARD)

    assert asyncio.run(go()) is False
    assert "RuntimeError" in logs.text and "[redacted" in logs.text
    assert "SEKRET123" not in logs.text


def test_oversized_card_is_not_posted(sink: WebhookSink, logs: pytest.LogCaptureFixture) -> None:
    huge = {**CARD, "body": [{"type": "TextBlock", "text": "x" * 40_000}]}
    assert asyncio.run(notifier(sink.url, Sleeps()).send(huge)) is False
    assert sink.deliveries == []
    assert "over the" in logs.text


def test_url_never_in_repr_or_errors(sink: WebhookSink) -> None:
    n = TeamsWebhookNotifier(sink.url)
    assert_secret_absent(sink, repr(n), str(n))
    plain_http = "http://teams.example.com/workflows/x/invoke?sig=SEKRET456"
    with pytest.raises(ValueError) as info:
        TeamsWebhookNotifier(plain_http)
    assert "SEKRET456" not in str(info.value) and "teams.example.com" not in str(info.value)
    settings = Settings.from_env({"RESPONDER_TEAMS_WEBHOOK_URL": plain_http}, require=False)
    assert "SEKRET456" not in repr(settings)
    with pytest.raises(ConfigError) as cfg:
        notifier_from_settings(settings)
    assert "RESPONDER_TEAMS_WEBHOOK_URL" in str(cfg.value) and "SEKRET456" not in str(cfg.value)


def test_notifier_from_settings(sink: WebhookSink) -> None:
    off = notifier_from_settings(Settings.from_env({}, require=False))
    assert isinstance(off, NullNotifier) and asyncio.run(off.send(CARD)) is True
    on = notifier_from_settings(Settings.from_env({"RESPONDER_TEAMS_WEBHOOK_URL": sink.url}, require=False))
    assert isinstance(on, TeamsWebhookNotifier) and isinstance(on, Notifier)
    assert asyncio.run(on.send(CARD)) is True and sink.cards == [CARD]


def test_file_notifier_writes_each_card(tmp_path: Path) -> None:
    a, b = FileNotifier(tmp_path / "cards"), FileNotifier(tmp_path / "cards")
    assert asyncio.run(a.send(CARD)) is True
    assert asyncio.run(b.send(CARD)) is True          # a second writer never overwrites the first
    names = sorted(p.name for p in (tmp_path / "cards").iterdir())
    assert names == ["0001-scan.json", "0002-scan.json"]
    assert json.loads((tmp_path / "cards" / "0001-scan.json").read_text()) == CARD
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert asyncio.run(FileNotifier(blocked).send(CARD)) is False


def test_memory_notifier() -> None:
    up, down = MemoryNotifier(), MemoryNotifier(deliver=False)
    assert asyncio.run(up.send(CARD)) is True and up.cards == [CARD]
    assert asyncio.run(down.send(CARD)) is False and down.cards == []


def test_202_is_logged_as_accepted_not_delivered(sink: WebhookSink, logs: pytest.LogCaptureFixture) -> None:
    # A Workflows webhook answers 202 Accepted: the flow is queued, the card is not yet in the channel.
    assert asyncio.run(notifier(sink.url, Sleeps()).send(CARD)) is True
    assert sink.deliveries[0].status == 202
    assert "accepted (HTTP 202)" in logs.text
    assert "delivered" not in logs.text


def test_200_is_logged_as_delivered(sink: WebhookSink, logs: pytest.LogCaptureFixture) -> None:
    sink.answer(200)
    assert asyncio.run(notifier(sink.url, Sleeps()).send(CARD)) is True
    assert "delivered (HTTP 200)" in logs.text and "accepted" not in logs.text
