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

Exactly once, and what it costs. A 5xx, a timeout or a connection reset on this POST is AMBIGUOUS: the
service may have accepted the call (an Action-center entry exists, the emails will move) before its
answer was lost. Resubmitting then creates a second Action-center entry for every email of the call (up
to 100), which is what made 200-300 emails per run be submitted twice under faults: the SDK's
RetryHandler replayed the POST on 503/504 whether or not it had been processed, and every target of the
call then came back transient, so the worker submitted the whole chunk again. So:

* the SDK retry is switched off for this POST (``RetryHandlerOption`` per request);
* an ambiguous failure records every target of that call as ``submitted`` with ``unconfirmed=True``
  (ledger ``unconfirmed_submission``; not transient: the worker does not resubmit it), saying the service
  may have accepted it. remediation/verify.py settles it from EmailEvents: ``confirmed`` when the
  message moved; when EmailEvents still shows it in another mailbox folder 15 minutes after submission
  (``UNCONFIRMED_GRACE``), it is resubmitted ONCE through the worker's path (remediation/resubmit.py);
  after that, like any submission, ``not_applied`` (and on-call is told) when it did not move within
  the grace period (2 h);
* a 429 was never processed: it is transient with its Retry-After and the worker retries it;
* 4xx refusals are permanent (bisected on 400, below);
* each call's result stands on its own: a fault on one call changes nothing for the calls before or
  after it (they were accepted, or are sent once).

The trade-off, chosen for a SOC: no immediate resubmission (each Action-center entry is an item on-call
reviews, and Defender caps active remediations at 50 per organisation); a call the service had NOT
accepted is resubmitted by verification after at most the short grace plus one verify period (15 + 5
minutes), and a call it HAD accepted costs at most one duplicate Action-center entry per email, only
when Defender takes longer than the short grace to apply it (it documents no bound: "It could take up
to a few hours to remediate", https://learn.microsoft.com/defender-office-365/remediate-malicious-email-delivered-office-365;
a second submission of a moved email is "Already in destination" there).

A request in ``ctx.ambiguous_prior`` (an earlier delivery was about to submit it and never recorded an
answer: it crashed between the POST and the ledger write, lost its result write, or was cut off mid-call)
is treated like an ambiguous answer: recorded ``submitted`` with ``unconfirmed=True`` and NOT sent again
(there is no status API to ask; verification resubmits it once after the short grace if the message did
not move). Before this, a crash cost one duplicate Action-center entry per email of the call. A request
only in ``ctx.prior_attempts`` (a retry after this action itself answered transient: a 429 or a connection
never made, so nothing was processed) is submitted again at once. docs/remediation.md states this.

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
from kiota_abstractions.api_error import APIError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.response_handler import ResponseHandler
from kiota_http.middleware.options import ResponseHandlerOption, RetryHandlerOption
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
            if req["id"] in ctx.ambiguous_prior:   # module doc: maybe submitted already; verify settles it
                results[req["id"]] = ActionResult(
                    req["id"], "submitted", unconfirmed=True, undo=self._undo(),
                    detail=f"{VERB[self.name]}: an earlier attempt may have submitted it (it ended before "
                           "recording Defender's answer); not sent again now (that would add a duplicate "
                           "Action-center entry): confirmed later from LatestDeliveryLocation, or "
                           "resubmitted once if the message has not moved")
                continue
            key = (pair[0].lower(), pair[1].lower())
            groups.setdefault(req["rule"], OrderedDict()).setdefault(key, []).append(req)
        for rule, by_pair in groups.items():
            items = list(by_pair.items())
            for start in range(0, len(items), MAX_EMAILS_PER_CALL):
                chunk = items[start:start + MAX_EMAILS_PER_CALL]
                results.update(await self._submit_isolating(ctx, rule, [rs for _, rs in chunk]))
        return [results[r["id"]] for r in requests]

    def _undo(self) -> dict[str, Any] | None:
        return ({"strategy": "defender", "restore_action": "move_to_inbox"}
                if self.name == "move_to_junk" else None)

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
        # No SDK replay of this POST (module doc): a 503/504 may have been processed.
        no_replay = RetryHandlerOption(max_retries=0, should_retry=False)
        undo = self._undo()
        try:
            await ctx.graph.security.collaboration.analyzed_emails.microsoft_graph_security_remediate.post(
                body, RequestConfiguration(options=[ResponseHandlerOption(keep), no_replay]))
        except Exception as exc:
            failure = describe(exc)
            if is_ambiguous(exc):
                detail = (f"{VERB[self.name]} for {len(pairs)} email(s): Defender answered "
                          f"{failure.reason}, so it may have accepted the submission; not sent again now "
                          "(that would add a duplicate Action-center entry): confirmed later from "
                          "LatestDeliveryLocation, or resubmitted once if the message has not moved")
                return {r["id"]: ActionResult(r["id"], "submitted", detail=detail, undo=undo,
                                              unconfirmed=True) for r in reqs}, None
            return {r["id"]: failure.result(r["id"], f"Defender remediation ({len(pairs)} emails)")
                    for r in reqs}, failure
        location = keep.location
        detail = (f"{VERB[self.name]} submitted to Defender with {len(pairs)} email(s); "
                  "confirmed later from LatestDeliveryLocation")
        return {r["id"]: ActionResult(r["id"], "submitted", detail=detail, link=location, undo=undo)
                for r in reqs}, None


def is_ambiguous(exc: BaseException) -> bool:
    """The service may have processed the call: it answered 5xx or 408, or the answer never came (a
    timeout or a connection lost after the request was sent). Not a 429 (throttled before processing),
    other 4xx (refused), or a connection that was never made (nothing was sent)."""
    if isinstance(exc, APIError):
        status = exc.response_status_code or 0
        return status == 408 or status >= 500
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return False
    return isinstance(exc, (httpx.TimeoutException, httpx.TransportError, TimeoutError))


class _KeepLocation(ResponseHandler):
    """Keeps the final response's Location header; errors are raised exactly as the SDK would."""

    def __init__(self, adapter: Any):
        self.adapter = adapter
        self.location: str | None = None

    async def handle_response_async(self, response: httpx.Response, error_map: Any = None) -> None:
        span = trace.INVALID_SPAN
        await self.adapter.throw_failed_responses(response, error_map, span, span)
        self.location = response.headers.get("location")
