"""The scan card: one per rule run. What was found, what was done, what waits, who was involved."""

from __future__ import annotations

from collections import Counter
from typing import Any

from core.request import EMAIL_ACTIONS
from notifications import links
from notifications.common import (
    CONNECTOR_ACTIONS,
    approve_cli,
    approve_http,
    buttons,
    done_cli,
    done_http,
    header,
    open_request,
    outcome_links,
    stop_banner,
)
from notifications.elements import (
    Element,
    card,
    clip,
    container,
    facts,
    heading,
    inline_list,
    labelled,
    more_line,
    plain,
    run,
    severity_style,
    text,
    when,
)
from notifications.entities import action_label, describe_target, entities
from notifications.message import MAX_MESSAGE_BYTES, fit
from notifications.reports import (
    BUCKET_LABELS,
    BUCKETS,
    RunReport,
    bucket_of,
)


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


def found_by(requests: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """(the "Found by" fact, a sentence) from the requests' ``source``: which path found each first (the
    ledger keeps the first request of an id, so a card built from ledger rows tells who was first)."""
    counts = Counter(r.get("source") for r in requests)
    push, scheduled = counts.get("push", 0), counts.get("scheduled", 0)
    if push and scheduled:
        return (f"push path ({push}), scheduled scan ({scheduled})",
                f"{push} of these requests were found by the push path (Graph change notifications), "
                f"before any scheduled scan; {scheduled} by a scheduled scan.")
    if push:
        subject = "This request was" if push == 1 else "These requests were"
        return ("push path", f"{subject} found by the push path (Graph change notifications on the "
                             "protected mailboxes), before any scheduled scan.")
    if scheduled:
        return "scheduled scan", None
    return None, None


PUSH_BACKEND = "push path (Graph change notifications)"


def backend_label(report: RunReport) -> str | None:
    """What the run read: the configured query backend, except for a push run (every request has
    ``source`` push), which read the mailboxes through Graph change notifications, not the backend."""
    if report.requests and all(r.get("source") == "push" for r in report.requests):
        return PUSH_BACKEND
    return report.backend


def _per_action_lines(report: RunReport) -> list[Element]:
    by_action: dict[str, Counter[str]] = {}
    outcomes = {o.request_id: o for o in report.outcomes}
    for r in report.requests:
        o = outcomes.get(r["id"])
        b = bucket_of(o.state if o else None)
        if o is None and r.get("mode") == "approval":
            b = "queued for approval"
        if o is None and (r.get("mode") == "dry_run" or report.dry_run):
            b = "dry run"
        by_action.setdefault(r["action"], Counter())[b] += 1
    lines: list[Element] = []
    order = [*BUCKETS, "queued for approval", "dry run"]
    for action, counts in by_action.items():
        parts = [f"{counts[b]} {b if b != 'held' else 'held for approval'}" for b in order if counts[b]]
        lines.append(text(f"**{action_label(action)}**: {', '.join(parts)}", spacing="Small"))
    return lines


def _held_section(report: RunReport, n: int, w: int) -> list[Element]:
    held = report.held()
    if not held:
        return []
    items: list[Element] = [heading(f"Waiting for approval ({len(held)})")]
    if report.api_base:
        items.append(labelled("Function app", report.api_base.rstrip("/"), mono=True, spacing="Small"))
    for r in held[:n]:
        items.append(plain(run(f"{action_label(r['action'])}: ", weight="Bolder"),
                           run(clip(describe_target(r), w)), spacing="Small"))
        if (button := open_request(r["id"], report.api_base)) is not None:
            items.append(button)
        command = report.commands.get(r["id"])
        if r["id"] in report.by_hand:
            # Approving runs nothing here (connector actions are manual): run it, then record it.
            items.append(plain(run("Run this command, then mark it done: ", isSubtle=True),
                               run(command or "(see the ledger)", fontType="Monospace"), spacing="None"))
            items.append(plain(run("Done: ", isSubtle=True), run(done_cli(r["id"]), fontType="Monospace"),
                               run(" or ", isSubtle=True), run(done_http(r["id"]), fontType="Monospace"),
                               spacing="None"))
            continue
        if command:   # the exact command on-call may run instead (connectors: Exchange PowerShell)
            items.append(plain(run("Or run: ", isSubtle=True), run(command, fontType="Monospace"),
                               spacing="None"))
        items.append(plain(run("Approve: ", isSubtle=True), run(approve_cli(r["id"]), fontType="Monospace"),
                           run(" or ", isSubtle=True), run(approve_http(r["id"]), fontType="Monospace"),
                           spacing="None"))
    if len(held) > n:
        rest = held[n:]
        items.append(more_line(len(rest), "held requests"))
        ids = [r["id"] for r in rest[:max(n, 1) * 3]]
        id_runs: list[Element] = [run("Their ids: ", isSubtle=True),
                                  run(", ".join(ids), fontType="Monospace")]
        if len(rest) > len(ids):
            id_runs.append(run(f" and {len(rest) - len(ids)} more", isSubtle=True, italic=True))
        items.append(plain(*id_runs, spacing="None"))
    # Plain runs: Teams' Markdown would eat "<id>" as an HTML tag.
    items.append(plain(run("Nothing held has been done. The HTTP endpoints need the function key (header "
                           "x-functions-key); reject with POST /api/requests/<id>/reject. The evidence is in "
                           "the ledger (python -m responder ledger --state held).", isSubtle=True,
                           size="Small")))
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
    body: list[Element] = [header("scan", kicker, clip(report.rule_name, 200), report.severity,
                                   severity_style(report.severity))]
    body.append(labelled("Rule", report.rule, mono=True, spacing="Small"))
    body.extend(stop_banner(report.emergency_stop))
    body.extend(_scan_status(report, w))

    counts = report.bucket_counts()
    summary = [("Rows found", str(report.rows)), ("Requests", str(len(report.requests)))]
    summary += [(BUCKET_LABELS[b], str(counts[b])) for b in BUCKETS if b != "queued" or counts[b]]
    found_fact, found_line = found_by(report.requests)
    if found_fact:
        summary.append(("Found by", found_fact))
    summary.append(("Finished", when(report.finished_at or report.started_at)))
    if report.backend:
        summary.append(("Backend", backend_label(report)))
    body.append(facts(summary))
    if found_line:
        body.append(text(found_line, isSubtle=True, spacing="Small"))
    if report.run_id:
        body.append(labelled("Run", report.run_id, mono=True, isSubtle=True, spacing="Small"))

    per_action = _per_action_lines(report)
    if per_action:
        body.append(heading("By action"))
        body.extend(per_action)
    body.extend(_held_section(report, n, w))
    body.extend(_failed_section(report, n, w))

    found = entities(report.requests)
    if found:
        body.append(heading("Involved"))
        body.extend(inline_list(kind, values, len(values), n, min(w, 80)) for kind, values in found.items())

    tid = report.tenant_id
    candidates = outcome_links(report.outcomes, 1)
    if any(r["action"] in EMAIL_ACTIONS for r in report.requests):
        candidates.append(("Action center", links.action_center(tid)))
    if any(r["action"] in CONNECTOR_ACTIONS for r in report.requests):
        candidates.append(("Connectors", links.exchange_connectors()))
    candidates += [("Hunting", links.advanced_hunting(tid)), ("Incidents", links.incidents(tid))]
    fallback = (f"{report.severity} · {report.rule_name}: {report.rows} rows, "
                f"{len(report.requests)} requests, {counts['held']} held, {counts['failed']} failed")
    return card(body, buttons(candidates), fallback=fallback)
