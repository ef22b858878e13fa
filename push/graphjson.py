"""Graph answers on the push path: ``send_json`` (core/graph_json.py, shared with remediation) plus the
status, reason and id checks the subscription code needs.
"""

from __future__ import annotations

import re

from kiota_abstractions.api_error import APIError

from core.graph_json import ERROR_MAPPING, GraphResponseError, send_json

__all__ = ["ERROR_MAPPING", "GUID", "GraphResponseError", "reason", "send_json", "status_of"]

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a Graph error (None for anything that is not an answer from Graph)."""
    return exc.response_status_code if isinstance(exc, APIError) else None


def reason(exc: BaseException) -> str:
    """A short, loggable reason: ``HTTP 403 Forbidden: message`` or the exception's type and text.
    Graph error messages name resources, never secrets; the request body (clientState) is never in it."""
    if isinstance(exc, APIError):
        err = getattr(exc, "error", None)
        code = getattr(err, "code", None)
        message = getattr(err, "message", None) or exc.message or type(exc).__name__
        return f"HTTP {exc.response_status_code}" + (f" {code}" if code else "") + f": {message}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]
