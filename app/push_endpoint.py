"""``POST /api/push/notifications``: where Graph delivers change and lifecycle notifications (issue 15).

Anonymous to the Functions host (Graph cannot send a function key header); every notification must
carry the clientState secret instead (push/intake.py does the checking). The request path is
validation plus one queue output binding holding the whole batch, written by the host after the
function returns: nothing slow, so Graph gets its 2xx well inside its 3 seconds
(https://learn.microsoft.com/graph/change-notifications-delivery-webhooks). If the host cannot write
the queue the invocation fails with a 5xx and Graph retries the notification (for up to 4 hours).

RESPONDER_PUSH off: 404, as if the route did not exist (the handshake fails too, so no subscription can
be created against an app whose push path is off).
"""

from __future__ import annotations

import logging
from typing import Any

import azure.functions as func

from app.http import json_response
from app.runtime import Runtime
from push.intake import BadBody, parse

log = logging.getLogger(__name__)
# The handshake's echo is plain text that no browser may sniff into HTML (the token is caller input).
_TEXT_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
# A forged batch may hold a thousand bad items: a line for each of the first few, a count for the rest.
MAX_LOGGED_REJECTS = 10


async def http_push_notifications(rt: Runtime, req: func.HttpRequest,
                                  msgs: func.Out[Any]) -> func.HttpResponse:
    push = rt.config.push
    if push is None or not push.enabled:
        return json_response(404, {"error": "not found", "message": "the push path is off (RESPONDER_PUSH)"})
    try:
        intake = parse(req.get_body() or b"", req.params, client_state=push.client_state,
                       tenant_id=rt.settings.tenant_id or None, now=rt.clock())
    except BadBody as err:
        # Which field and why; never the body (a forged request's content is the sender's to choose).
        log.warning("push notifications: refused a request (%d): %s", err.status, err)
        error = "payload too large" if err.status == 413 else "bad request"
        return json_response(err.status, {"error": error, "field": err.field, "message": err.message})
    if intake.validation_token is not None:
        log.info("push notifications: validation handshake answered")
        return func.HttpResponse(intake.validation_token, status_code=200, mimetype="text/plain",
                                 charset="utf-8", headers=_TEXT_HEADERS)
    for rejected in intake.rejected[:MAX_LOGGED_REJECTS]:
        log.warning("push notification dropped, nothing queued: %s", rejected.describe())
    if len(intake.rejected) > MAX_LOGGED_REJECTS:
        log.warning("push notifications: %d more dropped in the same request (not listed)",
                    len(intake.rejected) - MAX_LOGGED_REJECTS)
    if intake.messages:
        msgs.set(list(intake.messages))
    kinds = [n["kind"] for n in intake.notifications]
    log.info("push notifications: %d queued (%d change, %d lifecycle), %d dropped, %d duplicate(s)",
             len(intake.messages), kinds.count("change"), kinds.count("lifecycle"), len(intake.rejected),
             intake.duplicates)
    # 202 whatever was dropped: the answer says nothing about which items passed (no clientState oracle),
    # and a 4xx would only make Graph retry a notification that fails the same way again.
    return func.HttpResponse(status_code=202, headers={"Cache-Control": "no-store"})
