"""The daily digest card: ledger counts per rule and state, with held and failed called out."""

from __future__ import annotations

from collections import Counter
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
    container,
    facts,
    more_line,
    plain,
    run,
    text,
    when,
)
from notifications.message import MAX_MESSAGE_BYTES, fit
from notifications.reports import (
    BUCKET_LABELS,
    DigestReport,
)

DIGEST_COLUMNS = ("done", "submitted", "held", "skipped", "failed")
DIGEST_HEADERS = {"done": "Done", "submitted": "Sent", "held": "Held", "skipped": "Skip", "failed": "Failed"}
SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "informational": 3}


def digest_card(report: DigestReport, *, limit: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Ledger counts per rule and state over the period, held and failed called out."""
    return fit(lambda n, w: _digest(report, n, w), limit=limit)


def _cell(value: str | Element, **props: Any) -> Element:
    item = text(value, **props) if isinstance(value, str) else value
    return {"type": "TableCell", "items": [item]}


def _digest(report: DigestReport, n: int, w: int) -> dict[str, Any]:
    rules = sorted(report.counts, key=lambda r: (
        SEVERITY_ORDER.get(report.severities.get(r, "").lower(), 4),
        -sum(report.counts[r].values()), r))
    per_rule = {r: report.bucket_counts(r) for r in rules}
    totals = Counter[str]()
    for c in per_rule.values():
        totals.update(c)
    total_requests = sum(totals.values())
    period = f"{when(report.period_start)} to {when(report.period_end)}"
    title = f"{total_requests} requests, {totals['held']} held, {totals['failed']} failed"
    body: list[Element] = [header("digest", "XDR responder · daily digest", title, None, "emphasis")]
    body.append(text(period, isSubtle=True, spacing="Small"))
    summary = [("Requests", str(total_requests))]
    summary += [(BUCKET_LABELS[b], str(totals[b])) for b in DIGEST_COLUMNS]
    if report.runs:
        summary.append(("Rule runs", str(sum(report.runs.values()))))
    if report.run_errors:
        summary.append(("Failed runs", str(sum(report.run_errors.values()))))
    body.append(facts(summary))
    if totals["held"]:
        since = f" The oldest has waited since {when(report.oldest_held)}." if report.oldest_held else ""
        body.append(container([plain(
            run(f"{totals['held']} requests wait for approval.{since} ", weight="Bolder"),
            run("Approve with python -m responder approve <id> or POST /api/requests/<id>/approve."),
        )], style="warning"))
    if totals["failed"]:
        body.append(text(f"{totals['failed']} requests failed; their reasons are in the ledger.",
                         color="attention", weight="Bolder"))
    if not rules:
        body.append(text("No rule produced a request in this period."))
    else:
        shown_rules = rules[:max(n, 3)]
        head_row = {"type": "TableRow", "style": "emphasis",
                  "cells": [_cell("Rule", weight="Bolder")]
                  + [_cell(DIGEST_HEADERS[b], weight="Bolder", horizontalAlignment="Right")
                     for b in DIGEST_COLUMNS]}
        rows = [head_row]
        for r in shown_rules:
            name = report.rule_names.get(r, r)
            label = plain(run(clip(name, w), weight="Bolder"), run(f" {r}", isSubtle=True, size="Small"))
            c = per_rule[r]
            rows.append({"type": "TableRow", "cells": [_cell(label)] + [
                _cell(str(c[b]), horizontalAlignment="Right",
                      color=("attention" if b == "failed" else "warning" if b == "held" else "default")
                      if c[b] else "default") for b in DIGEST_COLUMNS]})
        body.append({"type": "Table", "firstRowAsHeader": True, "showGridLines": False, "spacing": "Medium",
                     "columns": [{"width": 4}] + [{"width": 1} for _ in DIGEST_COLUMNS], "rows": rows})
        if len(rules) > len(shown_rules):
            hidden = rules[len(shown_rules):]
            count = sum(sum(per_rule[r].values()) for r in hidden)
            body.append(more_line(len(hidden), f"rules ({count} requests)"))
    errors = {r: e for r, e in report.run_errors.items() if e}
    if errors:
        body.append(plain(run("Rules with failed runs: ", weight="Bolder", color="attention"),
                          run(", ".join(f"{r} ({e})" for r, e in list(errors.items())[:max(n, 1)])),
                          run(f" and {len(errors) - max(n, 1)} more" if len(errors) > max(n, 1) else "",
                              isSubtle=True)))
    candidates = [("Action center", links.action_center(report.tenant_id)),
                  ("Incidents", links.incidents(report.tenant_id))]
    return card(body, buttons(candidates),
                fallback=f"Digest {period}: {title}")
