"""What each function does. ``function_app.py`` only binds triggers to these coroutines.

Every handler takes the :class:`Runtime` explicitly, so tests call them with their own.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import azure.functions as func

from app import push_endpoint, runs, stop, telemetry, undo
from app.http import bad_request, check_query, json_response
from app.runtime import Runtime
from app.scanrequest import BadRequest, parse_body, validate_scan
from detections.params import ParamError
from detections.scan import scan
from remediation.decisions import NotFound, WorkerError
from remediation.worker import TransientFailure

log = logging.getLogger(__name__)
REQUEST_ID_RE = re.compile(r"^[0-9a-f]{32}$")
# App Service authentication (Easy Auth) sets this header and strips any a client sends.
PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL-NAME"


def _rule_names(rt: Runtime) -> dict[str, tuple[str, str]]:
    return {slug: (r.name, r.severity) for slug, r in rt.config.catalog.items()}


def _tenant_id(rt: Runtime) -> str | None:
    return rt.settings.tenant_id or None


# --- timers --------------------------------------------------------------------------------------

async def on_timer(rt: Runtime, slug: str, timer: func.TimerRequest, msgs: func.Out[Any]) -> dict[str, Any]:
    """One scheduled run of one rule: scan its window, record and queue what is new, tell on-call."""
    if timer.past_due:
        # Nothing to catch up: the window overlaps the missed run's, so this run covers it.
        log.warning("rule %s: timer is past due; running now over the usual window", slug)
    rule = rt.config.catalog[slug]
    now = rt.clock()
    backend = await rt.backend()
    (run,) = await scan([rule], backend, tenant=rt.config.tenant, overrides={}, now=now,
                        dry_run=rt.settings.dry_run)
    queued = runs.register_run(rt.ledger(), run, now)
    msgs.set(queued.messages)
    card = await runs.run_card(rt.ledger(), rt.notifier, run, queued, now=now, backend=backend.name,
                               tenant_id=_tenant_id(rt), dry_run=rt.settings.dry_run,
                               connector_actions=rt.settings.connector_actions)
    telemetry.scan_run(run, queued, backend.name, started=now, finished=rt.clock(), trigger="timer")
    summary = _summary(run, queued)
    log.info("rule %s run %s: %d row(s), %d new, %d requeued, %d settled, %d in flight%s%s", slug, run.run_id,
             summary["rows"], len(queued.new), len(queued.requeued), queued.settled, queued.in_flight,
             f"; error: {run.error}" if run.error else "", f"; {card} card sent" if card else "")
    return summary


def _summary(run: Any, queued: runs.Queued | None) -> dict[str, Any]:
    out: dict[str, Any] = {"rule": run.rule.slug, "rows": len(run.rows), "requests": len(run.requests),
                           "queued": 0, "already_handled": 0, "in_flight": 0, "partial": run.partial,
                           "error": run.error, "problems": list(run.problems)}
    if run.partial_reason:
        out["partial_reason"] = run.partial_reason
    if queued is not None:
        out.update(queued=len(queued.new) + len(queued.requeued), already_handled=queued.settled,
                   in_flight=queued.in_flight)
    return out


async def on_digest(rt: Runtime, timer: func.TimerRequest) -> bool:
    """The daily digest card (app/digest.py)."""
    from app.digest import send_digest

    sent = await send_digest(rt.ledger(), rt.notifier, rt.config.catalog, now=rt.clock(),
                             tenant_id=_tenant_id(rt))
    log.info("daily digest %s", "sent" if sent else "not sent (already sent today, or undeliverable)")
    await expire_held(rt)
    return sent


async def expire_held(rt: Runtime) -> int:
    """Held requests past RESPONDER_HELD_EXPIRY become expired, one card for all (app/expiry.py). On both
    timers, at most once an hour; a storage error is logged and left to the next sweep."""
    from app.expiry import sweep_and_announce

    try:
        return await sweep_and_announce(rt.ledger(), rt.notifier, now=rt.clock(),
                                        ttl=rt.settings.held_expiry, tenant_id=_tenant_id(rt))
    except Exception:   # never fail the timer's own work (digest, verify) over the sweep
        log.exception("held expiry sweep failed; the next sweep tries again")
        return 0


async def on_verify(rt: Runtime, timer: func.TimerRequest) -> dict[str, int]:
    """Confirm ``submitted`` Defender email remediations from EmailEvents (``Worker.verify``).

    Defender applies them asynchronously and has no status API, so without this they would stay
    ``submitted`` for ever and a remediation that never took effect would go unnoticed. Nothing
    submitted: no query (no hunting quota spent). A backend error is logged and left to the next run:
    nothing is lost, the rows stay ``submitted`` and the 2-hour grace is measured from submission.
    """
    from detections.backends.base import BackendError

    await expire_held(rt)
    backend = await rt.backend()
    async with rt.worker() as worker:
        try:
            outcomes = await worker.verify(backend)
        except BackendError as exc:
            log.warning("verify: the %s backend failed (%s); the next run tries again", backend.name, exc)
            return {"checked": 0, "confirmed": 0, "not_applied": 0, "waiting": 0}
    telemetry.outcomes(None, [o for o in outcomes if o.state != "submitted"], now=rt.clock())
    counts = {"checked": len(outcomes),
              "confirmed": sum(o.state == "confirmed" for o in outcomes),
              "not_applied": sum(o.state == "not_applied" for o in outcomes),
              "waiting": sum(o.state == "submitted" for o in outcomes)}
    log.info("verify: %(checked)d submitted request(s): %(confirmed)d confirmed, %(not_applied)d not "
             "applied, %(waiting)d still waiting", counts)
    return counts


async def on_push_subscriptions(rt: Runtime, timer: func.TimerRequest) -> None:
    """The push path's subscriptions: reconcile + renew (app/push_subscriptions.py); nothing while off."""
    from app.push_subscriptions import on_timer

    # The settings validated at start-up (app/bootstrap.py), as the endpoint and the push worker use.
    await on_timer(rt, timer, push=rt.config.push)


# --- queue ---------------------------------------------------------------------------------------

def _dequeue_count(msg: func.QueueMessage) -> int:
    return int(msg.dequeue_count or 1)


async def on_message(rt: Runtime, msg: func.QueueMessage) -> list[dict[str, Any]]:
    """One remediation request. A transient failure is raised so the host retries the message (and
    moves it to the poison queue after maxDequeueCount); an invalid message is recorded failed."""
    body = msg.get_body()
    async with rt.worker() as worker:
        try:
            outcomes = await worker.process_message(body, _dequeue_count(msg))
        except TransientFailure as exc:
            log.warning("message %s (delivery %d) will be retried: %s", msg.id, _dequeue_count(msg), exc)
            raise
    telemetry.outcomes(body, outcomes, now=rt.clock())
    await runs.outcome_card(rt.ledger(), rt.notifier, body, backend=rt.settings.backend,
                            tenant_id=_tenant_id(rt), rule_names=_rule_names(rt),
                            api_base=rt.config.api_base, connector_actions=rt.settings.connector_actions)
    return [o.to_dict() for o in outcomes]


async def on_poison(rt: Runtime, msg: func.QueueMessage) -> dict[str, Any]:
    """A message the host gave up on: recorded failed in the ledger, and on-call gets a card. A request
    another delivery is still executing (live claim) raises TransientFailure: the host retries the poison
    message after its visibility timeout, at most maxDequeueCount times (host.json)."""
    body = msg.get_body()
    async with rt.worker() as worker:
        try:
            outcome = await worker.record_poison(body, _dequeue_count(msg))
        except TransientFailure as exc:
            log.warning("poison message %s (delivery %d) will be retried: %s", msg.id,
                        _dequeue_count(msg), exc)
            raise
    telemetry.outcomes(body, [outcome], event="poison", now=rt.clock())
    log.error("poison message %s recorded as %s (request %s)", msg.id, outcome.state, outcome.request_id)
    await runs.outcome_card(rt.ledger(), rt.notifier, body, backend=rt.settings.backend,
                            tenant_id=_tenant_id(rt), rule_names=_rule_names(rt),
                            api_base=rt.config.api_base, connector_actions=rt.settings.connector_actions)
    return outcome.to_dict()


async def on_push_message(rt: Runtime, msg: func.QueueMessage, msgs: func.Out[Any],
                          poison: func.Out[Any]) -> dict[str, Any]:
    """One queued push notification (app/push_worker.py)."""
    from app import push_worker

    return await push_worker.on_push_message(rt, msg, msgs, poison)


async def on_push_poison(rt: Runtime, msg: func.QueueMessage) -> dict[str, Any]:
    """A push notification the host gave up on (app/push_worker.py)."""
    from app import push_worker

    return await push_worker.on_push_poison(rt, msg)


# --- HTTP ----------------------------------------------------------------------------------------

async def http_scan(rt: Runtime, req: func.HttpRequest, msgs: func.Out[Any]) -> func.HttpResponse:
    """``POST /api/scan``: validate everything, take a quota slot, scan now, queue, summarise."""
    try:
        check_query(req)
        enabled = [r for r in rt.config.catalog.values() if rt.config.tenant.for_rule(r.slug).enabled]
        request = validate_scan(parse_body(req.get_body()), rt.config.catalog, enabled=enabled)
    except BadRequest as err:
        return bad_request(err)
    retry_after = rt.quota().acquire()
    if retry_after is not None:
        rate = rt.settings.scan_rate_per_hour
        return json_response(429, {"error": "too many re-scans",
                                   "message": f"at most {rate} on-demand scans per hour "
                                              "(RESPONDER_SCAN_RATE_PER_HOUR) to protect the hunting quota",
                                   "retry_after": int(retry_after)},
                             headers={"Retry-After": str(int(retry_after))})
    now = rt.clock()
    backend = await rt.backend()
    try:
        results = await scan(request.rules, backend, tenant=rt.config.tenant, overrides=request.params,
                             now=now, lookback=request.lookback,
                             dry_run=request.dry_run or rt.settings.dry_run)
    except ParamError as exc:   # validated above; kept so a gap in validation is still a 400
        return bad_request(BadRequest(f"params.{exc.param}" if exc.param else "params", str(exc)))
    summaries, messages = [], []
    for run in results:
        if request.dry_run:
            # Nothing recorded or queued: a dry-run request in the ledger would settle (as skipped)
            # the very ids a real run must act on later.
            summary = _summary(run, None)
            summary["would_queue"] = [{"id": r["id"], "action": r["action"], "target": r["target"]}
                                      for r in run.requests]
        else:
            queued = runs.register_run(rt.ledger(), run, now)
            messages += queued.messages
            await runs.run_card(rt.ledger(), rt.notifier, run, queued, now=now, backend=backend.name,
                                tenant_id=_tenant_id(rt), dry_run=rt.settings.dry_run,
                                connector_actions=rt.settings.connector_actions)
            summary = _summary(run, queued)
            telemetry.scan_run(run, queued, backend.name, started=now, finished=rt.clock(), trigger="http")
        summaries.append(summary)
    msgs.set(messages)
    log.info("on-demand scan %s: %s", results[0].run_id if results else "-",
             ", ".join(f"{s['rule']}={s['queued']}" for s in summaries))
    return json_response(200, {"run_id": results[0].run_id if results else None, "dry_run": request.dry_run,
                               **{k: v for k, v in request.describe().items() if k in ("lookback",)},
                               "queued": sum(s["queued"] for s in summaries), "rules": summaries})


async def http_health(rt: Runtime, req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/health``: counts and yes/no answers only (anonymous callers may read it)."""
    storage = "reachable"
    try:
        rt.probe_storage()
    except Exception as exc:
        log.error("health: storage unreachable: %s", type(exc).__name__)
        storage = "unreachable"
    ok = storage == "reachable"
    problems = list(rt.config.problems)
    # notifications: a yes/no only (never the webhook URL, which is a secret); false means on-call
    # hears nothing from this app, which an anonymous health probe is the cheapest way to notice.
    # problems (e.g. an unresolved Key Vault reference) answer 503 too, so a probe alerts someone.
    body: dict[str, Any] = {
        "status": "unhealthy" if not ok else "degraded" if problems else "ok",
        "config": "degraded" if problems else "loaded",
        "rules": {"valid": True, "count": len(rt.config.catalog), "scheduled": len(rt.config.timers)},
        "storage": storage, "notifications": rt.notifications,
        # Whether every action is held (remediation/stop.py): shown, but it is a choice, not a fault.
        "emergency_stop": stop.health_field(rt) if ok else None}
    if problems:
        body["problems"] = problems
    return json_response(200 if ok and not problems else 503, body)


async def http_stop(rt: Runtime, req: func.HttpRequest, on: bool) -> func.HttpResponse:
    """``POST /api/stop`` (on) and ``POST /api/stop/clear`` (off): app/stop.py."""
    return await stop.http_stop(rt, req, on)


async def http_undo_run(rt: Runtime, req: func.HttpRequest) -> func.HttpResponse:
    """``POST /api/runs/{id}/undo``: app/undo.py."""
    return await undo.http_undo_run(rt, req)


async def http_push_notifications(rt: Runtime, req: func.HttpRequest,
                                  msgs: func.Out[Any]) -> func.HttpResponse:
    """``POST /api/push/notifications``: Graph's change and lifecycle notifications (app/push_endpoint.py)."""
    return await push_endpoint.http_push_notifications(rt, req, msgs)


_DECIDE_KEYS = frozenset({"by", "done"})
# Who decided when App Service authentication is off: the caller proved only that it holds the function
# key, which on-call shares, so that is all the audit trail can say.
FUNCTION_KEY_PRINCIPAL = "function-key"


async def http_decide(rt: Runtime, req: func.HttpRequest, verb: str) -> func.HttpResponse:
    """``POST /api/requests/{id}/approve|reject``."""
    request_id = req.route_params.get("id", "")
    try:
        check_query(req)
        if not REQUEST_ID_RE.match(request_id):
            raise BadRequest("id", "a request id is 32 lower-case hex characters")
        body = parse_body(req.get_body())
        unknown = sorted(set(body) - _DECIDE_KEYS)
        if unknown:
            raise BadRequest(unknown[0], "unknown key (allowed: by, done)")
        by_body = body.get("by")
        if by_body is not None and (not isinstance(by_body, str) or not 0 < len(by_body.strip()) <= 200):
            raise BadRequest("by", "a name of 1 to 200 characters")
        done = body.get("done", False)
        if not isinstance(done, bool):
            raise BadRequest("done", "true or false")
        if done and verb != "approve":
            raise BadRequest("done", "only approve takes done (it records that you ran the command by hand)")
    except BadRequest as err:
        return bad_request(err)
    # `by` is only ever who authenticated: here, the function key. /api/* is excluded from App Service
    # authentication (infra/app/function.bicep), so Easy Auth neither verifies nor strips a principal
    # header on this route: a name in it, like one in the body, is only what the caller claims
    # (`claimed_by`). People decide on the signed-in approval page (app/pages.py).
    principal = (req.headers.get(PRINCIPAL_HEADER) or "").strip()[:200]
    by = FUNCTION_KEY_PRINCIPAL
    claimed = by_body.strip() if isinstance(by_body, str) else (principal or None)
    async with rt.worker() as worker:
        try:
            if verb == "approve":
                outcome = await worker.approve(request_id, by, claimed_by=claimed, done=done)
            else:
                outcome = await worker.reject(request_id, by, claimed_by=claimed)
        except NotFound as exc:
            return json_response(404, {"error": "not found", "message": str(exc)})
        except WorkerError as exc:
            # The request's state when known (e.g. "expired"), so a client can tell why without parsing.
            state = {"state": exc.state} if exc.state else {}
            return json_response(409, {"error": "conflict", "message": str(exc), **state})
    telemetry.outcomes(None, [outcome], now=rt.clock())
    log.info("request %s: %s by %s%s; now %s", request_id, verb, by,
             f" (claims to be {claimed})" if claimed else "", outcome.state)
    return json_response(200, {"request_id": request_id, "state": outcome.state,
                               "outcome": outcome.to_dict()})
