"""Issue 13, "the rule is the authority, never the message": a queue message cannot widen what the
rule file (and the tenant config over it) allows: undeclared actions, disabled rules, a looser mode."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.settings import Settings
from core.tenant import TenantConfig
from devtools.fakegraph import FakeGraph
from remediation.ledger import Ledger
from remediation.rails import decide
from tests.remediation.factories import PROTECTED, email_request, make_rule, user_request
from tests.remediation.test_worker import CATALOG, Clock, Harness

pytestmark = pytest.mark.azurite

APPROVAL_RULE = make_rule("approval-only", (("revoke_sessions", "approval"),), recipients_param=None)
JUNK_RULE = make_rule()   # shared-mailboxes: move_to_junk, auto
AUTH_CATALOG = {**CATALOG, APPROVAL_RULE.slug: APPROVAL_RULE}
TENANT = TenantConfig.from_mapping({"params": {"protected_recipients": PROTECTED}}, source="test")
DISABLED = TenantConfig.from_mapping({"params": {"protected_recipients": PROTECTED},
                                      "rules": {"shared-mailboxes": {"enabled": False}}}, source="test")


@pytest.fixture
def h(storage_conn: str, unique_name: str) -> Any:
    with FakeGraph() as fake:
        yield Harness(fake, Ledger.from_connection_string(storage_conn, unique_name, clock=Clock()))


def _decide(req: dict[str, Any], tenant: TenantConfig = TENANT, **kw: Any) -> Any:
    return decide(req, settings=Settings.from_env({}, require=False), tenant=tenant, catalog=AUTH_CATALOG,
                  **kw)


def test_undeclared_action_is_refused_whatever_mode_the_message_claims() -> None:
    forged = user_request("ceo@contoso.com", "disable_user", rule=APPROVAL_RULE.slug, mode="auto")
    d = _decide(forged)
    assert (d.kind, d.notify) == ("skip", True) and "not declared" in d.reason
    # approving it does not make it declared either
    assert _decide(forged, approved=True).kind == "skip"
    soft = email_request("nm-1", action="soft_delete")
    assert _decide(soft).kind == "skip"
    # control: the declared action runs
    assert _decide(email_request("nm-1")).kind == "execute"


def test_message_mode_never_loosens_the_rules_mode() -> None:
    req = user_request("mallory@contoso.com", rule=APPROVAL_RULE.slug, mode="auto")
    d = _decide(req)
    assert (d.kind, d.hold_reason) == ("hold", "approval")


def test_undo_may_run_the_inverse_of_a_declared_action() -> None:
    undo = email_request("nm-1", action="move_to_inbox")
    assert _decide(undo).kind == "skip"
    assert _decide(undo, approved=True, restore=True).kind == "execute"


def test_a_rule_the_tenant_disabled_runs_nothing() -> None:
    d = _decide(email_request("nm-1"), DISABLED)
    assert d.kind == "skip" and "disabled" in d.reason and d.notify
    assert _decide(email_request("nm-1"), DISABLED, approved=True).kind == "skip"


def _with(catalog: dict[str, Any] | None = None, tenant: TenantConfig | None = None):
    def set_up(w: Any) -> Any:
        w.catalog = catalog or AUTH_CATALOG
        w.tenant = tenant or TENANT
        return w
    return set_up


def test_forged_disable_user_on_an_approval_rule_is_recorded_and_announced_not_run(h: Harness) -> None:
    h.fake.users.add("ceo@contoso.com")
    forged = user_request("ceo@contoso.com", "disable_user", rule=APPROVAL_RULE.slug, mode="auto")
    [out] = h.run(lambda w: _with()(w).process([forged]))
    assert out.state == "skipped" and "not declared" in (out.detail or "")
    assert h.fake.calls == []
    assert h.row(forged).state == "skipped"
    assert any(forged["id"] in [o.request_id for o in r.outcomes] for r in h.reports)


def test_forged_soft_delete_on_a_junk_rule_is_not_submitted(h: Harness) -> None:
    forged = email_request("nm-9", action="soft_delete")
    [out] = h.run(lambda w: _with()(w).process_message(json.dumps(forged), 1))
    assert out.state == "skipped" and h.fake.calls == []


def test_request_for_a_disabled_rule_is_refused_by_the_worker(h: Harness) -> None:
    req = email_request("nm-2")
    [out] = h.run(lambda w: _with(tenant=DISABLED)(w).process([req]))
    assert out.state == "skipped" and "disabled" in (out.detail or "") and h.fake.calls == []


# --- bounded evidence keeps what the approval re-check needs -------------------------------------------

APPROVAL_EMAIL = make_rule("shared-approval", (("move_to_junk", "approval"),))


def test_trimmed_evidence_keeps_the_sender_so_an_allowlisted_sender_is_not_moved_after_approval(
        h: Harness) -> None:
    req = email_request("nm-big", rule=APPROVAL_EMAIL.slug, blob="x" * 100_000,
                        SenderFromAddress="partner@fabrikam.com",
                        SenderMailFromAddress="partner@fabrikam.com")
    catalog = {**AUTH_CATALOG, APPROVAL_EMAIL.slug: APPROVAL_EMAIL}
    [held] = h.run(lambda w: _with(catalog)(w).process([req]))
    assert held.state == "held"
    stored = h.row(req).request["evidence"]
    assert "_truncated" in stored and stored["SenderFromAddress"] == "partner@fabrikam.com"
    allow = TenantConfig.from_mapping({"params": {"protected_recipients": PROTECTED},
                                       "allowlist": {"senders": ["partner@fabrikam.com"]}}, source="test")
    out = h.run(lambda w: _with(catalog, allow)(w).approve(req["id"], "alice@contoso.com"))
    assert out.state == "skipped" and "allowlisted" in (out.detail or "")
    assert h.fake.calls == []


# --- hostile JSON: a clear invalid-message outcome everywhere --------------------------------------------

DEEP_TEXT = '{"a":' * 100_000 + "1" + "}" * 100_000


def _deep_dict(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def test_deep_json_on_the_queue_path_is_recorded_and_reported(h: Harness) -> None:
    [out] = h.run(lambda w: w.process_message(DEEP_TEXT, 1))
    assert out.state == "failed" and "nested deeper" in (out.error or "")
    assert [r.kind for r in h.reports] == ["failed"] and h.fake.calls == []
    assert h.ledger.list(rule="~invalid")


def test_deep_json_in_the_poison_handler_is_recorded_and_reported(h: Harness) -> None:
    out = h.run(lambda w: w.record_poison(DEEP_TEXT.encode(), 5))
    assert out.state == "failed" and [r.kind for r in h.reports] == ["poison"]


def test_a_deep_request_dict_in_a_batch_is_recorded_and_the_rest_runs(h: Harness) -> None:
    bad = email_request("nm-x")
    bad["evidence"] = {"x": _deep_dict(5000)}
    good = email_request("nm-ok")
    outs = h.run(lambda w: w.process([bad, good]))
    assert outs[0].state == "failed" and "evidence/x" in (outs[0].error or "")
    assert outs[1].request_id == good["id"]
