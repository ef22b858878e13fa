"""Email remediation through Defender for Office 365 (``analyzedEmails/remediate``), the default strategy.

One call remediates many (NetworkMessageId, recipient) pairs and becomes one Action-center entry.
Defender allows at most 50 *active* remediations per organisation, so targets are grouped into as few
calls as possible: one call per rule (the entry's name and description say which rule found them)
and at most ``MAX_EMAILS_PER_CALL`` emails per call. The API documents no per-call maximum; 100
keeps each entry reviewable in the Action center and the body far below Graph's 4 MB limit, while a
typical campaign (a few dozen copies) still fits in a single call.

The call is asynchronous: 202 with a ``Location`` into the Action center and no body, and there is no
status API. So the result is ``submitted`` with that link, and remediation/verify.py later confirms it
from ``LatestDeliveryLocation`` in EmailEvents. The Location header is read with our own kiota
response handler (``_KeepLocation``, which raises errors exactly as the SDK does), because the
SDK's ``post`` returns None and drops the headers. Not with kiota's HeadersInspectionHandlerOption:
its options live in the httpx request's extensions, which the last middleware removes, so after a
RetryHandler replay the header is silently lost (seen in the tests).

SDK retries and idempotency: the RetryHandler below this code replays the POST on 429/503/504. A 429
was not processed, so the replay is exact. A 503/504 may have been processed: the replay then creates
a second Action-center entry for the same emails, which converges on the same end state (a message
already in Junk stays there). That is the accepted cost; the ledger's request ids keep the worker
from ever submitting the same request twice on purpose. When the SDK gives up, every target of the
call gets a transient result and the worker retries the whole group.

Failure isolation: a target that cannot be valid (no NetworkMessageId, recipient without "@") fails
alone before any call. The API answers for the call as a whole and says nothing per email, so a 400
(the body was refused: typically one email it does not accept) on a call with more than one email is
bisected: each half is submitted again, down to the single email the service refuses, so one bad
email does not fail the others (at most about 2·log2(n) extra calls per bad email). Other refusals
(403: permission or licence, the same for every email) fail every target of the call with the
service's reason.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import httpx
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.response_handler import ResponseHandler
from kiota_http.middleware.options import ResponseHandlerOption
from msgraph.generated.models.security.analyzed_email import AnalyzedEmail
from msgraph.generated.models.security.remediation_action import RemediationAction
from msgraph.generated.models.security.remediation_severity import RemediationSeverity
from msgraph.generated.security.collaboration.analyzed_emails.microsoft_graph_security_remediate.remediate_post_request_body import (  # noqa: E501
    RemediatePostRequestBody,
)
from opentelemetry import trace

from remediation.actions.base import ActionContext, ActionResult, failed
from remediation.actions.errors import Failure, describe

MAX_EMAILS_PER_CALL = 100

DEFENDER_ACTIONS: dict[str, RemediationAction] = {
    "move_to_junk": RemediationAction.MoveToJunk,
    "move_to_inbox": RemediationAction.MoveToInbox,
    "soft_delete": RemediationAction.SoftDelete,
    "move_to_deleted_items": RemediationAction.MoveToDeletedItems,
}
# Rule severity (Sentinel's names) -> remediation severity (Defender has no "informational").
SEVERITY: dict[str, RemediationSeverity] = {
    "informational": RemediationSeverity.Low,
    "low": RemediationSeverity.Low,
    "medium": RemediationSeverity.Medium,
    "high": RemediationSeverity.High,
}
VERB = {"move_to_junk": "Move to Junk", "move_to_inbox": "Move to Inbox", "soft_delete": "Soft delete",
        "move_to_deleted_items": "Move to Deleted Items"}


def _pair(request: dict[str, Any]) -> tuple[str, str] | None:
    t = request.get("target") or {}
    nmid, rcpt = str(t.get("network_message_id") or "").strip(), str(t.get("recipient") or "").strip()
    if not nmid or "@" not in rcpt:
        return None
    return nmid, rcpt


def _severity(requests: list[dict[str, Any]]) -> RemediationSeverity:
    ranks = [SEVERITY.get(str(r.get("severity", "")).lower(), RemediationSeverity.Medium) for r in requests]
    order = [RemediationSeverity.Low, RemediationSeverity.Medium, RemediationSeverity.High]
    return max(ranks, key=order.index)


def build_body(action: str, rule: str, requests: list[dict[str, Any]],
               pairs: list[tuple[str, str]]) -> RemediatePostRequestBody:
    """The remediate call for one chunk: named after the rule so on-call can find it in the Action center."""
    rule_name = next((r.get("rule_name") for r in requests if r.get("rule_name")), "") or rule
    run = (requests[0].get("run") or {}).get("id", "")
    description = (f"xdr-responder: {VERB[action]} for {len(pairs)} email(s) found by rule '{rule}'"
                   + (f" (scan run {run})" if run else "") + ". Sender's copy untouched.")
    return RemediatePostRequestBody(
        display_name=f"xdr-responder: {rule_name}"[:256],
        description=description,
        severity=_severity(requests),
        action=DEFENDER_ACTIONS[action],
        remediate_senders_copy=False,
        analyzed_emails=[AnalyzedEmail(network_message_id=n, recipient_email_address=r) for n, r in pairs],
    )


class DefenderEmailAction:
    """``move_to_junk`` / ``move_to_inbox`` / ``soft_delete`` through analyzedEmails/remediate."""

    def __init__(self, action: str):
        if action not in DEFENDER_ACTIONS:
            raise ValueError(f"the defender email strategy cannot do {action!r}")
        self.name = action

    async def execute(self, requests: list[dict[str, Any]], ctx: ActionContext) -> list[ActionResult]:
        results: dict[str, ActionResult] = {}
        # rule -> (pair -> request ids): duplicates of one pair share one entry in the call
        groups: dict[str, OrderedDict[tuple[str, str], list[dict[str, Any]]]] = {}
        for req in requests:
            if req.get("action") != self.name:
                results[req["id"]] = failed(req, f"{req.get('action')!r} request given to {self.name}")
                continue
            pair = _pair(req)
            if pair is None:
                results[req["id"]] = failed(req, "target needs network_message_id and a recipient address")
                continue
            key = (pair[0].lower(), pair[1].lower())
            groups.setdefault(req["rule"], OrderedDict()).setdefault(key, []).append(req)
        for rule, by_pair in groups.items():
            items = list(by_pair.items())
            for start in range(0, len(items), MAX_EMAILS_PER_CALL):
                chunk = items[start:start + MAX_EMAILS_PER_CALL]
                results.update(await self._submit_isolating(ctx, rule, [rs for _, rs in chunk]))
        return [results[r["id"]] for r in requests]

    async def _submit_isolating(self, ctx: ActionContext, rule: str,
                                chunk: list[list[dict[str, Any]]]) -> dict[str, ActionResult]:
        """Submit one call (``chunk``: the requests of each distinct email); on a 400 for more than one
        email, bisect and submit the halves (module doc: failure isolation)."""
        reqs = [r for rs in chunk for r in rs]
        pairs = [p for rs in chunk if (p := _pair(rs[0])) is not None]
        results, failure = await self._submit(ctx, rule, reqs, pairs)
        if failure is None or failure.status != 400 or len(chunk) < 2:
            return results
        mid = len(chunk) // 2
        out = await self._submit_isolating(ctx, rule, chunk[:mid])
        out.update(await self._submit_isolating(ctx, rule, chunk[mid:]))
        return out

    async def _submit(self, ctx: ActionContext, rule: str, reqs: list[dict[str, Any]],
                      pairs: list[tuple[str, str]]) -> tuple[dict[str, ActionResult], Failure | None]:
        body = build_body(self.name, rule, reqs, pairs)
        keep = _KeepLocation(ctx.graph.request_adapter)
        try:
            await ctx.graph.security.collaboration.analyzed_emails.microsoft_graph_security_remediate.post(
                body, RequestConfiguration(options=[ResponseHandlerOption(keep)]))
        except Exception as exc:
            failure = describe(exc)
            return {r["id"]: failure.result(r["id"], f"Defender remediation ({len(pairs)} emails)")
                    for r in reqs}, failure
        location = keep.location
        detail = (f"{VERB[self.name]} submitted to Defender with {len(pairs)} email(s); "
                  "confirmed later from LatestDeliveryLocation")
        undo = ({"strategy": "defender", "restore_action": "move_to_inbox"}
                if self.name == "move_to_junk" else None)
        return {r["id"]: ActionResult(r["id"], "submitted", detail=detail, link=location, undo=undo)
                for r in reqs}, None


class _KeepLocation(ResponseHandler):
    """Keeps the final response's Location header; errors are raised exactly as the SDK would."""

    def __init__(self, adapter: Any):
        self.adapter = adapter
        self.location: str | None = None

    async def handle_response_async(self, response: httpx.Response, error_map: Any = None) -> None:
        span = trace.INVALID_SPAN
        await self.adapter.throw_failed_responses(response, error_map, span, span)
        self.location = response.headers.get("location")
