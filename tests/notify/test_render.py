"""Every card kind rendered by the real Adaptive Cards JS renderer in headless Chromium.

One browser run renders all cards (module fixture); each test then checks one card: no parse or
validation errors, and the facts on-call needs are visible in the rendered text.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from core.settings import ROOT
from devtools.cardrender import examples
from devtools.cardrender.render import RenderResult, main, render_cards
from notifications.cards import failure_card, scan_card
from notifications.message import to_workflows_message

pytestmark = [pytest.mark.browser, pytest.mark.node]

EVIL = "[Reset your password](https://evil.example/login)"


def _cards() -> dict[str, dict]:
    cards = examples.all_cards()
    cards["quota"] = failure_card(examples.quota_failure())
    big = examples.scan_report(1200)
    cards["big"] = scan_card(big)
    evil = examples.scan_report(2)
    for r in evil.requests:
        r["evidence"]["Subject"] = EVIL
    evil.outcomes[0].state, evil.outcomes[0].error = "failed", EVIL
    cards["evil"] = scan_card(evil)
    base = {"type": "AdaptiveCard", "version": "1.5"}
    # Controls: prove the harness can fail, and that its Markdown does make links.
    cards["markdown_control"] = {**base, "body": [{"type": "TextBlock", "text": EVIL}]}
    cards["submit"] = {**base, "body": [{"type": "TextBlock", "text": "x"}],
                       "actions": [{"type": "Action.Submit", "title": "Approve"}]}
    cards["unknown_element"] = {**base, "body": [{"type": "Carousel2000", "items": []}]}
    return cards


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RenderResult]:
    return render_cards(_cards(), tmp_path_factory.mktemp("cards"))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("name", ["scan", "approval", "failure", "quota", "digest", "big", "evil"])
def test_cards_render_without_errors(rendered: dict[str, RenderResult], name: str) -> None:
    result = rendered[name]
    assert result.errors == []
    assert result.png is not None and png_size(result.png)[0] == 540
    assert all(a["type"] == "Action.OpenUrl" and a["url"].startswith("https://") for a in result.actions)


def test_scan_card_shows_key_facts(rendered: dict[str, RenderResult]) -> None:
    report = examples.scan_report()
    text = rendered["scan"].text
    for fact in (report.rule_name, report.rule, "Medium severity", "Rows found", "24", "Done", "17",
                 "Failed", "Move to Junk: 17 done, 3 submitted, 3 skipped, 1 failed", "ErrorItemNotFound",
                 "Recipients (24)", "and 14 more", "j.smith0@gmail.com", "Senders (3)", "Submission",
                 "Incidents"):
        assert fact in text
    urls = [a["url"] for a in rendered["scan"].actions]
    assert "https://security.microsoft.com/action-center/history?actionId=4c1f09" in urls


def test_approval_card_shows_how_to_approve(rendered: dict[str, RenderResult]) -> None:
    text = rendered["approval"].text
    kwargs = examples.approval_example()
    assert examples.CONNECTOR_COMMAND in " ".join(text.split())
    for r in kwargs["requests"]:
        assert f"python -m responder approve {r['id']}" in text
        assert f"POST /api/requests/{r['id']}/approve" in text
    for fact in ("2 actions wait for a person", "Partner relay (Fabrikam)", "203.0.113.77",
                 "admin.backup@contoso.onmicrosoft.com", "High severity", "Connectors"):
        assert fact in text


def test_failure_cards_show_reason_and_next_step(rendered: dict[str, RenderResult]) -> None:
    poison = rendered["failure"].text
    assert "poison message" in poison and "403 Forbidden" in poison
    assert "What happens next" in poison and "not retried automatically" in poison
    quota = rendered["quota"].text
    assert "hunting quota exhausted" in quota and "540 s" in quota and "Scheduled runs continue" in quota


def test_digest_card_shows_counts(rendered: dict[str, RenderResult]) -> None:
    text = rendered["digest"].text
    for fact in ("278 requests, 3 held, 3 failed", "Consumer sender mails several protected shared mailboxes",
                 "212", "3 requests wait for approval", "Rules with failed runs"):
        assert fact in text


def test_big_card_truncation_is_visible(rendered: dict[str, RenderResult]) -> None:
    assert "Recipients (1200)" in rendered["big"].text
    assert "and 1190 more" in rendered["big"].text


def test_untrusted_markdown_stays_text(rendered: dict[str, RenderResult]) -> None:
    # The control shows the harness turns Markdown into a link; the card must not.
    assert [a["href"] for a in rendered["markdown_control"].anchors] == ["https://evil.example/login"]
    assert EVIL in rendered["evil"].text
    assert rendered["evil"].anchors == []


def test_harness_reports_what_teams_would_reject(rendered: dict[str, RenderResult]) -> None:
    assert any("Action.Submit" in e for e in rendered["submit"].errors)
    assert rendered["submit"].actions == []
    assert any("Carousel2000" in e for e in rendered["unknown_element"].errors)


@pytest.mark.parametrize("kind", ["scan", "approval", "failure", "digest"])
def test_docs_keep_a_png_of_each_card(kind: str) -> None:
    # Regenerate with: python -m devtools.cardrender.render --examples docs/cards
    assert png_size(ROOT / "docs" / "cards" / f"{kind}.png")[0] == 540


def test_render_cli_accepts_messages_and_fails_on_bad_cards(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(to_workflows_message(failure_card(examples.quota_failure()))))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_cards()["submit"]))
    assert main([str(good), str(bad), "--out", str(tmp_path / "png")]) == 1
    out = capsys.readouterr().out
    assert "good: ok" in out and "bad: ERRORS" in out and "Action.Submit" in out
    assert png_size(tmp_path / "png" / "good.png")[0] == 540
