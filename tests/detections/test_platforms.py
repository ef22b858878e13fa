"""One rule text, two services: Sentinel's streamed EmailEvents behind the prelude means Defender's table."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from detections.backends.local import LocalBackend
from detections.catalog import load_rule
from detections.kqlcheck import check_queries, check_rules, table_schemas
from detections.platforms import (
    SENTINEL_EMAILEVENTS_VIEW,
    for_platform,
    platforms_for,
    reads_emailevents,
    sentinel_rows,
)
from detections.ruletests import load_tests, run_case
from tests.detections.helpers import write_rule

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)

# Sentinel as it streams: m1 delivered to the Inbox, then moved to Junk (a second row); m2 still in the
# Inbox; m3 to two recipients, one copy moved.
def _row(ts: str, tg: str, nmid: str, rcpt: str, location: str, action: str) -> dict:
    return {"Timestamp": ts, "TimeGenerated": tg, "NetworkMessageId": nmid, "RecipientEmailAddress": rcpt,
            "DeliveryLocation": location, "DeliveryAction": action}


A, B = "a@contoso.com", "b@contoso.com"
STREAMED = {"EmailEvents": [
    _row("now-30m", "now-29m", "m1", A, "Inbox/folder", "Delivered"),
    _row("now-10m", "now-9m", "m1", A, "Junk folder", "Junked"),
    _row("now-20m", "now-19m", "m2", A, "Inbox/folder", "Delivered"),
    _row("now-15m", "now-14m", "m3", A, "Inbox/folder", "Delivered"),
    _row("now-15m", "now-14m", "m3", B, "Inbox/folder", "Delivered"),
    _row("now-5m", "now-4m", "m3", B, "Deleted items", "Delivered"),
]}


def rows(backend: LocalBackend, query: str) -> list[dict]:
    return asyncio.run(backend.run(query, timespan=HOUR)).rows


def test_the_prelude_gives_one_latest_row_per_message_and_recipient() -> None:
    backend = LocalBackend.from_rows(STREAMED, NOW, source="t", platform="sentinel")
    got = rows(backend, "EmailEvents | project NetworkMessageId, RecipientEmailAddress, Timestamp, "
                        "LatestDeliveryLocation, LatestDeliveryAction | sort by NetworkMessageId asc, "
                        "RecipientEmailAddress asc")
    def want(nmid: str, rcpt: str, ts: str, location: str, action: str) -> dict:
        return {"NetworkMessageId": nmid, "RecipientEmailAddress": rcpt, "Timestamp": f"2026-11-20T{ts}Z",
                "LatestDeliveryLocation": location, "LatestDeliveryAction": action}
    # Timestamp stays the delivery's (the first row's), as on Defender.
    assert got == [want("m1", A, "11:30:00", "Junk folder", "Junked"),
                   want("m2", A, "11:40:00", "Inbox/folder", "Delivered"),
                   want("m3", A, "11:45:00", "Inbox/folder", "Delivered"),
                   want("m3", B, "11:45:00", "Deleted items", "Delivered")]
    # Counting mail counts messages per recipient, not location changes (the seed rule counts mail).
    assert rows(backend, "EmailEvents | count") == [{"Count": 4}]


def test_sentinel_tables_have_no_latest_columns_without_the_prelude() -> None:
    backend = LocalBackend.from_rows(STREAMED, NOW, source="t", platform="sentinel")
    assert "LatestDeliveryLocation" not in {c for c, _ in backend.schemas["EmailEvents"]}
    with pytest.raises(ValueError, match="unknown column 'LatestDeliveryLocation'"):
        LocalBackend.from_rows({"EmailEvents": [{"LatestDeliveryLocation": "Junk folder"}]}, NOW,
                               source="t", platform="sentinel")


def test_the_prelude_goes_only_where_sentinel_needs_it() -> None:
    q = "CloudAppEvents | where ActionType == 'EmailEvents' // EmailEvents in a comment"
    assert not reads_emailevents(q) and for_platform(q, "sentinel") == q
    assert for_platform("EmailEvents | take 1", "defender") == "EmailEvents | take 1"
    q = "EmailEvents | take 1"
    assert for_platform(q, "sentinel") == SENTINEL_EMAILEVENTS_VIEW + "\n" + q
    assert platforms_for("defender") == ("defender", "sentinel")
    assert platforms_for("sentinel") == ("sentinel",)
    with pytest.raises(ValueError, match="unknown platform"):
        for_platform("EmailEvents", "splunk")


def test_defender_rows_become_the_rows_sentinel_streams() -> None:
    out = sentinel_rows({"EmailEvents": [
        {"Timestamp": "now-20m", "NetworkMessageId": "m1", "DeliveryLocation": "Inbox/folder",
         "LatestDeliveryLocation": "Junk folder", "LatestDeliveryAction": "Junked"},
        {"Timestamp": "now-10m", "NetworkMessageId": "m2"}],
        "CloudAppEvents": [{"Timestamp": "now-5m", "ActionType": "x"}]}, NOW)
    assert out["EmailEvents"] == [
        {"Timestamp": "now-20m", "NetworkMessageId": "m1", "DeliveryLocation": "Inbox/folder",
         "TimeGenerated": "2026-11-20T11:40:00+00:00"},
        {"Timestamp": "2026-11-20T11:41:00+00:00", "NetworkMessageId": "m1",
         "DeliveryLocation": "Junk folder",
         "DeliveryAction": "Junked", "TimeGenerated": "2026-11-20T11:41:00+00:00"},
        {"Timestamp": "now-10m", "NetworkMessageId": "m2"}]
    assert out["CloudAppEvents"] == [{"Timestamp": "now-5m", "ActionType": "x"}]


@pytest.mark.node
def test_microsofts_parser_accepts_the_prelude_shadowing_the_table() -> None:
    query = ("EmailEvents | where LatestDeliveryLocation =~ 'inbox/folder' "
             "| project Timestamp, TimeGenerated, LatestDeliveryLocation, LatestDeliveryAction, "
             "DeliveryLocation")
    bare, viewed = check_queries([query, for_platform(query, "sentinel")], platform="sentinel")
    assert [d.code for d in bare.errors] == ["KS142", "KS142", "KS142"]   # no Latest* columns on Sentinel
    assert viewed.errors == []
    assert viewed.columns == [("Timestamp", "datetime"), ("TimeGenerated", "datetime"),
                              ("LatestDeliveryLocation", "string"), ("LatestDeliveryAction", "string"),
                              ("DeliveryLocation", "string")]
    sentinel_cols = {c for c, _ in table_schemas("sentinel")["EmailEvents"]}
    assert "TimeGenerated" in sentinel_cols and "LatestDeliveryLocation" not in sentinel_cols
    assert "LatestDeliveryLocation" in {c for c, _ in table_schemas("defender")["EmailEvents"]}


# A rule that reads the ORIGINAL DeliveryLocation: on Defender that is where the mail was delivered; on
# Sentinel the prelude's latest row carries the latest location there. docs/rules.md lists this difference;
# the rule-test runner must catch it.
ORIGINAL_LOCATION_QUERY = """EmailEvents
| where Timestamp > ago(window)
| where RecipientEmailAddress in~ (protected_recipients)
| where DeliveryLocation =~ "Inbox/folder"
| project Timestamp, NetworkMessageId, RecipientEmailAddress, InternetMessageId, LatestDeliveryLocation,
    RecipientObjectId"""
CASES = {"now": "2026-11-20T12:00:00Z", "params": {"protected_recipients": ["support@contoso.com"]},
         "cases": [
    {"name": "delivered to the Inbox, since moved to Junk", "kind": "positive", "tables": {"EmailEvents": [
        {"Timestamp": "now-20m", "NetworkMessageId": "m1", "RecipientEmailAddress": "support@contoso.com",
         "DeliveryLocation": "Inbox/folder", "LatestDeliveryLocation": "Junk folder"}]},
     "expect": [{"action": "move_to_junk", "target": {"network_message_id": "m1",
                                                     "recipient": "support@contoso.com"}}]},
    {"name": "delivered to Junk", "kind": "negative", "tables": {"EmailEvents": [
        {"Timestamp": "now-20m", "NetworkMessageId": "m2", "RecipientEmailAddress": "support@contoso.com",
         "DeliveryLocation": "Junk folder", "LatestDeliveryLocation": "Junk folder"}]},
     "expect": []}]}


def _rule(tmp_path: Path, query: str):
    def edit(data: dict) -> None:
        data["query"] = query
        data["responder"]["remediation"][0]["evidence"] = ["Timestamp", "LatestDeliveryLocation"]
    path = write_rule(tmp_path, "original-location", edit, with_tests=False)
    path.with_name("original-location.tests.yaml").write_text(yaml.safe_dump(CASES), encoding="utf-8")
    return load_rule(path)


def test_rule_cases_run_on_both_platforms_and_name_the_one_that_differs(tmp_path: Path) -> None:
    tests = load_tests(_rule(tmp_path, ORIGINAL_LOCATION_QUERY))

    async def go() -> list:
        return [await run_case(tests, c) for c in tests.cases]
    positive, negative = asyncio.run(go())
    assert not positive.passed
    assert positive.missing == ['sentinel: move_to_junk {"network_message_id": "m1", '
                                '"recipient": "support@contoso.com"}']
    assert "- missing:    sentinel: move_to_junk" in positive.diff()
    assert negative.passed


def test_a_rule_reading_the_latest_location_passes_on_both(tmp_path: Path) -> None:
    tests = load_tests(_rule(tmp_path, ORIGINAL_LOCATION_QUERY.replace(
        'where DeliveryLocation =~ "Inbox/folder"', 'where LatestDeliveryLocation =~ "Junk folder"')))

    async def go() -> list:
        return [await run_case(tests, c) for c in tests.cases]
    positive, negative = asyncio.run(go())
    assert positive.passed, positive.diff()
    assert not negative.passed and negative.unexpected == [
        'move_to_junk {"network_message_id": "m2", "recipient": "support@contoso.com"}']  # same on both


@pytest.mark.node
def test_the_parser_check_binds_each_rule_for_both_platforms(tmp_path: Path) -> None:
    # TimeGenerated exists only on Sentinel: a defender-shaped rule reading it fails on Defender alone.
    query = ORIGINAL_LOCATION_QUERY.replace("Timestamp > ago(window)", "TimeGenerated > ago(window)")
    rule = _rule(tmp_path, query)
    [problem] = check_rules([rule])[rule.slug]
    assert problem.startswith(f"on defender: {rule.path}: query: line 2, column 9: KS142")
