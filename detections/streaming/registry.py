"""The rules that have a streaming form, and their parameters as the scheduled path resolves them.

The rule YAML is the one place a parameter is defined: ``rule_params`` resolves it exactly as a scan
does (rule default < tenant config < overrides, detections.params.resolve_params), so the push path
and the scheduled path read the same threshold, window, domains and mailboxes.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from core.tenant import TenantConfig
from detections.catalog import RULES_DIR, Rule, load_rule
from detections.params import resolve_params
from detections.streaming import Observe, consumer_campaign, reply_chain

STREAMING: dict[str, Observe] = {
    consumer_campaign.SLUG: consumer_campaign.observe,
    reply_chain.SLUG: reply_chain.observe,
}


@cache
def streaming_rule(slug: str) -> Rule:
    """The rule file of a streaming rule (KeyError for a slug without a streaming form)."""
    if slug not in STREAMING:
        raise KeyError(f"rule {slug!r} has no streaming form (those with one: {', '.join(STREAMING)})")
    return load_rule(RULES_DIR / f"{slug}.yaml")


def rule_params(slug: str, tenant: TenantConfig,
                overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Typed values for every parameter of the rule ``slug``, as a scan resolves them (ParamError when a
    required one, such as protected_recipients, has no value)."""
    return resolve_params(streaming_rule(slug), tenant, overrides or {})


def active_rules(tenant: TenantConfig,
                 overrides: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """slug -> resolved parameters, for the streaming rules the tenant has not disabled
    (``rules.<slug>.enabled: false``). A rule whose parameters do not resolve raises ParamError, as a scan
    refuses it: the caller logs it and skips that rule."""
    return {slug: rule_params(slug, tenant, overrides) for slug in STREAMING
            if tenant.for_rule(slug).enabled}


def protected_mailboxes(tenant: TenantConfig) -> frozenset[str]:
    """The mailboxes the push path subscribes to: the union of the enabled streaming rules'
    protected_recipients (lower case). A rule whose parameters do not resolve adds none."""
    out: set[str] = set()
    for slug in STREAMING:
        rule = streaming_rule(slug)
        if rule.recipients_param is None or not tenant.for_rule(slug).enabled:
            continue
        try:
            values = rule_params(slug, tenant)
        except ValueError:
            continue
        out.update(str(r).strip().lower() for r in values.get(rule.recipients_param) or [])
    return frozenset(out)
