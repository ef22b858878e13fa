"""Each safety rail, with a control case beside it: remove the rail and its test fails."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from core.request import make_request
from core.settings import Settings
from core.tenant import TenantConfig
from detections.catalog import Rule
from remediation.rails import decide, effective_mode
from tests.remediation.factories import PROTECTED, T0, make_rule

RULE = make_rule()
CONNECTOR_RULE = make_rule("connectors", (("disable_connector", "auto"), ("revoke_sessions", "auto")),
                           recipients_param=None)
CATALOG = {RULE.slug: RULE, CONNECTOR_RULE.slug: CONNECTOR_RULE}
TENANT = TenantConfig.from_mapping({"params": {"protected_recipients": PROTECTED}}, source="test")


def settings(**env: str) -> Settings:
    return Settings.from_env(env, require=False)


def email(recipient: str = "support@contoso.com", mode: str = "auto", index: int = 0,
          **evidence: Any) -> dict[str, Any]:
    ev = {"SenderFromAddress": "bad@gmail.com", "SenderMailFromAddress": "bad@gmail.com", **evidence}
    return make_request(rule=RULE.slug, action="move_to_junk", mode=mode,
                        target={"network_message_id": f"nm-{index}", "recipient": recipient},
                        evidence=ev, detected_at=T0, run={"id": "run-1", "index": index, "total": 9})


def account(user: str, action: str = "revoke_sessions", **evidence: Any) -> dict[str, Any]:
    return make_request(rule=CONNECTOR_RULE.slug, action=action, mode="auto", target={"user": user},
                        evidence=evidence, detected_at=T0, run={"id": "r", "index": 0, "total": 1})


def connector(name: str = "Relay-1", mode: str = "auto") -> dict[str, Any]:
    return make_request(rule=CONNECTOR_RULE.slug, action="disable_connector", mode=mode,
                        target={"connector": name}, evidence={}, detected_at=T0,
                        run={"id": "r", "index": 0, "total": 1})


def kind(req: dict[str, Any], tenant: TenantConfig = TENANT, st: Settings | None = None,
         catalog: dict[str, Rule] | None = None, approved: bool = False) -> str:
    return decide(req, settings=st or settings(), tenant=tenant, catalog=catalog or CATALOG,
                  approved=approved).kind


def with_allow(**allow: list[str]) -> TenantConfig:
    return TenantConfig.from_mapping({"params": {"protected_recipients": PROTECTED}, "allowlist": allow},
                                     source="test")


def test_in_scope_auto_request_executes() -> None:
    d = decide(email(), settings=settings(), tenant=TENANT, catalog=CATALOG)
    assert (d.kind, d.reason) == ("execute", "auto")


# --- global dry run -------------------------------------------------------------------------------------

def test_global_dry_run_overrides_auto_and_holds() -> None:
    d = decide(email(), settings=settings(RESPONDER_DRY_RUN="true"), tenant=TENANT, catalog=CATALOG)
    assert d.kind == "dry_run" and "RESPONDER_DRY_RUN" in d.reason
    capped = decide(email(index=5), settings=settings(RESPONDER_DRY_RUN="true"), tenant=TENANT,
                    catalog=CATALOG)
    assert capped.kind == "dry_run" and "cap" in capped.reason
    assert kind(email(), st=settings(RESPONDER_DRY_RUN="true"), approved=True) == "dry_run"


def test_global_dry_run_still_reports_out_of_scope_as_skip() -> None:
    assert kind(email("ceo@contoso.com"), st=settings(RESPONDER_DRY_RUN="true")) == "skip"


# --- modes ----------------------------------------------------------------------------------------------

def test_request_mode_dry_run_and_approval() -> None:
    assert kind(email(mode="dry_run")) == "dry_run"
    d = decide(email(mode="approval"), settings=settings(), tenant=TENANT, catalog=CATALOG)
    assert (d.kind, d.hold_reason, d.notify) == ("hold", "approval", True)


def test_the_rule_file_and_tenant_make_the_mode_stricter_and_the_request_is_never_loosened() -> None:
    strict_rule = make_rule(actions=(("move_to_junk", "approval"),))
    assert kind(email(), catalog={RULE.slug: strict_rule}) == "hold"
    tenant = TenantConfig.from_mapping({"params": {"protected_recipients": PROTECTED},
                                        "rules": {RULE.slug: {"mode": "dry_run"}}}, source="t")
    assert kind(email(), tenant=tenant) == "dry_run"
    loose = TenantConfig.from_mapping({"params": {"protected_recipients": PROTECTED},
                                       "rules": {RULE.slug: {"mode": "auto"}}}, source="t")
    assert kind(email(mode="approval"), tenant=loose) == "hold"


def tenant_mode(slug: str, mode: str) -> TenantConfig:
    return TenantConfig.from_mapping({"params": {"protected_recipients": PROTECTED},
                                      "rules": {slug: {"mode": mode}}}, source="t")


def test_the_tenant_config_may_loosen_a_rules_mode() -> None:
    # The operator's reviewed tenant config replaces the rule file's mode: a rule shipped as approval
    # runs automatically in a tenant that says so (the scan then makes its requests auto).
    approval_rule = make_rule(actions=(("move_to_junk", "approval"),))
    catalog = {RULE.slug: approval_rule}
    assert kind(email(), catalog=catalog) == "hold"
    loose = tenant_mode(RULE.slug, "auto")
    assert kind(email(), tenant=loose, catalog=catalog) == "execute"
    assert effective_mode(email(), approval_rule, settings(), loose) == "auto"


def test_the_tenant_config_cannot_loosen_connector_actions_without_the_opt_in() -> None:
    approval_rule = make_rule("connectors", (("disable_connector", "approval"),), recipients_param=None)
    catalog = {"connectors": approval_rule}
    loose = tenant_mode("connectors", "auto")
    for mode in ("manual", "approval"):
        d = decide(connector(), settings=settings(RESPONDER_CONNECTOR_ACTIONS=mode), tenant=loose,
                   catalog=catalog)
        assert (d.kind, d.hold_reason) == ("hold", "approval") and "RESPONDER_CONNECTOR_ACTIONS" in d.reason
    assert kind(connector(), tenant=loose, catalog=catalog,
                st=settings(RESPONDER_CONNECTOR_ACTIONS="auto")) == "execute"


def test_connector_actions_wait_for_a_person_unless_auto() -> None:
    d = decide(connector(), settings=settings(RESPONDER_CONNECTOR_ACTIONS="approval"), tenant=TENANT,
               catalog=CATALOG)
    assert (d.kind, d.hold_reason) == ("hold", "approval")
    assert "unless RESPONDER_CONNECTOR_ACTIONS is auto" in d.reason
    assert kind(connector(), st=settings(RESPONDER_CONNECTOR_ACTIONS="auto")) == "execute"
    assert effective_mode(connector(), CONNECTOR_RULE, settings(), TENANT) == "approval"


def test_manual_connector_actions_are_held_for_a_person_to_run_by_hand() -> None:
    # The default: the deployment granted no Exchange permission, so the hold says what to do instead.
    d = decide(connector(), settings=settings(), tenant=TENANT, catalog=CATALOG)
    assert (d.kind, d.hold_reason) == ("hold", "approval")
    assert "RESPONDER_CONNECTOR_ACTIONS=manual" in d.reason and "--done" in d.reason


# --- scope ----------------------------------------------------------------------------------------------

def test_email_only_touches_the_rules_protected_recipients() -> None:
    d = decide(email("ceo@contoso.com"), settings=settings(), tenant=TENANT, catalog=CATALOG)
    assert d.kind == "skip" and "protected_recipients" in d.reason and d.notify
    assert kind(email("SALES@contoso.com")) == "execute"   # compared case-insensitively


def test_unresolvable_protected_list_skips() -> None:
    d = decide(email(), settings=settings(), tenant=TenantConfig(), catalog=CATALOG)
    assert d.kind == "skip" and "cannot be resolved" in d.reason


def test_rule_without_a_recipient_list_is_not_limited_by_one() -> None:
    open_rule = make_rule(recipients_param=None)
    assert kind(email("anyone@contoso.com"), catalog={RULE.slug: open_rule}) == "execute"


def test_allowlisted_mailbox_is_never_touched() -> None:
    assert kind(email(), tenant=with_allow(mailboxes=["Support@Contoso.com"])) == "skip"
    assert kind(email("sales@contoso.com"), tenant=with_allow(mailboxes=["support@contoso.com"])) == "execute"


def test_allowlisted_sender_is_never_touched_p1_or_p2() -> None:
    p1 = email(SenderFromAddress="partner@fabrikam.com")
    p2 = email(SenderMailFromAddress="partner@fabrikam.com")
    tenant = with_allow(senders=["partner@fabrikam.com"])
    assert kind(p1, tenant=tenant) == "skip"
    assert kind(p2, tenant=tenant) == "skip"
    assert kind(email(), tenant=tenant) == "execute"


def test_allowlisted_sender_domain_and_its_subdomains() -> None:
    tenant = with_allow(sender_domains=["fabrikam.com"])
    assert kind(email(SenderFromAddress="x@fabrikam.com"), tenant=tenant) == "skip"
    assert kind(email(SenderMailFromDomain="mail.fabrikam.com"), tenant=tenant) == "skip"
    assert kind(email(SenderFromAddress="x@notfabrikam.com"), tenant=tenant) == "execute"


def test_break_glass_accounts_are_never_touched() -> None:
    tenant = TenantConfig.from_mapping({"break_glass_accounts": ["BG-admin@contoso.com",
                                                                 "11111111-2222-3333-4444-555555555555"]},
                                       source="t")
    for action in ("revoke_sessions", "disable_user", "confirm_compromised"):
        assert kind(account("bg-admin@contoso.com", action), tenant=tenant) == "skip"
    by_evidence = account("11111111-2222-3333-4444-555555555555")
    assert kind(by_evidence, tenant=tenant) == "skip"
    aliased = account("99999999-2222-3333-4444-555555555555", AccountUpn="bg-admin@contoso.com")
    assert kind(aliased, tenant=tenant) == "skip"
    assert kind(account("mallory@contoso.com"), tenant=tenant) == "execute"


def test_allowlisted_connector_is_never_touched_even_when_approved() -> None:
    tenant = with_allow(connectors=["relay-1"])
    assert kind(connector("Relay-1"), tenant=tenant, approved=True) == "skip"
    assert kind(connector("Relay-2"), tenant=tenant, approved=True) == "execute"


def test_approval_does_not_widen_scope() -> None:
    assert kind(email("ceo@contoso.com"), approved=True) == "skip"


def test_unknown_rule_is_skipped() -> None:
    req = email()
    d = decide(req, settings=settings(), tenant=TENANT, catalog={})
    assert d.kind == "skip" and "not in the catalog" in d.reason


# --- cap ------------------------------------------------------------------------------------------------

def test_cap_holds_targets_past_max_targets() -> None:
    assert [kind(email(index=i)) for i in range(5)] == ["execute"] * 3 + ["hold"] * 2
    d = decide(email(index=3), settings=settings(), tenant=TENANT, catalog=CATALOG)
    assert (d.hold_reason, d.notify) == ("cap", True)


def test_tenant_overrides_the_cap() -> None:
    tenant = TenantConfig.from_mapping({"params": {"protected_recipients": PROTECTED},
                                        "rules": {RULE.slug: {"max_targets": 1}}}, source="t")
    assert [kind(email(index=i), tenant=tenant) for i in range(3)] == ["execute", "hold", "hold"]
    zero = replace(RULE, max_targets=0)
    assert kind(email(), catalog={RULE.slug: zero}) == "hold"


def test_approval_lifts_the_cap() -> None:
    assert kind(email(index=7), approved=True) == "execute"


def test_an_undo_is_not_stopped_by_the_allowlists_but_stays_in_scope() -> None:
    tenant = with_allow(senders=["bad@gmail.com"], mailboxes=["support@contoso.com"])
    assert kind(email(), tenant=tenant) == "skip"
    restored = decide(email(), settings=settings(), tenant=tenant, catalog=CATALOG, approved=True,
                      restore=True)
    assert restored.kind == "execute"
    outside = decide(email("ceo@contoso.com"), settings=settings(), tenant=tenant, catalog=CATALOG,
                     approved=True, restore=True)
    assert outside.kind == "skip"


def test_notify_is_not_capped_and_does_not_use_up_the_cap() -> None:
    rule = make_rule(actions=(("notify", "auto"), ("move_to_junk", "auto")), max_targets=2)
    notes = [make_request(rule=RULE.slug, action="notify", mode="auto", target={"sender": f"s{i}@gmail.com"},
                          evidence={}, detected_at=T0, run={"id": "run-1", "index": i, "total": 9})
             for i in range(5)]
    assert [kind(n, catalog={RULE.slug: rule}) for n in notes] == ["execute"] * 5
    # The move_to_junk requests of the same run are numbered among themselves (detections/findings.py).
    junk = [kind(email(index=i), catalog={RULE.slug: rule}) for i in range(3)]
    assert junk == ["execute", "execute", "hold"]


def test_a_request_without_a_run_block_is_held_not_uncapped() -> None:
    req = email()
    del req["run"]
    d = decide(req, settings=settings(), tenant=TENANT, catalog=CATALOG)
    assert (d.kind, d.hold_reason) == ("hold", "cap") and "no run block" in d.reason
    assert kind(req, approved=True) == "execute"


# --- senders that cannot be checked ---------------------------------------------------------------------

def bare_email(**target: str) -> dict[str, Any]:
    """An email request whose evidence names no sender (a rule that left the column out)."""
    return make_request(rule=RULE.slug, action="move_to_junk", mode="auto",
                        target={"network_message_id": "nm-0", "recipient": "support@contoso.com", **target},
                        evidence={"Subject": "hello"}, detected_at=T0,
                        run={"id": "run-1", "index": 0, "total": 1})


def test_the_sender_allowlist_also_reads_target_fields() -> None:
    tenant = with_allow(senders=["partner@gmail.com"])
    d = decide(bare_email(sender="Partner@gmail.com"), settings=settings(), tenant=tenant, catalog=CATALOG)
    assert d.kind == "skip" and "partner@gmail.com is allowlisted" in d.reason
    domains = with_allow(sender_domains=["partner.example"])
    assert kind(bare_email(sender="x@mail.partner.example"), tenant=domains) == "skip"
    assert kind(bare_email(sender="bad@gmail.com"), tenant=tenant) == "execute"


@pytest.mark.parametrize("allow", [{"senders": ["partner@gmail.com"]},
                                   {"sender_domains": ["partner.example"]}])
def test_no_sender_at_all_with_an_allowlist_configured_is_held(allow: dict[str, list[str]]) -> None:
    tenant = with_allow(**allow)
    d = decide(bare_email(), settings=settings(), tenant=tenant, catalog=CATALOG)
    assert (d.kind, d.hold_reason, d.notify) == ("hold", "unverifiable", True)
    # Without any sender allowlist there is nothing to check, and a person's approval decides.
    assert kind(bare_email()) == "execute"
    assert kind(bare_email(), tenant=tenant, approved=True) == "execute"


def test_a_sender_domain_column_is_enough_for_a_domain_allowlist() -> None:
    req = make_request(rule=RULE.slug, action="move_to_junk", mode="auto",
                       target={"network_message_id": "nm-0", "recipient": "support@contoso.com"},
                       evidence={"SenderMailFromDomain": "gmail.com"}, detected_at=T0,
                       run={"id": "run-1", "index": 0, "total": 1})
    assert kind(req, tenant=with_allow(sender_domains=["partner.example"])) == "execute"
    assert kind(req, tenant=with_allow(senders=["partner@gmail.com"])) == "hold"


# --- org-wide rules (scope all_mailboxes) ---------------------------------------------------------------

ORG_RULE = replace(make_rule("org-wide", recipients_param=None), all_mailboxes=True)


def org_email(recipient: str = "ceo@contoso.com") -> dict[str, Any]:
    return make_request(rule=ORG_RULE.slug, action="move_to_junk", mode="auto",
                        target={"network_message_id": "nm-org", "recipient": recipient},
                        evidence={"SenderFromAddress": "bad@gmail.com",
                                  "SenderMailFromAddress": "bad@gmail.com"},
                        detected_at=T0, run={"id": "run-1", "index": 0, "total": 1})


def test_org_wide_rule_is_held_for_approval_in_auto_mode_unless_the_tenant_allows_it() -> None:
    catalog = {ORG_RULE.slug: ORG_RULE}
    d = decide(org_email(), settings=settings(), tenant=TENANT, catalog=catalog)
    assert d.kind == "hold" and d.hold_reason == "approval" and "allow_all_mailboxes" in d.reason
    # A tenant-config mode override cannot loosen it either.
    loose = TenantConfig.from_mapping({"rules": {"org-wide": {"mode": "auto"}}}, source="test")
    assert kind(org_email(), tenant=loose, catalog=catalog) == "hold"
    allowed = TenantConfig.from_mapping({"rules": {"org-wide": {"allow_all_mailboxes": True}}}, source="test")
    assert kind(org_email(), tenant=allowed, catalog=catalog) == "execute"   # any mailbox: it is org-wide
    # Control: the same rule without the declaration is a plain rule without a list.
    assert kind(org_email(), catalog={ORG_RULE.slug: replace(ORG_RULE, all_mailboxes=False)}) == "execute"


def test_org_wide_rule_still_respects_the_allowlists() -> None:
    allowed = TenantConfig.from_mapping({"rules": {"org-wide": {"allow_all_mailboxes": True}},
                                         "allowlist": {"mailboxes": ["ceo@contoso.com"]}}, source="test")
    assert kind(org_email(), tenant=allowed, catalog={ORG_RULE.slug: ORG_RULE}) == "skip"
