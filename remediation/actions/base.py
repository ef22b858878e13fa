"""The action interface: what the worker calls, and what every action returns.

An action receives a batch of remediation-request/1 dicts that the worker has already validated and
passed through the safety rails, all with the same ``action``. It returns one ``ActionResult`` per
request, in the same order, and never raises for a target's failure: one mailbox that answers 404
must not stop the other nine. Batching matters for the Defender strategy (one Action-center entry
for a whole campaign); the other actions run their targets concurrently, bounded (actions/bounded.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    # A ``submitted`` whose call got an ambiguous answer (5xx, 408, timeout, reset after sending): the
    # service may not have taken it. Recorded as ``unconfirmed_submission``; verification resubmits it
    # once when the message has not moved after a short grace (remediation/resubmit.py).
    unconfirmed: bool = False

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
    # request id -> ISO UTC time of the earliest write-ahead intent: some earlier attempt (a crashed
    # delivery, or an attempt of this delivery that answered an error) may already have acted on the
    # service. An action checks the service's state for these first, and records an end state that
    # already holds as ``confirmed`` (with undo information), never ``skipped``, never acting again.
    prior_attempts: dict[str, str] = field(default_factory=dict)
    # The subset of ``prior_attempts`` whose earlier attempt's fate is unknown: a delivery that crashed,
    # lost its result write or was cut off mid-call (remediation/intent.py ``ambiguous_prior``). Not a
    # retry after the action itself answered transient (429, no connection). Used by actions that have
    # no state to check before acting again (Defender's remediate: remediation/actions/email_defender.py).
    ambiguous_prior: frozenset[str] = frozenset()


class Action(Protocol):
    name: str

    async def execute(self, requests: list[dict[str, Any]], ctx: ActionContext) -> list[ActionResult]: ...


def prior_attempt_at(ctx: ActionContext, request_id: str) -> datetime | None:
    """When the earliest earlier attempt at this request began (``ctx.prior_attempts``), or None when
    there was none. A time that cannot be read counts as "not yet": nothing the service shows is then
    taken for that attempt's work by a time comparison (the caller acts again, as without one)."""
    text = ctx.prior_attempts.get(request_id)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def failed(request: dict[str, Any], reason: str, *, detail: str = "") -> ActionResult:
    """A permanent failure found before calling anything (bad or incomplete target)."""
    return ActionResult(request["id"], "failed", detail=detail or reason, error=reason)
