"""The sample tenant's benign look-alikes (devtools/sample/benign.py), each with the shape issue 11 names.

Shapes are checked on the written tables, so what the rules read is what is tested."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.sample import generate
from devtools.sample.benign import CLASSES, ESP_CONNECTOR
from devtools.sample.truth import LOGON_RULE

FILE_SHARE = re.compile(r"dropbox|drive\.google|we\.tl")


def read(tables: Path, table: str) -> list[dict[str, Any]]:
    with (tables / f"{table}.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def ts(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["Timestamp"].replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory):
    return generate(tmp_path_factory.mktemp("benign"), size="small")


@pytest.fixture(scope="module")
def email(gen) -> list[dict[str, Any]]:
    return read(gen.tables_dir, "EmailEvents")


def test_every_class_adds_rows(gen) -> None:
    assert set(gen.benign_rows) == set(CLASSES)
    assert all(n > 0 for n in gen.benign_rows.values()), gen.benign_rows


def test_chatty_customers_write_three_times_to_one_mailbox_and_to_two_mailboxes_a_day_apart(
    gen, email
) -> None:
    protected = set(gen.truth["protected_mailboxes"])
    by_sender: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in email:
        if r["RecipientEmailAddress"] in protected and r["SenderObjectId"] is None:
            by_sender[r["SenderMailFromAddress"]].append(r)
    one_box = [
        rows
        for rows in by_sender.values()
        if len(rows) >= 3
        and len({r["RecipientEmailAddress"] for r in rows}) == 1
        and max(map(ts, rows)) - min(map(ts, rows)) <= timedelta(hours=1)
    ]
    assert len(one_box) >= 5
    apart = [
        rows
        for rows in by_sender.values()
        if len(rows) == 2
        and len({r["RecipientEmailAddress"] for r in rows}) == 2
        and abs(ts(rows[0]) - ts(rows[1])) >= timedelta(hours=23)
    ]
    assert apart


def test_auto_replies_answer_within_seconds_with_a_prefix_and_a_ticket_and_no_human_reply(gen, email) -> None:
    protected = set(gen.truth["protected_mailboxes"])
    urls = {r["NetworkMessageId"]: r["Url"] for r in read(gen.tables_dir, "EmailUrlInfo")}
    autos = [
        r
        for r in email
        if r["SenderFromAddress"] in protected
        and re.match(r"(Automatic reply: |Réponse automatique : |Automatische Antwort: )", r["Subject"])
    ]
    assert {r["Subject"].split(":")[0] for r in autos} == {
        "Automatic reply",
        "Réponse automatique ",
        "Automatische Antwort",
    }
    for auto in autos:
        assert re.search(r"\[Ticket #\d{6}\]$", auto["Subject"])
        customer, box = auto["RecipientEmailAddress"], auto["SenderFromAddress"]
        inbound = [
            r for r in email if r["SenderMailFromAddress"] == customer and r["RecipientEmailAddress"] == box
        ]
        first = min(inbound, key=ts)
        assert timedelta(0) < ts(auto) - ts(first) <= timedelta(seconds=30)
        # The customer's follow-up carries a file-share link; the mailbox never wrote anything else.
        assert any(FILE_SHARE.search(urls.get(r["NetworkMessageId"], "")) for r in inbound)
        assert [
            r for r in email if r["SenderFromAddress"] == box and r["RecipientEmailAddress"] == customer
        ] == [auto]


def test_esp_newsletter_aligns_on_sibling_subdomains_through_a_long_standing_connector(gen, email) -> None:
    esp = [r for r in email if r["Connectors"] == ESP_CONNECTOR]
    assert len(esp) >= 60
    assert {(r["SenderFromDomain"], r["SenderMailFromDomain"]) for r in esp} == {
        ("news.contoso.com", "bounce.contoso.com")
    }
    assert {r["SenderObjectId"] for r in esp} == {None}
    assert {r["EmailDirection"] for r in esp} == {"Outbound"}
    audit = read(gen.tables_dir, "CloudAppEvents")
    assert not [a for a in audit if ESP_CONNECTOR in json.dumps(a)], "the ESP connector must be long-standing"


def test_sales_burst_is_about_60_messages_in_an_hour_across_a_clock_hour(gen, email) -> None:
    by_sender: dict[str, set] = defaultdict(set)
    times: dict[str, list[datetime]] = defaultdict(list)
    for r in email:
        if (
            r["EmailDirection"] == "Outbound"
            and r["SenderObjectId"]
            and r["Subject"].startswith(
                ("Contoso spring offer", "Your Contoso account review", "Follow-up: ")
            )
        ):
            by_sender[r["SenderObjectId"]].add(r["NetworkMessageId"])
            times[r["SenderObjectId"]].append(ts(r))
    bursts = {s: ids for s, ids in by_sender.items() if len(ids) >= 55}
    assert bursts
    for sender in bursts:
        span = sorted(times[sender])
        # One burst per day: within an hour of its first message, 55 to 65 messages, over two clock hours.
        first = span[0]
        hour = [t for t in span if t - first <= timedelta(hours=1)]
        assert 55 <= len(hour) <= 65
        assert first.hour != hour[-1].hour
        assert len(hour) < 100  # below the relay-burst threshold in any window


def test_mistyped_passwords_fail_three_to_five_times_across_a_minute_then_succeed(gen) -> None:
    logons = sorted(read(gen.tables_dir, "IdentityLogonEvents"), key=ts)
    # The planted password attack (truth.json) is the one burst that is not a mistype.
    sprayed = {x["target"]["user"] for x in gen.truth["rules"][LOGON_RULE]["expected"]}
    by_account: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in logons:
        if r["AccountUpn"] not in sprayed:
            by_account[r["AccountObjectId"]].append(r)
    episodes = []
    for rows in by_account.values():
        run: list[dict[str, Any]] = []
        for r in rows:
            if r["ActionType"] == "LogonFailed":
                run = [*run, r] if run and ts(r) - ts(run[-1]) <= timedelta(seconds=10) else [r]
            elif (
                r["ActionType"] == "LogonSuccess"
                and len(run) >= 3
                and ts(r) - ts(run[-1]) <= timedelta(seconds=10)
            ):
                episodes.append((run, r))
                run = []
    assert episodes
    for fails, success in episodes:
        assert 3 <= len(fails) <= 5
        assert ts(fails[0]).minute != ts(success).minute  # straddles a minute boundary
        assert {(f["ISP"], f["Application"]) for f in fails} == {(success["ISP"], success["Application"])}
    assert any(s["AccountUpn"].startswith("adm-") for _, s in episodes)  # admins mistype too
