"""The approval page: ``GET /requests/{id}``, ``GET /runs/{id}`` and their POST forms (docs/approval.md).

Only a person App Service authentication signed in and who is on call gets past ``signed_in``
(app/signin.py). A decision is written to the ledger here (who: UPN and object id, when, from where)
and an approval is enqueued for the worker, which runs it in Azure with the app's managed identity;
nothing here calls Graph.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import parse_qs

import azure.functions as func

from app import pagehtml
from app.runtime import Runtime
from app.signin import PageAuth, Principal, Refused, check_post, csrf_token, signed_in
from remediation.actions.registry import default_registry
from remediation.decisions import Decisions, NotFound, RecordOnly, WorkerError
from remediation.ledger import INVALID, LedgerConflict, Record
from remediation.stop import MAX_TEXT, StopState, read_stop, set_stop
from remediation.undo_run import classify, record_run_undo

log = logging.getLogger(__name__)
REQUEST_ID_RE = re.compile(r"^[0-9a-f]{32}$")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
MAX_FORM = 4096
# No script, no framing, no off-site form posts: a missed escape still could not run anything.
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                      "frame-ancestors 'none'; base-uri 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}


def html(status: int, body: str) -> func.HttpResponse:
    return func.HttpResponse(body, status_code=status, mimetype="text/html", charset="utf-8",
                             headers=dict(HEADERS))


def refused(exc: Refused) -> func.HttpResponse:
    return html(exc.status, pagehtml.message_page("Refused", str(exc)))


def decisions(rt: Runtime) -> Decisions:
    return Decisions(RecordOnly(rt.settings, rt.config.tenant, rt.config.catalog, rt.ledger()))


def view(rt: Runtime, rec: Record) -> dict[str, Any]:
    req = rec.request or {}
    rule = rt.config.catalog.get(rec.rule)
    history = [(f"{state} at", at) for state, at in sorted(rec.state_times.items(), key=lambda kv: kv[1])]
    for key in ("approved_by", "rejected_by", "decided_by_id", "decided_from", "decided_via", "claimed_by",
                "executed_by", "undone_by", "undo_of"):
        if rec.extra.get(key):
            history.append((key.replace("_", " "), rec.extra[key]))
    return {"id": rec.request_id, "rule": rec.rule,
            "rule_name": rule.name if rule else req.get("rule_name", ""),
            "severity": req.get("severity", ""), "action": rec.action, "mode": rec.mode, "state": rec.state,
            "hold_reason": rec.hold_reason, "detail": rec.detail, "run_id": rec.run_id,
            "target": dict(rec.target), "evidence": dict(req.get("evidence") or {}),
            "command": default_registry().manual_command(req) if req else None, "history": history,
            "can_undo": classify(rec, default_registry(), rt.settings.connector_actions) == "undo",
            "by_hand": default_registry().run_by_hand(rec.action, rt.settings.connector_actions)}


def _find(rt: Runtime, request_id: str) -> Record | None:
    if not REQUEST_ID_RE.match(request_id):
        return None
    rec = rt.ledger().get(request_id)
    return None if rec is None or rec.rule == INVALID else rec


def _not_found(what: str) -> func.HttpResponse:
    return html(404, pagehtml.message_page("Not found", f"no {what} in the ledger"))


async def get_request(rt: Runtime, req: func.HttpRequest, auth: PageAuth) -> func.HttpResponse:
    try:
        who = signed_in(req, auth)
    except Refused as exc:
        return refused(exc)
    rec = _find(rt, req.route_params.get("id", ""))
    if rec is None:
        return _not_found("such request")
    token = csrf_token(auth, who, rec.request_id)
    return html(200, pagehtml.request_page(view(rt, rec), who=who.name, token=token, stop=_stop(rt)))


def _form(req: func.HttpRequest) -> dict[str, str]:
    body = req.get_body() or b""
    if len(body) > MAX_FORM:
        raise Refused(400, "form too large")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "the form could not be read") from None
    return {k: v[0] for k, v in fields.items()}


def _who_fields(who: Principal) -> dict[str, str]:
    return {"decided_by_id": who.oid, "decided_from": who.ip, "decided_via": "page"}


async def post_decision(rt: Runtime, req: func.HttpRequest, auth: PageAuth, verb: str,
                        msgs: func.Out[Any]) -> func.HttpResponse:
    """``POST /requests/{id}/approve|reject`` from the page's form."""
    request_id = req.route_params.get("id", "")
    try:
        who = signed_in(req, auth)
        check_post(req, auth, who, request_id, _form(req).get("csrf", ""))
    except Refused as exc:
        return refused(exc)
    if _find(rt, request_id) is None:
        return _not_found("such request")
    back = f"/requests/{request_id}"
    try:
        if verb == "approve":
            rec = decisions(rt).record_approval(request_id, who.name, **_who_fields(who))
            msgs.set([json.dumps(rec.request)])
        elif verb == "undo":
            # The undo is a new request linked to this one; the worker runs it (restore) in Azure.
            undo, undo_req = decisions(rt).record_undo(request_id, who.name, **_who_fields(who))
            msgs.set([json.dumps(undo_req)])
            rec = rt.ledger().get(request_id) or undo
        elif verb == "done":
            # A connector command a person ran by hand (manual mode): recorded, nothing runs.
            await decisions(rt).approve(request_id, who.name, done=True)
            rec = _with_who(rt, request_id, who)
        else:
            rec = decisions(rt).record_rejection(request_id, who.name, **_who_fields(who))
    except NotFound:
        return _not_found("such request")
    except WorkerError as exc:
        return html(409, pagehtml.message_page("Already decided" if exc.state and exc.state != "held"
                                               else "Not possible", str(exc), state=exc.state, link=back))
    log.info("request %s: %s by %s (%s) from %s via the page", request_id, verb, who.name, who.oid, who.ip)
    message = {"approve": "Approved: the app runs it now with its own identity; reload to see the result.",
               "reject": "Rejected: nothing will be done.",
               "undo": "Undo recorded and queued: the app restores it with its own identity; reload to see "
                       "the result.",
               "done": "Marked done: recorded as run by hand by you; the app ran nothing."}[verb]
    return html(200, pagehtml.request_page(view(rt, rec), who=who.name, token=None, message=message))


def _with_who(rt: Runtime, request_id: str, who: Principal) -> Record:
    """Add who/where to a row ``Decisions.approve(done=True)`` recorded (it takes only a name)."""
    rec = rt.ledger().get(request_id)
    assert rec is not None
    try:
        return rt.ledger().update(rec, **_who_fields(who))
    except LedgerConflict:
        log.warning("request %s: could not record who marked it done", request_id)
        return rec


async def get_run(rt: Runtime, req: func.HttpRequest, auth: PageAuth) -> func.HttpResponse:
    try:
        who = signed_in(req, auth)
    except Refused as exc:
        return refused(exc)
    run_id = req.route_params.get("id", "")
    rows = _run_rows(rt, run_id)
    if not rows:
        return _not_found("such run")
    token = csrf_token(auth, who, f"run:{run_id}")
    return html(200, pagehtml.run_page(run_id, rows, who=who.name, token=token, stop=_stop(rt)))


def _run_rows(rt: Runtime, run_id: str) -> list[dict[str, Any]]:
    if not RUN_ID_RE.match(run_id):
        return []
    return [{"id": r.request_id, "rule": r.rule, "action": r.action, "target": r.target, "state": r.state}
            for r in rt.ledger().list(run_id=run_id)]


async def post_run_approve(rt: Runtime, req: func.HttpRequest, auth: PageAuth,
                           msgs: func.Out[Any]) -> func.HttpResponse:
    """``POST /runs/{id}/approve``: every request of the run still held, approved and enqueued."""
    run_id = req.route_params.get("id", "")
    try:
        who = signed_in(req, auth)
        check_post(req, auth, who, f"run:{run_id}", _form(req).get("csrf", ""))
    except Refused as exc:
        return refused(exc)
    rows = _run_rows(rt, run_id)
    if not rows:
        return _not_found("such run")
    d, bodies, problems = decisions(rt), [], []
    for row in rows:
        if row["state"] != "held":
            continue
        try:
            rec = d.record_approval(row["id"], who.name, **_who_fields(who))
            bodies.append(json.dumps(rec.request))
        except WorkerError as exc:
            problems.append(str(exc))
    msgs.set(bodies)
    log.info("run %s: %d request(s) approved by %s (%s) from %s via the page", run_id, len(bodies), who.name,
             who.oid, who.ip)
    message = f"{len(bodies)} request(s) approved and queued." + (
        f" Not approved: {'; '.join(problems)}" if problems else "")
    return html(200, pagehtml.run_page(run_id, _run_rows(rt, run_id), who=who.name, token=None,
                                       message=message))


async def post_run_undo(rt: Runtime, req: func.HttpRequest, auth: PageAuth,
                        msgs: func.Out[Any]) -> func.HttpResponse:
    """``POST /runs/{id}/undo``: every confirmed undoable request of the run gets an undo recorded and
    enqueued (the worker restores them with its own identity; nothing here calls Graph). The same
    classification as the worker's undo-run (remediation/undo_run.py), summarised on the page."""
    run_id = req.route_params.get("id", "")
    try:
        who = signed_in(req, auth)
        check_post(req, auth, who, f"run:{run_id}", _form(req).get("csrf", ""))
    except Refused as exc:
        return refused(exc)
    if not _run_rows(rt, run_id):
        return _not_found("such run")
    result = record_run_undo(decisions(rt), run_id, who.name, rt.settings.connector_actions,
                             **_who_fields(who))
    msgs.set([json.dumps(undo_req) for _, undo_req in result.queued])
    log.info("run %s: %d undo(s) queued by %s (%s) from %s via the page", run_id, len(result.queued),
             who.name, who.oid, who.ip)
    message = result.summary() + "." + (
        f" Not undone: {'; '.join(err for _, err in result.problems)}" if result.problems else "")
    return html(200, pagehtml.run_page(run_id, _run_rows(rt, run_id), who=who.name, token=None,
                                       message=message))


# --- the emergency stop (remediation/stop.py), flipped by a signed-in on-call person ---------------
STOP_SUBJECT = "stop"


def _stop(rt: Runtime) -> StopState | None:
    """The switch for the page's banner; None when unreadable (the page still shows the request)."""
    try:
        return read_stop(rt.ledger())
    except Exception as exc:
        log.error("page: emergency stop unreadable: %s", type(exc).__name__)
        return None


async def get_stop(rt: Runtime, req: func.HttpRequest, auth: PageAuth) -> func.HttpResponse:
    """``GET /stop``: the switch's state and the form to turn it on (reason required) or clear it."""
    try:
        who = signed_in(req, auth)
    except Refused as exc:
        return refused(exc)
    return html(200, pagehtml.stop_page(read_stop(rt.ledger()), who=who.name,
                                        token=csrf_token(auth, who, STOP_SUBJECT)))


async def post_stop(rt: Runtime, req: func.HttpRequest, auth: PageAuth, on: bool) -> func.HttpResponse:
    """``POST /stop`` (on, ``reason`` required) and ``POST /stop/clear`` (off)."""
    try:
        who = signed_in(req, auth)
        form = _form(req)
        check_post(req, auth, who, STOP_SUBJECT, form.get("csrf", ""))
    except Refused as exc:
        return refused(exc)
    reason = form.get("reason", "").strip() if on else ""
    if on and not 0 < len(reason) <= MAX_TEXT:
        return html(400, pagehtml.message_page(
            "Reason required", f"reason: say why the stop is turned on (1 to {MAX_TEXT} characters)",
            link="/stop", link_text="Back to the emergency stop"))
    state = set_stop(rt.ledger(), on, who.name, reason, by_id=who.oid, by_from=who.ip)
    rt.stop_switch().forget()   # this instance sees it at once; the others within 10 s
    log.warning("emergency stop turned %s by %s (%s) from %s via the page", "on" if on else "off", who.name,
                who.oid, who.ip)
    message = ("Emergency stop is ON: every action is held until it is cleared." if on else
               "Emergency stop cleared. Requests held by it stay held: approve them one by one.")
    return html(200, pagehtml.stop_page(state, who=who.name, token=csrf_token(auth, who, STOP_SUBJECT),
                                        message=message))
