"""The sample tenant generator: reproducible, shaped like the hunting tables, truth matches the data."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from detections.catalog import SCHEMAS_DIR
from devtools.sample import SAMPLE_NOW, generate
from devtools.sample.attacks import MALICIOUS_CONNECTOR
from devtools.sample.model import NEWSLETTER_CONNECTOR, PARTNER_CONNECTOR
from devtools.sample.truth import CHAIN_RULE, CONNECTOR_CHANGE_RULE, CONSUMER_RULE, LOGON_RULE

TABLES = ("EmailEvents", "EmailUrlInfo", "EmailAttachmentInfo", "CloudAppEvents", "IdentityLogonEvents")


def read(tables: Path, table: str) -> list[dict[str, Any]]:
    with (tables / f"{table}.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def ts(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["Timestamp"].replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("small"), size="small").out_dir


@pytest.fixture(scope="module")
def email(small: Path) -> list[dict[str, Any]]:
    return read(small / "tables", "EmailEvents")


@pytest.fixture(scope="module")
def truth(small: Path) -> dict[str, Any]:
    return json.loads((small / "truth.json").read_text(encoding="utf-8"))


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_the_same_bytes(small: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", size="small").out_dir
    assert files(again) == files(small)


def test_another_seed_gives_another_tenant(small: Path, tmp_path: Path) -> None:
    other = generate(tmp_path / "other", size="small", seed=7).out_dir
    assert files(other)["tables/EmailEvents.jsonl"] != files(small)["tables/EmailEvents.jsonl"]


def test_explicit_row_count_is_exact(tmp_path: Path) -> None:
    g = generate(tmp_path, size="small", email_events=5_003)
    assert sum(1 for _ in (g.tables_dir / "EmailEvents.jsonl").open()) == 5_003
    assert g.counts["EmailEvents"] == 5_003


def test_too_small_a_row_count_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="alone need"):
        generate(tmp_path, email_events=10)


def test_every_row_has_exactly_the_schema_columns_in_order(small: Path) -> None:
    for table in TABLES:
        schema = json.loads((SCHEMAS_DIR / f"{table}.json").read_text(encoding="utf-8"))
        columns = [p["Name"] for p in schema["Properties"]]
        rows = read(small / "tables", table)
        assert rows, table
        assert all(list(r) == columns for r in rows), table


def test_times_stay_within_the_days_before_now(small: Path) -> None:
    for table in TABLES:
        for row in read(small / "tables", table):
            assert SAMPLE_NOW - timedelta(days=3, hours=1) <= ts(row) <= SAMPLE_NOW, (table, row["Timestamp"])


def test_tenant_config_names_the_protected_mailboxes(small: Path, truth: dict[str, Any]) -> None:
    import yaml

    config = yaml.safe_load((small / "tenant.yaml").read_text(encoding="utf-8"))
    assert config["params"]["protected_recipients"] == truth["protected_mailboxes"]
    assert len(truth["protected_mailboxes"]) == 6


# --- noise shapes the rules must leave alone -------------------------------------------------------


def test_consumer_senders_writing_to_one_shared_mailbox_are_common(email: list, truth: dict) -> None:
    protected = set(truth["protected_mailboxes"])
    consumer = ("gmail.com", "outlook.com", "hotmail.com", "yahoo.com", "icloud.com", "gmx.de", "web.de")
    boxes: dict[str, set[str]] = defaultdict(set)
    for r in email:
        if r["SenderMailFromDomain"] in consumer and r["RecipientEmailAddress"] in protected:
            boxes[r["SenderMailFromAddress"]].add(r["RecipientEmailAddress"])
    single = [s for s, b in boxes.items() if len(b) == 1]
    assert len(single) >= 20
    # Only the planted campaign senders reach more than two distinct protected mailboxes; chatty
    # customers (devtools/sample/benign.py) send more than two copies, but to one mailbox.
    assert {s for s, b in boxes.items() if len(b) > 2} == {
        "recruiting.desk.eu@gmail.com",
        "d.okafor.orders@outlook.com",
    }
    copies = Counter(
        r["SenderMailFromAddress"]
        for r in email
        if r["SenderMailFromDomain"] in consumer and r["RecipientEmailAddress"] in protected
    )
    assert any(n > 2 and len(boxes[s]) == 1 for s, n in copies.items())


def test_internal_partner_newsletter_and_spam_mail_present(email: list) -> None:
    directions = Counter(r["EmailDirection"] for r in email)
    assert directions["Intra-org"] > 300 and directions["Inbound"] > 300 and directions["Outbound"] > 300
    news = [r for r in email if r["Connectors"] == NEWSLETTER_CONNECTOR]
    assert news and all(r["SenderObjectId"] for r in news)  # a real mailbox, not an anonymous relay
    assert any(r["SenderFromDomain"] != r["SenderMailFromDomain"] for r in news)  # bounce domain differs
    assert any(r["Connectors"] == PARTNER_CONNECTOR for r in email)
    assert any(r["LatestDeliveryLocation"] == "Junk folder" for r in email)


def test_reply_chain_lookalikes_present_in_noise(small: Path, email: list) -> None:
    urls = {r["UrlDomain"] for r in read(small / "tables", "EmailUrlInfo")}
    assert {"notdropbox.com", "dropbox.com.example.net", "www.dropbox.com"} & urls


def test_normal_admin_activity_and_logon_failures(small: Path) -> None:
    cae = read(small / "tables", "CloudAppEvents")
    admin_ops = [r for r in cae if r["IsAdminOperation"] and "Connector" not in r["ActionType"]]
    assert len(admin_ops) >= 6
    connector_ops = [r for r in cae if "Connector" in r["ActionType"]]
    assert {r["ObjectName"] for r in connector_ops} == {MALICIOUS_CONNECTOR, PARTNER_CONNECTOR}
    logons = read(small / "tables", "IdentityLogonEvents")
    failed = Counter(r["AccountUpn"] for r in logons if r["ActionType"] == "LogonFailed")
    assert any(1 <= n <= 4 for n in failed.values())  # occasional mistyped passwords
    assert sum(1 for r in logons if r["ActionType"] == "LogonSuccess") > 50


# --- truth agrees with the rows that were planted ---------------------------------------------------


def test_every_expected_email_copy_is_an_inbox_row(email: list, truth: dict) -> None:
    rows = {(r["NetworkMessageId"], r["RecipientEmailAddress"]): r for r in email}
    items = [
        i
        for slug in (CONSUMER_RULE, CHAIN_RULE)
        for i in truth["rules"][slug]["expected"]
        if i["action"] == "move_to_junk"
    ]
    assert len(truth["rules"][CONSUMER_RULE]["expected"]) == 8  # 3 (one message) + 2 + 3 (separate ones)
    assert [i["action"] for i in truth["rules"][CHAIN_RULE]["expected"]] == [
        "move_to_junk",
        "notify",
        "notify",
    ]
    for item in items:
        row = rows[(item["target"]["network_message_id"], item["target"]["recipient"])]
        assert row["LatestDeliveryLocation"] == "Inbox/folder"
        assert row["InternetMessageId"] == item["internet_message_id"]


def test_campaign_is_inside_the_hour_and_spans_several_mailboxes(email: list, truth: dict) -> None:
    items = truth["rules"][CONSUMER_RULE]["expected"]
    one_message = Counter(i["target"]["network_message_id"] for i in items)
    assert 3 in one_message.values()  # one message to three recipients
    assert len({i["target"]["recipient"] for i in items}) >= 5
    for i in items:
        assert SAMPLE_NOW - timedelta(hours=1) < datetime.fromisoformat(i["timestamp"].replace("Z", "+00:00"))


def test_reply_chain_has_reply_and_file_share_link(small: Path, email: list, truth: dict) -> None:
    item = truth["rules"][CHAIN_RULE]["expected"][0]
    assert item["action"] == "move_to_junk"
    link = next(r for r in email if r["NetworkMessageId"] == item["target"]["network_message_id"])
    sender, box = link["SenderMailFromAddress"], item["target"]["recipient"]
    replies = [r for r in email if r["SenderFromAddress"] == box and r["RecipientEmailAddress"] == sender]
    assert replies and all(ts(r) < ts(link) for r in replies)
    urls = [
        u for u in read(small / "tables", "EmailUrlInfo") if u["NetworkMessageId"] == link["NetworkMessageId"]
    ]
    assert [u["UrlDomain"] for u in urls] == ["dl.dropboxusercontent.com"]
    inbound = [r for r in email if r["SenderMailFromAddress"] == sender]
    assert len(inbound) == 2  # two copies only: the correlation rule (threshold 2) cannot see it
    earlier = {
        (i["target"]["network_message_id"], i["target"]["recipient"])
        for i in truth["rules"][CHAIN_RULE]["expected"]
        if i["action"] == "notify"
    }
    first = next(r for r in inbound if r["NetworkMessageId"] != link["NetworkMessageId"])
    assert earlier == {(first["NetworkMessageId"], box), (replies[0]["NetworkMessageId"], sender)}


def test_connector_and_account_truth_match_the_audit_and_logons(small: Path, truth: dict) -> None:
    connectors = {i["target"]["connector"]: i for i in truth["rules"][CONNECTOR_CHANGE_RULE]["expected"]}
    assert connectors[MALICIOUS_CONNECTOR]["benign"] is False
    assert connectors[PARTNER_CONNECTOR]["benign"] is True
    admin = truth["rules"][LOGON_RULE]["expected"][0]["target"]["user"]
    logons = [r for r in read(small / "tables", "IdentityLogonEvents") if r["AccountUpn"] == admin]
    fails = [r for r in logons if r["ActionType"] == "LogonFailed" and r["ISP"] == "Shady Hosting Ltd"]
    success = [r for r in logons if r["ActionType"] == "LogonSuccess" and r["ISP"] == "Shady Hosting Ltd"]
    assert len(fails) >= 100 and len(success) == 1
    assert timedelta(0) < ts(success[0]) - max(ts(f) for f in fails) <= timedelta(seconds=10)
    relayed = [r for r in read(small / "tables", "EmailEvents") if r["Connectors"] == MALICIOUS_CONNECTOR]
    assert len(relayed) >= 100
    assert all(
        not r["SenderObjectId"] and r["SenderFromDomain"] != r["SenderMailFromDomain"] for r in relayed
    )


def test_background_reaches_the_morning_before_now(email: list) -> None:
    # 1-hour rules scanned at `now` must see ordinary mail, not only the planted rows.
    last_hours = [r for r in email if SAMPLE_NOW - ts(r) <= timedelta(hours=3)]
    assert sum(1 for r in last_hours if r["EmailDirection"] == "Intra-org") >= 20


def test_cluster_ids_follow_content_not_a_shared_subject(email: list, truth: dict[str, Any]) -> None:
    protected = set(truth["protected_mailboxes"])
    by_subject: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for r in email:
        if r["RecipientEmailAddress"] in protected and r["SenderObjectId"] is None:
            by_subject[r["Subject"]][r["SenderFromAddress"]].add(r["EmailClusterId"])
    shared = {s: senders for s, senders in by_subject.items() if len(senders) > 1}
    assert shared  # strangers do write the same subject ("Refund request") ...
    for senders in shared.values():  # ... but each writes their own text: one cluster per sender
        clusters = [c for ids in senders.values() for c in ids]
        assert len(clusters) == len(set(clusters))
    news = {
        r["EmailClusterId"]
        for r in email
        if r["Connectors"] == NEWSLETTER_CONNECTOR
        and r["Subject"] == email_subject(email, NEWSLETTER_CONNECTOR)
    }
    assert len(news) == 1  # one mass mailing, one cluster


def email_subject(email: list, connector: str) -> str:
    return next(r["Subject"] for r in email if r["Connectors"] == connector)
