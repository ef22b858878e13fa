"""Send a request built by msgraph-sdk's request builders and read the answer as plain JSON.

Why: the SDK's models are expensive to build. Deserializing one ``Message`` costs about 20 ms of CPU
(``Entity.get_field_deserializers`` re-runs hundreds of imports on every call), which made the mailbox
strategy CPU-bound at under 10 moves a second. An action that needs two or three fields reads them
straight from the JSON instead.

What stays the SDK's: the request (built with the request builders' ``to_*_request_information``, so
URL templates, query-parameter names and body serialization are the SDK's own) and the sending (the
request adapter, so the auth provider, base URL and middleware such as the RetryHandler all apply).
Errors are mapped exactly as the SDK's own calls map them (``{"XXX": ODataError}``): a non-2xx answer
raises ``APIError`` with the status, the Graph error code and message, and the response headers
(Retry-After), which ``remediation.actions.errors.describe`` classifies.
"""

from __future__ import annotations

import json
from typing import Any

from kiota_abstractions.request_adapter import RequestAdapter
from kiota_abstractions.request_information import RequestInformation
from kiota_abstractions.serialization import ParsableFactory
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

# The error mapping every generated msgraph-sdk request builder uses.
ERROR_MAPPING: dict[str, type[ParsableFactory]] = {"XXX": ODataError}


class GraphResponseError(Exception):
    """A 2xx answer whose body is not the JSON object we asked for (never expected from Graph)."""


async def send_json(adapter: RequestAdapter, info: RequestInformation) -> dict[str, Any] | None:
    """Send ``info`` through ``adapter``; the JSON object answered, or None when there is no body (204)."""
    body = await adapter.send_primitive_async(info, "bytes", ERROR_MAPPING)
    if not body:
        return None
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise GraphResponseError(f"the response to {info.http_method} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise GraphResponseError(f"the response to {info.http_method} is not a JSON object")
    return data


def string_field(data: dict[str, Any], name: str) -> str | None:
    """``data[name]`` when it is a non-empty string, else None (absent, null, or the wrong type)."""
    value = data.get(name)
    return value if isinstance(value, str) and value else None
