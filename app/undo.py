"""``POST /api/runs/{id}/undo``: undo everything a run did (remediation/undo_run.py), behind the function key.

Recorded as ``function-key`` (the shared key is all the caller proved) and any name in the body as
``claimed_by``; the summary card goes to the channel through the worker's reporter.
"""

from __future__ import annotations

import logging
import re

import azure.functions as func

from app.http import bad_request, check_query, json_response
from app.runtime import Runtime
from app.scanrequest import BadRequest, parse_body

log = logging.getLogger(__name__)
FUNCTION_KEY_PRINCIPAL = "function-key"
# Scan runs are uuid4 hex; runs numbered by `remediate --queue-file` or other producers are short names.
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


async def http_undo_run(rt: Runtime, req: func.HttpRequest) -> func.HttpResponse:
    run_id = req.route_params.get("id", "")
    try:
        check_query(req)
        if not RUN_ID_RE.match(run_id):
            raise BadRequest("id", "a run id: letters, digits, . _ : - (at most 128)")
        body = parse_body(req.get_body())
        unknown = sorted(set(body) - {"by"})
        if unknown:
            raise BadRequest(unknown[0], "unknown key (allowed: by)")
        claimed = body.get("by")
        if claimed is not None and (not isinstance(claimed, str) or not 0 < len(claimed.strip()) <= 200):
            raise BadRequest("by", "a name of 1 to 200 characters")
    except BadRequest as err:
        return bad_request(err)
    async with rt.worker() as worker:
        result = await worker.undo_run(run_id, FUNCTION_KEY_PRINCIPAL,
                                       claimed_by=claimed.strip() if claimed else None)
    log.info("%s", result.summary())
    if not result.found:
        return json_response(404, {"error": "not found", "message": result.summary()})
    return json_response(200, result.to_dict())
