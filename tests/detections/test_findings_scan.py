"""Rows -> requests (when, targets, evidence, dedup, modes) and scans that survive one rule failing."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from core.request import RequestInvalid, validate_request
from core.tenant import TenantConfig
from detections.backends.local import LocalBackend
from detections.catalog import Rule, load_rule
from detections.findings import json_safe, requests_from_rows, trim_evidence
from detections.scan import scan
from tests.detections.helpers import write_rule

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
ROWS = [
    {
        "Timestamp": "now-30m",
        "NetworkMessageId": "m1",
        "RecipientEmailAddress": "a@contoso.com",
        "Subject": "first",
        "UrlCount": 0,
        "InternetMessageId": "<1@x>",
    },
    {
        "Timestamp": "now-20m",
        "NetworkMessageId": "m2",
        "RecipientEmailAddress": "b@contoso.com",
        "Subject": "link",
        "UrlCount": 1,
    },
    # the same copy reported twice (e.g. two events for one delivery): one request
    {
        "Timestamp": "now-19m",
        "NetworkMessageId": "m2",
        "RecipientEmailAddress": "B@contoso.com",
        "Subject": "link",
        "UrlCount": 1,
    },
    # no recipient: reported, not turned into a broken request
    {
        "Timestamp": "now-10m",
        "NetworkMessageId": "m3",
        "RecipientEmailAddress": "",
        "Subject": "link",
        "UrlCount": 2,
    },
]


def staged_rule(tmp_path: Path, slug: str = "staged", query: str | None = None) -> Rule:
    def edit(data: dict) -> None:
        data["id"] = "00000000-0000-4000-8000-" + f"{abs(hash(slug)) % 10**12:012d}"
        data["query"] = query or (
            "EmailEvents\n| where Timestamp > ago(window)\n"
            "| extend Stage = iff(UrlCount > 0, 'link', 'first')\n"
            "| project Timestamp, NetworkMessageId, RecipientEmailAddress, InternetMessageId,\n"
            "    Subject, Stage\n"
            "| sort by Timestamp asc"
        )
        data["responder"]["remediation"] = [
            {
                "action": "move_to_junk",
                "mode": "auto",
                "when": {"column": "Stage", "equals": "link"},
                "target": {"network_message_id": "NetworkMessageId", "recipient": "RecipientEmailAddress"},
                "evidence": ["Timestamp", "Subject", "Stage"],
            },
            {
                "action": "soft_delete",
                "mode": "approval",
                "when": {"column": "Stage", "in": ["first"]},
                "target": {
                    "network_message_id": "NetworkMessageId",
                    "recipient": "RecipientEmailAddress",
                    "internet_message_id": "InternetMessageId",
                },
                "evidence": ["Subject"],
            },
        ]

    return load_rule(write_rule(tmp_path, slug, edit, with_tests=False))


def run_scan(rules, tenant: TenantConfig | None = None, dry_run=False, rows=ROWS):
    tenant = tenant or TenantConfig()
    backend = LocalBackend.from_rows({"EmailEvents": rows}, NOW, source="t")
    return asyncio.run(
        scan(
            rules,
            backend,
            tenant=tenant,
            overrides={"protected_recipients": "a@contoso.com"},
            now=NOW,
            dry_run=dry_run,
            run_id="run-1",
        )
    )


def test_when_targets_evidence_dedup_and_problems(tmp_path: Path) -> None:
    (run,) = run_scan([staged_rule(tmp_path)])
    assert run.error is None
    reqs = run.requests
    assert [(r["action"], r["target"]) for r in reqs] == [
        (
            "soft_delete",
            {"network_message_id": "m1", "recipient": "a@contoso.com", "internet_message_id": "<1@x>"},
        ),
        ("move_to_junk", {"network_message_id": "m2", "recipient": "b@contoso.com"}),
    ]
    assert reqs[0]["mode"] == "approval" and reqs[1]["mode"] == "auto"
    assert reqs[1]["evidence"] == {"Timestamp": "2026-11-20T11:40:00Z", "Subject": "link", "Stage": "link"}
    # run.index counts per action (the cap's unit); run.total counts the whole run.
    assert [r["run"] for r in reqs] == [
        {"id": "run-1", "index": 0, "total": 2},
        {"id": "run-1", "index": 0, "total": 2},
    ]
    for r in reqs:
        validate_request(json.loads(json.dumps(r)))
        assert r["severity"] == "Medium" and r["rule_name"] == run.rule.name
        assert r["detected_at"] == "2026-11-20T12:00:00Z"
    # Pinned by hand from the documented recipe (core/request.py): the first 32 hex digits of
    # sha256 of the compact JSON [rule, action, {identifying target fields, case-folded}], sorted keys;
    # internet_message_id is not an identifying field. A change of the dedup key must fail here.
    #   ["staged","soft_delete",{"network_message_id":"m1","recipient":"a@contoso.com"}]
    #   ["staged","move_to_junk",{"network_message_id":"m2","recipient":"b@contoso.com"}]
    assert [r["id"] for r in reqs] == ["2a0f066039cd79582397f069557498a2", "22bca6dd094be5995e67b9624f33b967"]
    assert run.problems == [
        "staged: row 4: move_to_junk: empty recipient (column RecipientEmailAddress); no request made"
    ]


def test_ids_are_stable_across_runs(tmp_path: Path) -> None:
    rule = staged_rule(tmp_path)
    first = [r["id"] for r in run_scan([rule])[0].requests]
    again = [r["id"] for r in run_scan([rule])[0].requests]
    assert first == again and len(set(first)) == 2


def test_scan_requests_say_scheduled_and_a_push_request_for_the_same_copy_has_the_same_id(
        tmp_path: Path) -> None:
    rule = staged_rule(tmp_path)
    (run,) = run_scan([rule])
    assert {r["source"] for r in run.requests} == {"scheduled"}
    # The push worker turns its rows (same columns) into requests with source "push": same ids.
    pushed = requests_from_rows(rule, [{**ROWS[1], "Stage": "link"}], modes={0: "auto", 1: "approval"},
                                detected_at=NOW, run_id="push-1", source="push").requests
    (push_req,) = pushed
    scheduled = next(r for r in run.requests if r["action"] == "move_to_junk")
    assert push_req["source"] == "push" and push_req["id"] == scheduled["id"]
    validate_request(json.loads(json.dumps(push_req)))


@pytest.mark.parametrize("source", ["", "Push", "manual", 1, None])
def test_a_request_with_an_unknown_source_is_invalid(tmp_path: Path, source: object) -> None:
    (run,) = run_scan([staged_rule(tmp_path)])
    req = {**json.loads(json.dumps(run.requests[0])), "source": source}
    with pytest.raises(RequestInvalid, match="source"):
        validate_request(req)


@pytest.mark.parametrize(
    ("tenant_mode", "dry_run", "expected"),
    [
        (None, False, ["approval", "auto"]),
        ("approval", False, ["approval", "approval"]),
        ("auto", True, ["dry_run", "dry_run"]),
    ],
)
def test_mode_precedence(tmp_path: Path, tenant_mode, dry_run: bool, expected: list[str]) -> None:
    rule = staged_rule(tmp_path)
    tenant = TenantConfig.from_mapping(
        {"rules": {"staged": {"mode": tenant_mode}}} if tenant_mode else {}, source="t"
    )
    (run,) = run_scan([rule], tenant=tenant, dry_run=dry_run)
    assert [r["mode"] for r in run.requests] == expected


def test_one_failing_rule_does_not_stop_the_others(tmp_path: Path) -> None:
    broken = staged_rule(tmp_path, "broken", query="EmailEvents | project-reorder Subject")
    good = staged_rule(tmp_path, "good")
    refused = load_rule(
        Path(__file__).resolve().parents[2] / "detections/rules/consumer-sender-to-shared-mailboxes.yaml"
    )
    backend = LocalBackend.from_rows({"EmailEvents": ROWS}, NOW, source="t")
    per_rule = {"params": {"protected_recipients": ["a@contoso.com"]}}
    tenant = TenantConfig.from_mapping({"rules": {"broken": per_rule, "good": per_rule}}, source="t")
    runs = asyncio.run(scan([broken, refused, good], backend, tenant=tenant, overrides={}, now=NOW))
    assert [r.rule.slug for r in runs] == ["broken", "consumer-sender-to-shared-mailboxes", "good"]
    assert runs[0].error.startswith("broken: local backend: local engine: duckdb-kql does not support")
    assert runs[0].requests == [] and not runs[0].refused
    assert runs[1].refused and "protected_recipients" in runs[1].error and runs[1].query == ""
    assert runs[2].error is None and len(runs[2].requests) == 2
    assert len({r.run_id for r in runs}) == 1


def test_window_reaches_the_query_and_the_backend(tmp_path: Path) -> None:
    rule = staged_rule(tmp_path)
    backend = LocalBackend.from_rows({"EmailEvents": ROWS}, NOW, source="t")
    seen: list[timedelta] = []
    real_run = backend.run

    async def recording_run(query: str, *, timespan: timedelta, shape: str = "defender"):
        seen.append(timespan)
        return await real_run(query, timespan=timespan, shape=shape)

    backend.run = recording_run  # type: ignore[method-assign]
    (run,) = asyncio.run(
        scan(
            [rule],
            backend,
            tenant=TenantConfig(),
            overrides={"window": "25m", "protected_recipients": "a@x.com"},
            now=NOW,
        )
    )
    assert seen == [timedelta(minutes=25)]
    assert run.query.startswith("let window = 25m;")
    # m1 (30 minutes old) is outside a 25-minute window
    assert [r["target"]["network_message_id"] for r in run.requests] == ["m2"]


def test_json_safe_values() -> None:
    moment = datetime(2026, 11, 20, 11, 0, 0, 123000, tzinfo=UTC)
    assert json_safe({"t": moment, "d": Decimal("1.5"), "l": (1, "a"), "s": {1}, "n": None}) == {
        "t": "2026-11-20T11:00:00.123000Z",
        "d": 1.5,
        "l": [1, "a"],
        "s": [1],
        "n": None,
    }
    assert json_safe(datetime(2026, 1, 1)) == "2026-01-01T00:00:00Z"


def test_findings_from_sdk_typed_rows(tmp_path: Path) -> None:
    # Sentinel's SDK hands back datetime objects; evidence must still be JSON.
    rule = staged_rule(tmp_path)
    rows = [
        {
            "Timestamp": datetime(2026, 11, 20, 11, 0, tzinfo=UTC),
            "NetworkMessageId": "m",
            "Stage": "link",
            "RecipientEmailAddress": "a@contoso.com",
            "Subject": "s",
        }
    ]
    found = requests_from_rows(rule, rows, modes={0: "auto", 1: "auto"}, detected_at=NOW, run_id="r")
    assert json.loads(json.dumps(found.requests))[0]["evidence"]["Timestamp"] == "2026-11-20T11:00:00Z"


def test_scan_refuses_unknown_override_names_before_running(tmp_path: Path) -> None:
    from detections.params import ParamError

    rule = staged_rule(tmp_path)
    backend = LocalBackend.from_rows({"EmailEvents": ROWS}, NOW, source="t")
    with pytest.raises(ParamError, match="parameter treshold: no selected rule declares"):
        asyncio.run(scan([rule], backend, tenant=TenantConfig(), overrides={"treshold": "1"}, now=NOW))


def test_lookback_is_the_window(tmp_path: Path) -> None:
    rule = staged_rule(tmp_path)
    backend = LocalBackend.from_rows({"EmailEvents": ROWS}, NOW, source="t")
    overrides = {"protected_recipients": "a@x.com"}
    (run,) = asyncio.run(
        scan(
            [rule],
            backend,
            tenant=TenantConfig(),
            overrides=overrides,
            now=NOW,
            lookback=timedelta(minutes=25),
        )
    )
    assert run.params["window"] == timedelta(minutes=25)
    assert [r["target"]["network_message_id"] for r in run.requests] == ["m2"]


@pytest.mark.parametrize(
    ("operator", "threshold", "fires"),
    [("gt", 0, True), ("gt", 4, False), ("gt", 3, True), ("eq", 4, True), ("lt", 4, False), ("ne", 4, False)],
)
def test_trigger_operator_and_threshold(tmp_path: Path, operator: str, threshold: int, fires: bool) -> None:
    # The staged query returns 4 rows.
    def edit(data: dict) -> None:
        data["query"] = "EmailEvents | project NetworkMessageId, RecipientEmailAddress, Subject"
        data["triggerOperator"] = operator
        data["triggerThreshold"] = threshold
        data["responder"]["remediation"][0]["evidence"] = ["Subject"]

    rule = load_rule(write_rule(tmp_path, "trig", edit, with_tests=False))
    (run,) = run_scan([rule])
    assert len(run.rows) == 4
    assert run.triggered is fires
    assert len(run.requests) == (2 if fires else 0)


def test_notify_targets_are_their_identity_and_empty_ones_are_reported(tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        data["query"] = "EmailEvents | project NetworkMessageId, RecipientEmailAddress, Subject"
        data["responder"]["remediation"] = [
            {
                "action": "notify",
                "mode": "auto",
                "target": {"recipient": "RecipientEmailAddress"},
                "evidence": ["Subject"],
            }
        ]
        data["responder"].pop("scope")

    rule = load_rule(write_rule(tmp_path, "tell", edit, with_tests=False))
    (run,) = run_scan([rule])
    recipients = [r["target"]["recipient"] for r in run.requests]
    # b@ and B@ are one request (ids fold case); the row without a recipient is reported
    assert recipients == ["a@contoso.com", "b@contoso.com"]
    assert run.problems == [
        "tell: row 4: notify: empty every target field (RecipientEmailAddress); no request made"
    ]


def test_run_index_counts_per_action_so_notify_rows_do_not_use_up_the_cap(tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        data["query"] = "EmailEvents | project NetworkMessageId, RecipientEmailAddress, Subject"
        data["responder"]["remediation"] = [
            {"action": "notify", "mode": "auto", "target": {"network_message_id": "NetworkMessageId"},
             "evidence": ["Subject"]},
            {"action": "move_to_junk", "mode": "auto",
             "target": {"network_message_id": "NetworkMessageId", "recipient": "RecipientEmailAddress"},
             "evidence": ["Subject"]},
        ]

    rule = load_rule(write_rule(tmp_path, "both", edit, with_tests=False))
    rows = [{"NetworkMessageId": f"m{i}", "RecipientEmailAddress": "a@contoso.com", "Subject": "s"}
            for i in range(3)]
    found = requests_from_rows(rule, rows, modes={0: "auto", 1: "auto"}, detected_at=NOW, run_id="r")
    assert [(r["action"], r["run"]["index"], r["run"]["total"]) for r in found.requests] == [
        ("notify", 0, 6), ("move_to_junk", 0, 6),
        ("notify", 1, 6), ("move_to_junk", 1, 6),
        ("notify", 2, 6), ("move_to_junk", 2, 6),
    ]


def test_huge_evidence_is_trimmed_with_markers_and_the_request_fits_a_queue_message(tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        data["query"] = "EmailEvents | project NetworkMessageId, RecipientEmailAddress, Subject, Ids, Body"
        data["responder"]["remediation"] = [
            {"action": "move_to_junk", "mode": "auto",
             "target": {"network_message_id": "NetworkMessageId", "recipient": "RecipientEmailAddress"},
             "evidence": ["Subject", "Ids", "Body"]},
        ]

    rule = load_rule(write_rule(tmp_path, "huge", edit, with_tests=False))
    ids = [f"{i:08d}-aaaa-bbbb-cccc-{i:012d}" for i in range(5000)]   # a make_set column: ~190 KB
    row = {"NetworkMessageId": "m1", "RecipientEmailAddress": "a@contoso.com", "Subject": "short",
           "Ids": ids, "Body": "x" * 100_000}
    [req] = requests_from_rows(rule, [row], modes={0: "auto"}, detected_at=NOW, run_id="r").requests
    body = json.dumps(req, ensure_ascii=False).encode("utf-8")
    assert len(body) < 48 * 1024
    validate_request(json.loads(body))
    ev = req["evidence"]
    assert ev["Subject"] == "short"                       # short values are kept as they are
    assert ev["Ids"][:3] == ids[:3]
    kept = len(ev["Ids"]) - 1
    assert ev["Ids"][-1] == f"\u2026(+{5000 - kept} more)"
    cut = ev["Body"].index("\u2026")
    assert ev["Body"] == "x" * cut + f"\u2026(+{100_000 - cut} more)"


def test_small_evidence_is_not_touched(tmp_path: Path) -> None:
    row = {"NetworkMessageId": "m1", "RecipientEmailAddress": "a@contoso.com", "Subject": "s" * 3000,
           "Ids": [str(i) for i in range(300)]}
    assert trim_evidence(row) == row
