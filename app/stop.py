"""``POST /api/stop`` and ``POST /api/stop/clear``: the emergency stop over HTTP (remediation/stop.py).

Behind the function key, which on-call shares: the switch records ``function-key`` as who flipped it and
any name in the body as ``claimed_by`` (unverified). The signed-in approval page calls ``set_stop`` itself.
"""

from __future__ import annotations

import logging
from typing import Any

import azure.functions as func

from app.http import bad_request, check_query, json_response
from app.runtime import Runtime
from app.scanrequest import BadRequest, parse_body
from remediation.stop import MAX_TEXT, read_stop, set_stop

log = logging.getLogger(__name__)
FUNCTION_KEY_PRINCIPAL = "function-key"
_KEYS = frozenset({"reason", "by"})


def _text(body: dict[str, Any], name: str, limit: int, *, required: bool) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not 0 < len(value.strip()) <= limit:
        raise BadRequest(name, f"{'required: ' if required else ''}a text of 1 to {limit} characters")
    return value.strip()


async def http_stop(rt: Runtime, req: func.HttpRequest, on: bool) -> func.HttpResponse:
    """Turn the stop on (``reason`` required) or clear it; ``by`` is a name the caller claims."""
    try:
        check_query(req)
        body = parse_body(req.get_body())
        unknown = sorted(set(body) - _KEYS)
        if unknown:
            raise BadRequest(unknown[0], "unknown key (allowed: reason, by)")
        reason = _text(body, "reason", MAX_TEXT, required=on)
        claimed = _text(body, "by", 200, required=False)
    except BadRequest as err:
        return bad_request(err)
    state = set_stop(rt.ledger(), on, FUNCTION_KEY_PRINCIPAL, reason, claimed_by=claimed or None)
    rt.stop_switch().forget()   # this instance sees it at once; the others within 10 s
    log.warning("emergency stop turned %s by %s%s", "on" if on else "off", FUNCTION_KEY_PRINCIPAL,
                " (claimed name given)" if claimed else "")
    return json_response(200, {"emergency_stop": state.to_dict()})


def health_field(rt: Runtime) -> dict[str, Any] | None:
    """``emergency_stop`` for /api/health: None when it cannot be read (storage is reported apart)."""
    try:
        state = read_stop(rt.ledger())
    except Exception as exc:
        log.error("health: emergency stop unreadable: %s", type(exc).__name__)
        return None
    # Anonymous endpoint: yes/no and since when only; who and why are for signed-in people (/stop, the
    # CLI's `stop status`), never for anyone who can reach the health URL.
    return {"on": state.on, "at": state.at}
