"""The undo-run card: one card for a whole run undone (remediation/undo_run.py), whatever its size.

Every request of the run is in one category (``extra["undo_run"]``): undone now, failed, undone before,
cannot be undone (revokes, confirm compromised: the platform has no way back), not confirmed yet, or had
done nothing. Targets are untrusted text: RichTextBlock runs only (notifications/elements.py).
"""

from __future__ import annotations

from typing import Any

from notifications.common import header
from notifications.elements import Element, card, clip, inline_list, labelled, plain, run, text
from notifications.entities import action_label, describe_target
from notifications.message import MAX_MESSAGE_BYTES, fit
from remediation.outcome import Outcome
from remediation.reporting import Report

SECTIONS = (("undone", "Undone now"), ("failed", "Undo failed"), ("already_undone", "Undone before"),
            ("cannot_undo", "Cannot be undone (act in the portal if needed)"),
            ("pending", "Not confirmed yet (undo once verified)"), ("nothing_done", "Had done nothing"))


def undo_run_card(report: Report, *, limit: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    return fit(lambda n, w: _undo(report, n, w), limit=limit)


def _line(o: Outcome) -> str:
    return f"{action_label(o.action)}: {describe_target({'target': o.target})}"


def _undo(report: Report, n: int, w: int) -> dict[str, Any]:
    first = report.outcomes[0].extra if report.outcomes else {}
    failed = [o for o in report.outcomes if o.extra.get("undo_run") == "failed"]
    body: list[Element] = [header("undo", "XDR responder · undo a run", f"Run {first.get('undo_run_id', '')} "
                                  "undone", None, "warning" if failed else "good"),
                           plain(run(clip(report.summary, w * 2)), spacing="Small")]
    for category, label in SECTIONS:
        items = [o for o in report.outcomes if o.extra.get("undo_run") == category]
        if items:
            body.append(inline_list(label, [_line(o) for o in items], len(items), n, min(w, 120)))
    for o in failed[:n]:
        body.append(labelled(o.request_id, clip(o.error or o.detail, w), mono=False, spacing="Small"))
    body.append(text("Each undo is its own ledger request, linked to the original (ledger show ID).",
                     isSubtle=True, size="Small", spacing="Small"))
    return card(body, fallback=clip(report.summary, 300))
