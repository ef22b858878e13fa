"""Send a request built by msgraph-sdk's request builders and read the answer as plain JSON (push path).

The same approach as remediation/actions/graph_json.py (which push may not import: push -> detections,
core): the SDK builds the request (URL templates, query names, body serialization) and sends it through
its request adapter (auth, base URL, RetryHandler); the answer is read as JSON for the few fields we use,
and a non-2xx answer raises the SDK's own ``APIError`` (``{"XXX": ODataError}``, as every generated
builder maps errors).
"""

from __future__ import annotations

import json
import re
from typing import Any

from kiota_abstractions.api_error import APIError
from kiota_abstractions.request_adapter import RequestAdapter
from kiota_abstractions.request_information import RequestInformation
from kiota_abstractions.serialization import ParsableFactory
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

ERROR_MAPPING: dict[str, type[ParsableFactory]] = {"XXX": ODataError}
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class GraphResponseError(Exception):
    """A 2xx answer that is not what Graph documents (not JSON, or a field missing or malformed)."""


async def send_json(adapter: RequestAdapter, info: RequestInformation) -> dict[str, Any] | None:
    """Send ``info``; the JSON object answered, or None when there is no body (204)."""
    body = await adapter.send_primitive_async(info, "bytes", ERROR_MAPPING)
    if not body:
        return None
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GraphResponseError(f"the response to {info.http_method} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise GraphResponseError(f"the response to {info.http_method} is not a JSON object")
    return data


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
