"""The action interface: what the worker calls, and what every action returns.

An action receives a batch of remediation-request/1 dicts that the worker has already validated and
passed through the safety rails, all with the same ``action``. It returns one ``ActionResult`` per
request, in the same order, and never raises for a target's failure: one mailbox that answers 404
must not stop the other nine. Batching matters for the Defender strategy (one Action-center entry
for a whole campaign); the other actions run their targets concurrently within Graph's limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from core.settings import Settings
from core.tenant import TenantConfig

if TYPE_CHECKING:
    from msgraph import GraphServiceClient

    from remediation.exchange import ExchangeClient

# States an action may report (a subset of the ledger's states).
RESULT_STATES = ("confirmed", "submitted", "skipped", "failed")


@dataclass
class ActionResult:
    request_id: str
    state: str                        # confirmed | submitted | skipped | failed
    detail: str = ""                  # for people: what was done or why not
    error: str | None = None          # the service's reason when state == failed
    transient: bool = False           # a retry may succeed (429, 5xx, timeout)
    retry_after: float | None = None  # the service's hint, seconds
    link: str | None = None           # Action-center link (Defender strategy)
    undo: dict[str, Any] | None = None  # what an undo needs, e.g. {"original_folder": "inbox"}
    # Why it was refused, when that is a known case on-call acts on differently from a plain failure:
    # "privileged_target" (an admin account the identity's Entra role does not cover).
    blocked: str | None = None

    def __post_init__(self) -> None:
        if self.state not in RESULT_STATES:
            raise ValueError(f"ActionResult.state must be one of {RESULT_STATES}, not {self.state!r}")


@dataclass
class ActionContext:
    settings: Settings
    tenant: TenantConfig
    graph: GraphServiceClient
    exchange: ExchangeClient | None = None
    # remediation.mailbox_slots.MailboxSlots: Outlook's per-mailbox limit across instances (mailbox
    # strategy); None keeps only the in-process limit (tests, CLI, a single instance).
    mailbox_slots: Any = None
    # Requests an earlier attempt may already have carried out (request id -> ISO time of the earliest
    # intent; issue 13): the action checks the service's state before acting again.
    prior_attempts: dict[str, str] = field(default_factory=dict)


class Action(Protocol):
    name: str

    async def execute(self, requests: list[dict[str, Any]], ctx: ActionContext) -> list[ActionResult]: ...


def failed(request: dict[str, Any], reason: str, *, detail: str = "") -> ActionResult:
    """A permanent failure found before calling anything (bad or incomplete target)."""
    return ActionResult(request["id"], "failed", detail=detail or reason, error=reason)
