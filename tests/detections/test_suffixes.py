"""The mismatch rule's public-suffix default comes from the pinned Public Suffix List package and
keeps the bound query inside Sentinel's 10,000-character limit for a rule query
(https://learn.microsoft.com/azure/sentinel/detect-threats-custom, "Rule query best practices")."""

from __future__ import annotations

from core.tenant import TenantConfig
from detections.catalog import load_catalog
from detections.params import bind_query, resolve_params
from detections.platforms import for_platform
from detections.suffixes import org_suffixes

SLUG = "connector-sender-mismatch"
SENTINEL_QUERY_LIMIT = 10_000


def test_reduced_list_has_the_common_business_suffixes_and_no_single_labels() -> None:
    suffixes = org_suffixes()
    for s in ("co.uk", "com.au", "co.jp", "ne.jp", "com.br", "co.nz", "org.uk", "net.au", "co.za"):
        assert s in suffixes
    assert all(s.count(".") == 1 and s == s.lower() for s in suffixes)
    assert "ac.uk" not in suffixes  # not a generic commercial label: a tenant adds it if needed


def test_rule_default_is_the_list_generated_from_the_pinned_package() -> None:
    rule = load_catalog()[SLUG]
    assert rule.parameters["public_suffixes"].default == org_suffixes()


def test_bound_query_with_defaults_fits_sentinels_query_limit() -> None:
    rule = load_catalog()[SLUG]
    query = bind_query(rule, resolve_params(rule, TenantConfig(), {}))
    assert "co.uk" in query
    # As exported for Sentinel: with the prelude that maps EmailEvents there; room left for a few
    # tenant additions
    assert len(for_platform(query, "sentinel")) < SENTINEL_QUERY_LIMIT - 300
