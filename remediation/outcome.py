"""What happened to one remediation request: the worker's result, the ledger row's summary, a card line."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# expired: held longer than RESPONDER_HELD_EXPIRY without a decision; can no longer be approved.
STATES = ("received", "held", "approved", "rejected", "submitted", "confirmed", "not_applied",
          "skipped", "failed", "expired")
# States after which nothing more happens to the request unless a person acts (approve, undo).
SETTLED = frozenset({"held", "rejected", "confirmed", "not_applied", "skipped", "failed", "expired"})


@dataclass
class Outcome:
    request_id: str
    rule: str
    action: str
    target: dict[str, Any]
    mode: str
    state: str
    detail: str = ""
    error: str | None = None
    link: str | None = None          # Action center or portal link, when known
    attempts: int = 0
    hold_reason: str | None = None   # "approval" | "cap" | "unverifiable" when state == "held"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
