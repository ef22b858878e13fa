"""Small HTTP helpers shared by the HTTP functions: JSON responses and query-string strictness."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func

from app.scanrequest import BadRequest

# The host accepts the function key as ?code=...; nothing else belongs in a query string here.
ALLOWED_QUERY = frozenset({"code"})


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, ensure_ascii=False, default=str), status_code=status,
                             mimetype="application/json", charset="utf-8",
                             headers={"Cache-Control": "no-store", **(headers or {})})


def bad_request(err: BadRequest) -> func.HttpResponse:
    return json_response(400, {"error": "bad request", "field": err.field, "message": err.message})


def check_query(req: func.HttpRequest) -> None:
    for name in req.params:
        if name not in ALLOWED_QUERY:
            raise BadRequest(f"query.{name}", "unknown query parameter (send options in the JSON body)")
