"""What the poison handler writes for a request the host gave up on.

The poison handler never fails a row under a delivery that holds a live claim on it (the worker
checks that first, and has the host retry the poison message later). A row that is not claimed is
marked ``failed``; when it carries a write-ahead intent (remediation/intent.py) a delivery was about to
act when it was lost, so the row says the action may have been carried out and on-call checks the
service before doing it by hand.
"""

from __future__ import annotations

from remediation.ledger import IllegalTransition, Ledger, LedgerConflict, Record


def reason_for(rec: Record, dequeue_count: int) -> str:
    return (f"the message failed {dequeue_count} deliveries and went to the poison queue"
            + (f"; last error: {rec.error}" if rec.error else ""))


def mark_failed(ledger: Ledger, rec: Record, dequeue_count: int) -> Record:
    """``rec`` (received or approved, not claimed) recorded failed; the fresh row if it changed first."""
    detail = "gave up after repeated transient errors"
    intent = rec.extra.get("intent_at")
    if intent:
        detail += (f"; the action may have been carried out (a delivery was about to act at {intent}): "
                   "check the service before doing it by hand")
    try:
        return ledger.transition(rec, "failed", error=reason_for(rec, dequeue_count), detail=detail,
                                 dequeue_count=dequeue_count)
    except (LedgerConflict, IllegalTransition):
        return ledger.read(rec.rule, rec.request_id) or rec
