"""``notify``: nothing to change anywhere; the worker records the request and the card tells on-call."""

from __future__ import annotations

from typing import Any

from remediation.actions.base import ActionContext, ActionResult, failed
from remediation.actions.registry import ActionDef


class NotifyAction:
    """No service state to check: a retry after an earlier attempt (``ctx.prior_attempts``) is confirmed
    again, which only records it; the card is the worker's, not this action's."""

    name = "notify"

    async def execute(self, requests: list[dict[str, Any]], ctx: ActionContext) -> list[ActionResult]:
        return [ActionResult(r["id"], "confirmed", detail="notified") if r.get("action") == self.name
                else failed(r, f"{r.get('action')!r} request given to notify") for r in requests]


# Changes nothing in the tenant, so it needs no permission and is not capped (capping it would only hide
# findings from on-call); the rule's target fields are free.
DECLARES = (ActionDef(name="notify", family="notify", label="Notify only",
                      executor=lambda _strategy: NotifyAction(), capped=False),)
