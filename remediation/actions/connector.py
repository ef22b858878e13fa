"""``disable_connector``: Set-InboundConnector / Set-OutboundConnector ``-Enabled:$false`` via the Exchange
admin API (remediation/exchange.py).

The rails keep this in approval mode unless RESPONDER_CONNECTOR_ACTIONS is ``auto``; this module only
runs what was allowed, and never under ``manual``: a manual deployment grants no Exchange permission, so a
call could only fail with 401/403 (on-call runs the command by hand and records it with
``approve --done``, Worker.approve). The target names the connector and, when the rule knows it,
``connector_type`` (inbound/outbound); otherwise both kinds are looked up. A connector that is already
disabled is ``skipped``, unless an earlier attempt at this request may have disabled it
(``ctx.prior_attempts``: a crash, or an error answered after Exchange applied the change): then it is
``confirmed``, with the undo (re-enable) information. One that does not exist is a permanent failure.
Targets go out in bounded batches with a per-target timeout (remediation/actions/bounded.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from remediation.actions.base import ActionContext, ActionResult, failed
from remediation.actions.bounded import TARGET_CONCURRENCY, TARGET_TIMEOUT, each_bounded, timeout_result
from remediation.actions.errors import describe
from remediation.actions.registry import ActionDef
from remediation.exchange import render_command


class DisableConnector:
    name = "disable_connector"
    enabled = False   # the state this action sets (EnableConnector: True, the undo)

    def __init__(self, *, concurrency: int = TARGET_CONCURRENCY, timeout: float = TARGET_TIMEOUT):
        self.concurrency, self.timeout = concurrency, timeout

    async def execute(self, requests: list[dict[str, Any]], ctx: ActionContext) -> list[ActionResult]:
        return await each_bounded(
            requests, lambda r: self._one(r, ctx), concurrency=self.concurrency, timeout=self.timeout,
            timed_out=lambda r, t: timeout_result(
                r["id"], f"{self.name} {(r.get('target') or {}).get('connector')}", t))

    async def _one(self, req: dict[str, Any], ctx: ActionContext) -> ActionResult:
        if req.get("action") != self.name:
            return failed(req, f"{req.get('action')!r} request given to {self.name}")
        target = req.get("target") or {}
        name = str(target.get("connector") or "").strip()
        if not name:
            return failed(req, "target needs the connector's name")
        # An undo takes the direction the original found (its undo information) when the target omits it.
        undo = ((req.get("undo_of") or {}).get("undo") or {}) if self.enabled else {}
        kind = target.get("connector_type") or (undo.get("connector_type") if isinstance(undo, dict)
                                                else None)
        if kind not in (None, "", "inbound", "outbound"):
            return failed(req, f"connector_type must be inbound or outbound, not {kind!r}")
        if ctx.settings.connector_actions == "manual":
            # Second line of defence (Worker.approve refuses first): no call that cannot succeed.
            return failed(req, "RESPONDER_CONNECTOR_ACTIONS is manual: the app has no Exchange permission; "
                               "run the command by hand, then mark the request done",
                          detail=f"not run: {_command(kind or 'inbound', name, self.enabled)}")
        if ctx.exchange is None:
            return failed(req, "no Exchange admin client is configured (RESPONDER_TENANT_ID and a credential "
                               "are needed); run the command by hand",
                          detail=f"not run: {_command(kind or 'inbound', name, self.enabled)}")
        kinds = [kind] if kind else ["inbound", "outbound"]
        try:
            for direction in kinds:
                found = await ctx.exchange.get_connector(direction, name)
                if found is None:
                    continue
                if self.enabled:
                    return await self._enable(req, ctx, direction, name, found)
                command = _command(direction, name)
                undo = {"connector": name, "connector_type": direction, "enabled": True}
                if found.get("Enabled") is False:
                    detail = f"{direction} connector {name} is already disabled"
                    if req["id"] in ctx.prior_attempts:
                        return ActionResult(req["id"], "confirmed", undo=undo,
                                            detail=f"{detail}: disabled by an earlier attempt (recorded now)")
                    return ActionResult(req["id"], "skipped", detail=detail)
                await ctx.exchange.set_connector_enabled(direction, name, False)
                return ActionResult(req["id"], "confirmed", detail=f"ran {command}", undo=undo)
        except Exception as exc:
            return describe(exc).result(req["id"], f"{self.name} {name}")
        reason = f"no {' or '.join(kinds)} connector named {name!r} exists"
        return ActionResult(req["id"], "failed", detail=reason, error=reason)


class EnableConnector(DisableConnector):
    """``enable_connector``: the undo of ``disable_connector`` (``-Enabled:$true``). A connector already
    enabled is ``confirmed``: the undo's end state holds (re-enabled by somebody or an earlier attempt)."""

    name = "enable_connector"
    enabled = True

    async def _enable(self, req: dict[str, Any], ctx: ActionContext, direction: str, name: str,
                      found: Mapping[str, Any]) -> ActionResult:
        if found.get("Enabled") is True:
            return ActionResult(req["id"], "confirmed", detail=f"{direction} connector {name} is enabled "
                                                               "already: nothing to undo")
        await ctx.exchange.set_connector_enabled(direction, name, True)
        return ActionResult(req["id"], "confirmed", detail=f"ran {_command(direction, name, True)}")


def _command(direction: str, name: str, enabled: bool = False) -> str:
    """The PowerShell for the ledger detail, or why there is none: a name that cannot be quoted safely
    (control characters) still executes through InvokeCommand, whose JSON body keeps it one value."""
    try:
        return render_command(direction, name, enabled=enabled)
    except ValueError as exc:
        return f"(no command shown: {exc})"


def manual_command(request: Mapping[str, Any]) -> str | None:
    """The exact Exchange Online PowerShell a person runs for a connector request (None for other actions,
    or a name that cannot be quoted safely)."""
    if request.get("action") not in (DisableConnector.name, EnableConnector.name):
        return None
    enabled = request.get("action") == EnableConnector.name
    target = request.get("target") or {}
    name = str(target.get("connector") or "")
    kinds = [target["connector_type"]] if target.get("connector_type") else ["inbound", "outbound"]
    try:
        return " or ".join(render_command(k, name, enabled=enabled) for k in kinds)
    except ValueError:
        return None


# Held for approval unless RESPONDER_CONNECTOR_ACTIONS is auto (remediation/rails.py); under manual a person
# runs ``manual_command`` and records it with approve --done (remediation/decisions.py).
DECLARES = (
    ActionDef(name="disable_connector", family="connector", label="Disable connector",
              executor=lambda _strategy: DisableConnector(), required=("connector",),
              optional=("connector_type",), features=("exchangeConnectors",), manual=True,
              command=manual_command, inverse="enable_connector"),
    ActionDef(name="enable_connector", family="connector", label="Re-enable connector",
              executor=lambda _strategy: EnableConnector(), required=("connector",),
              optional=("connector_type",), features=("exchangeConnectors",), manual=True,
              command=manual_command),
)
