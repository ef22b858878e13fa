"""The Teams side of remediation's ``OutcomeReporter`` (remediation/reporting.py): one card per report.

The worker emits one report per failed, held or out-of-scope outcome of a delivery (merged per rule run);
scan-level summaries are the function app's job (one card per rule run). The function app, the command
line and the demo construct a ``CardReporter`` around their notifier (anything with ``async send(card)
-> bool``) and give it to the Worker.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from notifications.cards import approval_card, failure_card
from notifications.reports import FailureReport
from remediation.actions.accounts import PRIVILEGED_ROLE
from remediation.actions.registry import default_registry
from remediation.reporting import Report

log = logging.getLogger(__name__)


def trusted_requests(requests: list[dict[str, Any]], rules: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The requests with ``severity`` and ``rule_name`` taken from the catalog (``rules``: slug -> Rule),
    never from the message; a request for a rule not in the catalog shows neither (issue 13)."""
    out = []
    for r in requests:
        rule = rules.get(r.get("rule", "")) if isinstance(r, dict) else None
        clean = {k: v for k, v in r.items() if k not in ("severity", "rule_name")}
        if rule is not None:
            clean.update(severity=rule.severity, rule_name=rule.name)
        out.append(clean)
    return out


def card_for(report: Report, *, tenant_id: str | None = None, api_base: str | None = None,
             connector_actions: str = "manual", rules: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Adaptive Card for one worker Report. ``rules``: the catalog, the only source of a card's
    severity and rule name when given."""
    if rules is not None:
        report = replace(report, requests=trusted_requests(report.requests, rules))
    first = report.outcomes[0] if report.outcomes else None
    request = report.requests[0] if report.requests else None
    if report.kind == "held" and report.requests:
        registry = default_registry()
        commands = {r["id"]: c for r in report.requests if (c := registry.manual_command(r))}
        by_hand = {r["id"] for r in report.requests
                   if registry.run_by_hand(r.get("action"), connector_actions)}
        return approval_card(report.requests, outcomes=report.outcomes, commands=commands, api_base=api_base,
                             tenant_id=tenant_id, by_hand=by_hand)
    kind = {"poison": "poison", "failed": "action", "skipped": "config"}.get(report.kind, "action")
    return failure_card(FailureReport(
        kind=kind, summary=report.summary,
        reason=(first.error or first.detail) if first else report.summary,
        rule=first.rule if first and first.rule != "~invalid" else None,
        rule_name=(request or {}).get("rule_name"),
        request_id=first.request_id if first else None, request=request,
        attempts=first.attempts if first else None,
        next_step=_next_step(report, first),
        tenant_id=tenant_id,
    ))


def _next_step(report: Report, first: Any) -> str | None:
    if report.kind == "skipped":
        return ("Nothing was done: the target is outside what this rule may touch. Check the rule's scope "
                "and the tenant allowlists.")
    if first is not None and (first.extra or {}).get("blocked") == "privileged_target":
        return (f"Nothing was changed: the account holds an Entra admin role, and only an identity with the "
                f"{PRIVILEGED_ROLE} role may act on it. Act on it yourself in the Entra admin center now; "
                "to let the app do it, assign that role to its managed identity (docs/deploy.md, "
                "\"Privileged targets\": it lets the app reset any admin's sign-in). Not retried.")
    return None


def in_a_run(report: Report) -> bool:
    """Every request of the report belongs to a scan run (so the run's outcome card will list it)."""
    def ok(request: dict[str, Any]) -> bool:
        run = request.get("run") or {}
        return bool(run.get("id")) and isinstance(run.get("total"), int) and run["total"] >= 1
    return bool(report.requests) and all(ok(r) for r in report.requests)


class CardReporter:
    """An OutcomeReporter that sends each report as a Teams card through ``notifier``.

    ``held_cards=False``: held requests of a scan run get no approval card here, because the caller (the
    function app) sends the run's outcome card with the approval instructions instead."""

    def __init__(self, notifier: Any, *, tenant_id: str | None = None, api_base: str | None = None,
                 held_cards: bool = True, connector_actions: str = "manual",
                 rules: Mapping[str, Any] | None = None) -> None:
        self.notifier, self.tenant_id, self.api_base = notifier, tenant_id, api_base
        self.rules = rules
        self.held_cards, self.connector_actions = held_cards, connector_actions

    async def approval_needed(self, report: Report) -> None:
        if not self.held_cards and in_a_run(report):
            log.info("held requests of run %s: told on the run's outcome card",
                     (report.requests[0].get("run") or {}).get("id"))
            return
        await self._send(report)

    async def out_of_scope(self, report: Report) -> None:
        await self._send(report)

    async def failed(self, report: Report) -> None:
        await self._send(report)

    async def poison(self, report: Report) -> None:
        await self._send(report)

    async def run_undone(self, report: Report) -> None:
        """One card for a whole run undone (notifications/card_undo.py)."""
        from notifications.card_undo import undo_run_card

        if not await self.notifier.send(undo_run_card(report)):
            log.warning("the undo-run card was not delivered")

    async def _send(self, report: Report) -> None:
        sent = await self.notifier.send(card_for(report, tenant_id=self.tenant_id, api_base=self.api_base,
                                                 connector_actions=self.connector_actions, rules=self.rules))
        if not sent:
            log.warning("the %s card was not delivered", report.kind)
