"""The detection-quality benchmark: what it reads from the rules' cases, how it scans, what it reports."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from detections.backends.local import LocalBackend
from detections.catalog import RuleError, load_catalog
from detections.ruletests import load_tests
from devtools.bench import __main__ as bench_main
from devtools.bench import quality
from devtools.bench.report import render

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
SLUG = "consumer-sender-to-shared-mailboxes"


def tagged_copy(tmp_path: Path, classes: list[str]) -> Any:
    """The rule with a copy of its tests in tmp_path, the first case tagged with ``classes`` and only it
    (the rule's own tags are dropped, so the expectation does not follow the real file's tags)."""
    rule = load_catalog()[SLUG]
    shutil.copy(rule.path, tmp_path / rule.path.name)
    data = yaml.safe_load(rule.tests_path.read_text(encoding="utf-8"))
    for case in data["cases"]:
        case.pop("classes", None)
    data["cases"][0]["classes"] = classes
    (tmp_path / rule.tests_path.name).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return dataclasses.replace(rule, path=tmp_path / rule.path.name), data


def test_case_summary_counts_kinds_and_collects_class_tags(tmp_path: Path) -> None:
    rule, data = tagged_copy(tmp_path, ["sliding-window", "count-distinct"])
    kinds = [c["kind"] for c in data["cases"]]
    summary = quality.case_summary(rule)
    assert summary == {
        "positive": kinds.count("positive"),
        "negative": kinds.count("negative"),
        "classes": ["count-distinct", "sliding-window"],
    }  # in the order


def test_the_class_tag_is_optional_and_checked_against_the_documented_names(tmp_path: Path) -> None:
    rule, _ = tagged_copy(tmp_path, ["auto-reply", "campaign"])
    assert load_tests(rule).cases  # known names load
    rule, _ = tagged_copy(tmp_path, ["sliding-windows"])
    with pytest.raises(RuleError, match="classes"):
        load_tests(rule)


def test_scan_times_tile_the_span_with_the_window_or_scan_once() -> None:
    assert quality.scan_times(timedelta(hours=1), NOW, timedelta(days=1)) == [
        NOW - timedelta(hours=k) for k in range(24)
    ]
    assert quality.scan_times(timedelta(days=7), NOW, timedelta(days=1)) == [NOW]


def test_a_scan_as_of_a_moment_sees_no_later_rows() -> None:
    backend = LocalBackend.from_rows(
        {
            "EmailEvents": [
                {"Timestamp": "now-3h", "NetworkMessageId": "old"},
                {"Timestamp": "now-1h", "NetworkMessageId": "new"},
            ]
        },
        NOW,
        source="t",
    )
    for table in backend.schemas:
        backend.con.execute(f'ALTER TABLE "{table}" RENAME TO "_full_{table}"')
    quality._as_of(backend, NOW - timedelta(hours=2))
    rows = asyncio.run(
        backend.run(
            "EmailEvents | where Timestamp > ago(1d) | project NetworkMessageId, n = now()",
            timespan=timedelta(days=1),
        )
    ).rows
    assert rows == [{"NetworkMessageId": "old", "n": "2026-11-20T10:00:00Z"}]


def test_quality_is_a_bench_subcommand_and_a_report_section(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}
    figures = {
        "size": "small",
        "seed": 1,
        "now": "2026-11-20T12:00:00Z",
        "span_h": 24.0,
        "counts": {"EmailEvents": 3000},
        "benign_rows": {"auto-reply": 18},
        "rules": [
            {
                "slug": SLUG,
                "positive": 4,
                "negative": 6,
                "classes": ["count-distinct"],
                "enabled": True,
                "error": None,
                "tables": ["EmailEvents"],
                "scans": 24,
                "background_rows": 500,
                "requests": 9,
                "expected": 8,
                "found": 8,
                "false_positives": 1,
                "fp_per_100k_rows": 200.0,
                "fp_by_class": {"chatty-customer": 1},
            }
        ],
    }

    def fake_run(size: str) -> dict[str, Any]:
        seen["size"] = size
        return figures

    monkeypatch.setattr(quality, "run", fake_run)
    assert bench_main.main(["quality", "--quality-size", "small"]) == 0
    out = capsys.readouterr().out
    assert seen == {"size": "small"}
    assert "## Detection quality" in out and "## Time to remediate" not in out
    assert f"| {SLUG} | 4 / 6 | count-distinct | 24 | 8 / 8 | 1 | 200.0 | chatty-customer: 1 |" in out
    assert (
        render({"quality": figures}, command="x", machine={}, elapsed_s=0).count("## Detection quality") == 1
    )


def test_the_small_tenant_still_yields_every_planted_finding_and_attributes_false_positives() -> None:
    result = quality.run("small")
    catalog = load_catalog()
    assert [r["slug"] for r in result["rules"]] == sorted(catalog)
    for r in result["rules"]:
        assert r["error"] is None, r
        assert r["found"] == r["expected"], r  # the benign classes hide no planted attack
        assert sum(r["fp_by_class"].values()) == r["false_positives"]
        assert r["background_rows"] > 0
