"""The failure card: what failed, the reason, and what happens next."""

from __future__ import annotations

from typing import Any

from notifications import links
from notifications.common import (
    buttons,
    header,
)
from notifications.elements import (
    Element,
    card,
    clip,
    facts,
    heading,
    labelled,
    more_line,
    plain,
    run,
    when,
)
from notifications.entities import action_label, describe_target
from notifications.message import MAX_MESSAGE_BYTES, fit
from notifications.reports import (
    FailureReport,
)

FAILURE_TITLES = {
    "poison": "poison message",
    "backend": "query backend error",
    "quota": "hunting quota exhausted",
    "action": "remediation failed",
    "config": "configuration problem",
    "other": "failure",
}


def default_next_step(report: FailureReport) -> str:
    """What this product does next after such a failure, when the caller did not say."""
    if report.kind == "poison":
        tries = f" after {report.attempts} attempts" if report.attempts else ""
        return (f"The queue gave up on this message{tries} and moved it to the poison queue. It is recorded "
                "in the ledger as failed and is not retried automatically: fix the cause, then re-run the "
                "rule (POST /api/scan).")
    if report.kind == "backend":
        return ("Nothing from this run was remediated. The next scheduled run reads an overlapping window, "
                "so its findings are picked up once the backend answers again.")
    if report.kind == "quota":
        wait = f" The service asked to wait {report.retry_after:g} s." if report.retry_after else ""
        return ("Scheduled runs continue; their windows overlap, so a skipped run is covered by the next "
                f"one. On-demand re-scans are refused until the quota recovers.{wait}")
    if report.kind == "config":
        return ("Nothing was done. Fix the setting, role or scope named in the reason; the next run after "
                "that picks the finding up again.")
    if report.kind == "action":
        return ("The request is recorded in the ledger as failed and is not retried automatically. Check "
                "the reason, then act in the portal or re-run the rule.")
    return "Check the function app's logs for this time."


def failure_card(report: FailureReport, *, limit: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """What failed, the reason, and what happens next."""
    return fit(lambda n, w: _failure(report, n, w), limit=limit)


def _failure(report: FailureReport, n: int, w: int) -> dict[str, Any]:
    kind = FAILURE_TITLES.get(report.kind, report.kind)
    body: list[Element] = [header("failure", f"XDR responder · {kind}", clip(report.summary, 200), None,
                                   "attention")]
    pairs = [("When", when(report.occurred_at))]
    if report.attempts is not None:
        pairs.append(("Attempts", str(report.attempts)))
    if report.retry_after is not None:
        pairs.append(("Retry after", f"{report.retry_after:g} s"))
    body.append(facts(pairs))
    if report.rule:
        name = f"{report.rule_name} " if report.rule_name else ""
        body.append(plain(run("Rule: ", weight="Bolder"), run(clip(name, w)),
                          run(f"({report.rule})" if name else report.rule, fontType="Monospace")))
    if report.run_id:
        body.append(labelled("Run", report.run_id, mono=True, spacing="None"))
    if report.request_id:
        body.append(labelled("Request", report.request_id, mono=True, spacing="None"))
    body.append(heading("Reason", color="attention"))
    body.append(plain(run(clip(report.reason, w * 4)), spacing="Small"))
    req = report.request or {}
    if req:
        body.append(heading("The request"))
        if req.get("action"):
            body.append(labelled(action_label(str(req["action"])), clip(describe_target(req), w)))
        evidence = list((req.get("evidence") or {}).items()) if isinstance(req.get("evidence"), dict) else []
        for k, v in evidence[:n]:
            body.append(labelled(str(k), clip(v, w), spacing="None"))
        if len(evidence) > n:
            body.append(more_line(len(evidence) - n, "evidence fields"))
    details = list(report.details.items())
    if details:
        body.append(heading("Details"))
        body.extend(labelled(k, clip(v, w), spacing="None") for k, v in details[:max(n, 1) * 2])
        if len(details) > max(n, 1) * 2:
            body.append(more_line(len(details) - max(n, 1) * 2, "details"))
    body.append(heading("What happens next"))
    body.append(plain(run(clip(report.next_step or default_next_step(report), w * 4)), spacing="Small"))
    candidates = [("Incidents", links.incidents(report.tenant_id))]
    if report.kind in ("backend", "quota"):
        candidates.insert(0, ("Hunting", links.advanced_hunting(report.tenant_id)))
    return card(body, buttons(candidates), fallback=f"Failure ({kind}): {clip(report.summary, 200)}")
