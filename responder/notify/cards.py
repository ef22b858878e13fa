"""Pure builders of Adaptive Card 1.5 dicts for the Teams channel: scan, approval, failure, digest.

Every builder returns a card whose Workflows message fits ``MAX_MESSAGE_BYTES``: it is built at the
most detailed budget that fits (``message.fit``), and whatever a list leaves out is counted exactly
("and 412 more"). Untrusted text (anything from mail, the tenant or an error) goes into
RichTextBlocks, never into Markdown-parsed TextBlocks (see ``elements``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from remediation.outcome import Outcome
from responder.notify import links
from responder.notify.elements import (
    Element,
    card,
    clip,
    container,
    facts,
    heading,
    inline_list,
    labelled,
    more_line,
    open_url,
    plain,
    run,
    severity_colour,
    severity_style,
    text,
    when,
)
from responder.notify.entities import action_label, describe_target, entities
from responder.notify.message import MAX_MESSAGE_BYTES, fit
from responder.notify.reports import (
    BUCKET_LABELS,
    BUCKETS,
    DigestReport,
    FailureReport,
    RunReport,
    bucket_of,
)

# Teams puts buttons in one row and cuts their titles when crowded: few buttons, short titles.
MAX_BUTTONS = 4
# Evidence columns shown per request on the approval card (rules pick them to explain the finding).
MAX_EVIDENCE_FIELDS = 12
CONNECTOR_ACTIONS = frozenset({"disable_connector"})


def approve_cli(request_id: str) -> str:
    return f"python -m responder approve {request_id}"


def approve_http(request_id: str, api_base: str | None = None, verb: str = "approve") -> str:
    base = (api_base or "").rstrip("/")
    return f"POST {base}/api/requests/{request_id}/{verb}"


def _header(kind: str, kicker: str, title: str, severity: str | None, style: str) -> Element:
    items: list[Element] = [
        text(kicker, size="Small", isSubtle=True, spacing="None"),
        plain(run(title, size="Large", weight="Bolder"), spacing="Small"),
    ]
    if severity:
        items.append(text(f"{severity} severity", color=severity_colour(severity), weight="Bolder",
                          spacing="Small"))
    # The id names the card kind (FileNotifier file names, tests); ids are legal on any element.
    return container(items, style=style, bleed=True, id=f"xdr-{kind}")


def _buttons(candidates: Sequence[tuple[str, str]]) -> list[Element]:
    seen: set[str] = set()
    out: list[Element] = []
    for title, url in candidates:
        if url in seen or not links.is_safe_link(url):
            continue
        seen.add(url)
        out.append(open_url(title, url))
    return out[:MAX_BUTTONS]


def _outcome_links(outcomes: Sequence[Outcome], limit: int) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for o in outcomes:
        if o.link and links.is_safe_link(o.link) and all(o.link != u for _, u in found):
            found.append(("Submission" if not found else f"Submission {len(found) + 1}", o.link))
    return found[:limit]


# --- scan card -------------------------------------------------------------------------------------

def scan_card(report: RunReport, *, limit: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """One card per rule run: what was found, what was done, what waits, who was involved."""
    return fit(lambda n, w: _scan(report, n, w), limit=limit)


def _scan_status(report: RunReport, w: int) -> list[Element]:
    out: list[Element] = []
    if report.error:
        out.append(container([
            text("The query failed: nothing was found or remediated in this run.", weight="Bolder",
                 color="attention"),
            labelled("Error", clip(report.error, w * 3)),
            text("The next scheduled run reads an overlapping window, so findings are picked up once "
                 "the backend answers again.", isSubtle=True, spacing="Small"),
        ], style="attention"))
    if report.partial:
        reason = f" ({clip(report.partial_reason, w)})" if report.partial_reason else ""
        out.append(container([
            plain(run("Partial result: ", weight="Bolder", color="warning"),
                  run(f"the backend returned only part of the rows{reason}. The requests below cover "
                      "only those rows; the next run reads the window again.")),
        ], style="warning"))
    if report.dry_run:
        out.append(text("Dry run: nothing was changed. The requests show what would have been done.",
                         weight="Bolder", color="accent"))
    return out


def _per_action_lines(report: RunReport) -> list[Element]:
    by_action: dict[str, Counter[str]] = {}
    outcomes = {o.request_id: o for o in report.outcomes}
    for r in report.requests:
        o = outcomes.get(r["id"])
        b = bucket_of(o.state if o else None)
        if o is None and r.get("mode") == "approval":
            b = "held"
        if o is None and (r.get("mode") == "dry_run" or report.dry_run):
            b = "dry run"
        by_action.setdefault(r["action"], Counter())[b] += 1
    lines: list[Element] = []
    order = [*BUCKETS, "dry run"]
    for action, counts in by_action.items():
        parts = [f"{counts[b]} {b if b != 'held' else 'held for approval'}" for b in order if counts[b]]
        lines.append(text(f"**{action_label(action)}**: {', '.join(parts)}", spacing="Small"))
    return lines


def _held_section(report: RunReport, n: int, w: int) -> list[Element]:
    held = report.held()
    if not held:
        return []
    items: list[Element] = [heading(f"Waiting for approval ({len(held)})")]
    for r in held[:n]:
        items.append(plain(run(f"{action_label(r['action'])}: ", weight="Bolder"),
                           run(clip(describe_target(r), w)), spacing="Small"))
        items.append(plain(run("Approve: ", isSubtle=True), run(approve_cli(r["id"]), fontType="Monospace"),
                           spacing="None"))
    if len(held) > n:
        items.append(more_line(len(held) - n, "held requests"))
    # Plain runs: Teams' Markdown would eat "<id>" as an HTML tag.
    items.append(plain(run("The approval card has the evidence for each. HTTP: "
                           "POST /api/requests/<id>/approve (function key).", isSubtle=True, size="Small")))
    return items


def _failed_section(report: RunReport, n: int, w: int) -> list[Element]:
    failed = [o for o in report.outcomes if bucket_of(o.state) == "failed"]
    if not failed:
        return []
    by_id = {r["id"]: r for r in report.requests}
    items: list[Element] = [heading(f"Failed ({len(failed)})", color="attention")]
    for o in failed[:n]:
        req = by_id.get(o.request_id) or {"target": o.target, "action": o.action}
        reason = o.error or o.detail or o.state
        items.append(plain(run(f"{action_label(o.action)}: ", weight="Bolder"),
                           run(clip(describe_target(req), w)), run(" — "),
                           run(clip(reason, w), color="attention"), spacing="Small"))
    if len(failed) > n:
        items.append(more_line(len(failed) - n, "failures"))
    return items


def _scan(report: RunReport, n: int, w: int) -> dict[str, Any]:
    kicker = "XDR responder · detection" + (" · dry run" if report.dry_run else "")
    body: list[Element] = [_header("scan", kicker, clip(report.rule_name, 200), report.severity,
                                   severity_style(report.severity))]
    body.append(labelled("Rule", report.rule, mono=True, spacing="Small"))
    body.extend(_scan_status(report, w))

    counts = report.bucket_counts()
    summary = [("Rows found", str(report.rows)), ("Requests", str(len(report.requests)))]
    summary += [(BUCKET_LABELS[b], str(counts[b])) for b in BUCKETS if b != "queued" or counts[b]]
    summary.append(("Finished", when(report.finished_at or report.started_at)))
    if report.backend:
        summary.append(("Backend", report.backend))
    body.append(facts(summary))
    if report.run_id:
        body.append(labelled("Run", report.run_id, mono=True, isSubtle=True, spacing="Small"))

    per_action = _per_action_lines(report)
    if per_action:
        body.append(heading("What was done"))
        body.extend(per_action)
    body.extend(_held_section(report, n, w))
    body.extend(_failed_section(report, n, w))

    found = entities(report.requests)
    if found:
        body.append(heading("Involved"))
        body.extend(inline_list(kind, values, len(values), n, min(w, 80)) for kind, values in found.items())

    tid = report.tenant_id
    candidates = _outcome_links(report.outcomes, 1)
    if any(r["action"] in ("move_to_junk", "move_to_inbox", "soft_delete") for r in report.requests):
        candidates.append(("Action center", links.action_center(tid)))
    if any(r["action"] in CONNECTOR_ACTIONS for r in report.requests):
        candidates.append(("Connectors", links.exchange_connectors()))
    candidates += [("Hunting", links.advanced_hunting(tid)), ("Incidents", links.incidents(tid))]
    fallback = (f"{report.severity} · {report.rule_name}: {report.rows} rows, "
                f"{len(report.requests)} requests, {counts['held']} held, {counts['failed']} failed")
    return card(body, _buttons(candidates), fallback=fallback)


# --- approval card ---------------------------------------------------------------------------------

def approval_card(requests: Sequence[dict[str, Any]], *, outcomes: Sequence[Outcome] = (),
                  commands: Mapping[str, str] | None = None, api_base: str | None = None,
                  tenant_id: str | None = None, limit: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Requests that wait for a person: evidence, the exact command when given, how to approve.

    ``commands`` maps request id -> the exact command a person would run instead (e.g. the
    Exchange Online PowerShell line for a connector); it is shown verbatim, never clipped.
    ``api_base`` is the function app's URL, e.g. ``https://func-xdr.azurewebsites.net``.
    """
    if not requests:
        raise ValueError("approval_card needs at least one request")
    reasons = {o.request_id: o.hold_reason for o in outcomes}
    return fit(lambda n, w: _approval(list(requests), reasons, commands or {}, api_base, tenant_id, n, w),
               limit=limit)


def _hold_text(reason: str | None, mode: str | None) -> str:
    if reason == "cap":
        return "Held because the run went past the rule's cap on targets per run."
    if reason == "approval" or mode == "approval":
        return "Held because this action runs in approval mode."
    return "Held for approval."


def _approval_block(r: dict[str, Any], reason: str | None, command: str | None, api_base: str | None,
                    n: int, w: int) -> Element:
    rid = r["id"]
    items: list[Element] = [
        plain(run(f"{action_label(r['action'])}: ", weight="Bolder", size="Medium"),
              run(clip(describe_target(r), w), size="Medium")),
        plain(run(clip(r.get("rule_name") or r["rule"], w), weight="Bolder"),
              run(f" ({r['rule']})", isSubtle=True),
              run(f" · {r['severity']}" if r.get("severity") else "",
                  color=severity_colour(r.get("severity", ""))),
              run(f" · detected {r.get('detected_at', 'unknown')}", isSubtle=True), spacing="Small"),
        text(_hold_text(reason, r.get("mode")), isSubtle=True, spacing="Small"),
    ]
    evidence = list((r.get("evidence") or {}).items())
    shown = min(len(evidence), MAX_EVIDENCE_FIELDS, max(n, 2))
    if evidence:
        items.append(text("Evidence", weight="Bolder", spacing="Small"))
        items.extend(labelled(str(k), clip(v, w), spacing="None") for k, v in evidence[:shown])
        if len(evidence) > shown:
            items.append(more_line(len(evidence) - shown, "evidence fields"))
    if command:
        items.append(text("Or run it yourself (Exchange Online PowerShell):", weight="Bolder",
                          spacing="Small"))
        items.append(plain(run(command, fontType="Monospace"), spacing="None"))
    items.append(text("To approve", weight="Bolder", spacing="Small"))
    items.append(plain(run(approve_cli(rid), fontType="Monospace"), spacing="None"))
    # Paths without the host: a full URL is too long to wrap; the host is named once at the top.
    items.append(plain(run(approve_http(rid), fontType="Monospace"), spacing="None"))
    items.append(text("To reject", isSubtle=True, spacing="Small"))
    items.append(plain(run(approve_http(rid, verb="reject"), fontType="Monospace"), spacing="None"))
    return container(items, separator=True, spacing="Medium")


def _approval(requests: list[dict[str, Any]], reasons: Mapping[str, str | None],
              commands: Mapping[str, str], api_base: str | None, tenant_id: str | None,
              n: int, w: int) -> dict[str, Any]:
    count = len(requests)
    noun = "action waits" if count == 1 else "actions wait"
    severities = [r.get("severity", "") for r in requests]
    top = next((s for s in ("High", "Medium", "Low", "Informational") if s in severities), None)
    body: list[Element] = [_header("approval", "XDR responder · approval needed",
                                   f"{count} {noun} for a person", top, "warning")]
    body.append(text("Nothing below has been done yet. Each action runs only after someone approves it. "
                     "The HTTP endpoints need the function key (header x-functions-key).",
                     spacing="Small"))
    if api_base:
        body.append(labelled("Function app", api_base.rstrip("/"), mono=True, spacing="Small"))
    shown = max(n, 1)  # an approval card always shows at least one request in full
    for r in requests[:shown]:
        body.append(_approval_block(r, reasons.get(r["id"]), commands.get(r["id"]), api_base, n, w))
    if count > shown:
        rest = requests[shown:]
        body.append(more_line(count - shown, "held requests"))
        ids = [r["id"] for r in rest[:max(n, 1) * 3]]
        runs: list[Element] = [run("Their ids: ", isSubtle=True), run(", ".join(ids), fontType="Monospace")]
        if len(rest) > len(ids):
            runs.append(run(f" and {len(rest) - len(ids)} more", isSubtle=True, italic=True))
        body.append(plain(*runs, spacing="None"))
    candidates = []
    if any(r["action"] in CONNECTOR_ACTIONS for r in requests):
        candidates.append(("Connectors", links.exchange_connectors()))
    candidates += [("Incidents", links.incidents(tenant_id)), ("Hunting", links.advanced_hunting(tenant_id))]
    return card(body, _buttons(candidates), fallback=f"Approval needed: {count} {noun} for a person")


# --- failure card ----------------------------------------------------------------------------------

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
    body: list[Element] = [_header("failure", f"XDR responder · {kind}", clip(report.summary, 200), None,
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
    return card(body, _buttons(candidates), fallback=f"Failure ({kind}): {clip(report.summary, 200)}")


# --- digest card -----------------------------------------------------------------------------------

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
    body: list[Element] = [_header("digest", "XDR responder · daily digest", title, None, "emphasis")]
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
        header = {"type": "TableRow", "style": "emphasis",
                  "cells": [_cell("Rule", weight="Bolder")]
                  + [_cell(DIGEST_HEADERS[b], weight="Bolder", horizontalAlignment="Right")
                     for b in DIGEST_COLUMNS]}
        rows = [header]
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
    return card(body, _buttons(candidates),
                fallback=f"Digest {period}: {title}")
