"""How the command line shows ledger rows: ``ledger``'s columns (times, people, whole ids) and
``ledger show``'s whole record with its history."""

from __future__ import annotations

import json
import re
from typing import Any, TextIO

from remediation.ledger import Record
from remediation.outcome import STATES
from responder.commands.tables import clean, print_table

_OBJECT_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# Evidence columns that name the object id in the first column (Defender advanced hunting schema:
# IdentityLogonEvents / CloudAppEvents AccountObjectId + AccountUpn, EmailEvents SenderObjectId +
# SenderFromAddress, RecipientObjectId + RecipientEmailAddress).
_UPN_OF = (("AccountObjectId", "AccountUpn"), ("SenderObjectId", "SenderFromAddress"),
           ("RecipientObjectId", "RecipientEmailAddress"))
# "found": which path found the request first (the ledger keeps the first request of an id): "push"
# (Graph change notifications, issue 15) or "scheduled" (a scan of the hunting tables).
LIST_COLUMNS = ("id", "rule", "action", "state", "found", "target", "by", "created", "updated", "detail")
FOUND_BY = {"push": "the push path (Graph change notification)", "scheduled": "a scheduled scan"}


def source_of(rec: Record) -> str:
    """``push``, ``scheduled`` or "" (a request from before requests carried their source, an undo)."""
    source = (rec.request or {}).get("source")
    return source if source in FOUND_BY else ""


def is_object_id(value: object) -> bool:
    return isinstance(value, str) and bool(_OBJECT_ID.match(value))


def upn_for(object_id: str, rec: Record) -> str | None:
    """The UPN the row's evidence gives for ``object_id`` (the worker acts on object ids; people read
    names)."""
    evidence = (rec.request or {}).get("evidence")
    if not isinstance(evidence, dict):
        return None
    for id_col, upn_col in _UPN_OF:
        oid, upn = evidence.get(id_col), evidence.get(upn_col)
        if isinstance(oid, str) and oid.lower() == object_id.lower() and isinstance(upn, str) and upn:
            return upn
    return None


def target_text(rec: Record) -> str:
    parts = []
    for key, value in rec.target.items():
        upn = upn_for(value, rec) if is_object_id(value) else None
        parts.append(f"{key}={value}" + (f" ({upn})" if upn else ""))
    return ", ".join(parts)


def undoer(undo: Record | None) -> str | None:
    """Who undid a request: the person recorded in its undo request."""
    undo_of = (undo.request or {}).get("undo_of") if undo is not None else None
    by = undo_of.get("by") if isinstance(undo_of, dict) else None
    return str(by) if by else None


def people(rec: Record, undo: Record | None = None) -> str:
    """Who decided: approved / rejected / undone by whom (and the unverified name a caller gave)."""
    x, parts = rec.extra, []
    for key, verb in (("approved_by", "approved"), ("rejected_by", "rejected")):
        if x.get(key):
            parts.append(f"{verb} by {x[key]}")
    if x.get("claimed_by"):
        parts.append(f"says {x['claimed_by']} (unverified)")
    if x.get("run_by_hand"):
        parts.append("run by hand")
    if x.get("undone_by"):
        by = undoer(undo)
        parts.append(f"undone by {by}" if by else "undone")
    if x.get("undo_of"):
        by = undoer(rec)
        parts.append(f"undo of {x['undo_of']}" + (f" by {by}" if by else ""))
    return "; ".join(parts)


def state_text(rec: Record) -> str:
    # The hold reason stays on the row after the hold ends: it describes only a held request.
    return rec.state + (f" ({rec.hold_reason})" if rec.hold_reason and rec.state == "held" else "")


def print_list(records: list[Record]) -> None:
    by_id = {r.request_id: r for r in records}
    print_table(LIST_COLUMNS,
                [(r.request_id, r.rule, r.action, state_text(r), source_of(r), target_text(r),
                  people(r, by_id.get(str(r.extra.get("undone_by") or ""))), r.created_at, r.updated_at,
                  r.error or r.detail) for r in records],
                whole=("id", "rule", "action", "created", "updated"),
                empty="The ledger has no matching requests.")


def history(rec: Record) -> list[tuple[str, str]]:
    """(time, state) in the order they happened (ties in the lifecycle's order)."""
    return sorted(((at, state) for state, at in rec.state_times.items()),
                  key=lambda p: (p[0], STATES.index(p[1]) if p[1] in STATES else len(STATES)))


def show_json(rec: Record, command: str | None, undo: Record | None) -> dict[str, Any]:
    from responder.commands.remediate import record_json

    return {**record_json(rec), "history": [{"state": s, "at": at} for at, s in history(rec)],
            "request": rec.request, "claim_token": rec.claim_token, "claim_until": rec.claim_until,
            "command": command, "undone_by_person": undoer(undo)}


def print_record(rec: Record, out: TextIO, *, command: str | None, undo: Record | None,
                 now: str) -> None:
    """Every field of the row, one ``label  value`` line each, values whole (the terminal wraps them)."""
    lines: list[tuple[str, object]] = [
        ("request", rec.request_id), ("rule", rec.rule), ("action", f"{rec.action} (mode {rec.mode})"),
        ("state", state_text(rec) + (f" since {rec.state_times[rec.state]}"
                                     if rec.state in rec.state_times else "")),
    ]
    for key, value in rec.target.items():
        upn = upn_for(value, rec) if is_object_id(value) else None
        lines.append(("target", f"{key}={value}" + (f" ({upn})" if upn else "")))
    lines += [("found by", FOUND_BY.get(source_of(rec))), ("held for", rec.hold_reason), ("run", rec.run_id),
              ("created", rec.created_at),
              ("updated", rec.updated_at)]
    decided = {"approved": rec.extra.get("approved_by"), "rejected": rec.extra.get("rejected_by")}
    for at, state in history(rec):
        by = decided.get(state)
        lines.append(("history", f"{at}  {state}" + (f" by {by}" if by else "")))
    lines.append(("attempts", rec.attempts))
    lines += [("detail", rec.detail), ("error", rec.error), ("link", rec.link)]
    x = rec.extra
    lines += [("approved by", x.get("approved_by")), ("rejected by", x.get("rejected_by")),
              ("claimed by", f"{x['claimed_by']} (a name the caller gave; not verified)"
               if x.get("claimed_by") else None),
              ("executed by", x.get("executed_by")), ("run by hand", "yes" if x.get("run_by_hand") else None),
              ("blocked", x.get("blocked"))]
    if rec.claim_until:
        live = "live" if rec.claim_until > now else "expired"
        lines.append(("lease", f"{rec.claim_token or '?'} until {rec.claim_until} ({live})"))
    if rec.undo:
        lines.append(("undo info", json.dumps(rec.undo, sort_keys=True, ensure_ascii=False)))
    if x.get("undone_by"):
        by = undoer(undo)
        lines.append(("undone by", f"{by} (undo request {x['undone_by']})" if by
                      else f"undo request {x['undone_by']}"))
    if x.get("undo_of"):
        lines.append(("undo of", f"{x['undo_of']}" + (f" by {undoer(rec)}" if undoer(rec) else "")))
    if x.get("dry_run_at") or x.get("dry_run"):
        lines.append(("dry run", f"{x.get('dry_run_at') or rec.state_times.get('skipped', '')} "
                                 f"{x.get('dry_run_detail') or ''} (run {x.get('dry_run_run_id') or '-'})"))
    lines += [("reopened", x.get("reopened_at")), ("delivered", x.get("dequeue_count") and
                                                  f"{x['dequeue_count']} times")]
    # Whatever else the row records (fields added later, e.g. the worker's intent marks): the whole record.
    shown = {"approved_by", "rejected_by", "claimed_by", "executed_by", "run_by_hand", "blocked", "undone_by",
             "undo_of", "dry_run", "dry_run_at", "dry_run_detail", "dry_run_run_id", "reopened_at",
             "dequeue_count", "network_message_id"}
    lines += [(key.replace("_", " "), x[key]) for key in sorted(x) if key not in shown]
    if command:
        lines.append(("command", command))
    evidence = (rec.request or {}).get("evidence")
    if isinstance(evidence, dict):
        for key, value in evidence.items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
            lines.append(("evidence", f"{key}: {text}"))
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        if value is None or value == "":
            continue
        print(f"{label.ljust(width)}  {clean(value)}", file=out)


def candidates_text(candidates: list[Record]) -> list[str]:
    return [f"  {r.request_id}  {r.rule}  {r.action}  {state_text(r)}  {clean(target_text(r))}"
            for r in candidates]

