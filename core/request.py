"""The remediation-request/1 contract: the queue message, and what ``scan --json`` prints."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jsonschema

SCHEMA_VERSION = "remediation-request/1"
# The actions this contract knows. The actions themselves are declared in remediation/actions/ (the
# registry); this module is below them (detections/ builds requests with it and may not import
# remediation), so it keeps the contract's own table and tests/remediation/test_registry.py checks that it
# equals the registry's names, families and target fields.
ACTIONS = (
    "move_to_junk", "move_to_inbox", "soft_delete", "move_to_deleted_items", "disable_connector",
    "revoke_sessions", "disable_user", "confirm_compromised", "notify",
    # The undos of disable_connector and disable_user (a rule never declares them: undo runs them).
    "enable_connector", "enable_user",
)
# soft_delete has Defender's meaning (the message goes to Recoverable Items, out of the user's sight);
# move_to_deleted_items puts it in Deleted Items, where the user still sees it.
EMAIL_ACTIONS = ("move_to_junk", "move_to_inbox", "soft_delete", "move_to_deleted_items")
ACCOUNT_ACTIONS = ("revoke_sessions", "disable_user", "confirm_compromised", "enable_user")
MODES = ("auto", "approval", "dry_run")
# Which path found a request (issue 15): a scan of the hunting tables, or the push worker (Graph change
# notifications). Optional: requests made before it existed, and undo requests, carry none.
SOURCES = ("scheduled", "push")

# Which target fields each action needs. Email targets may also carry internet_message_id.
TARGET_FIELDS: dict[str, tuple[str, ...]] = {
    **{a: ("network_message_id", "recipient") for a in EMAIL_ACTIONS},
    "disable_connector": ("connector",),
    "enable_connector": ("connector",),
    **{a: ("user",) for a in ACCOUNT_ACTIONS},
    "notify": (),
}
# Target fields a rule may map beyond the required ones (detections/catalog.py refuses any other).
OPTIONAL_TARGET_FIELDS: dict[str, tuple[str, ...]] = {
    **{a: ("internet_message_id", "recipient_object_id") for a in EMAIL_ACTIONS},
    "disable_connector": ("connector_type",),
    "enable_connector": ("connector_type",),
}

_nonempty = {"type": "string", "minLength": 1}
# Bounds on every target field (issue 13): a target is what an action is sent, so it is checked for
# size and character set before it is queued or acted on (an unbounded value once made a 263 KB queue
# message; Azure Storage queue messages are at most 64 KiB:
# https://learn.microsoft.com/rest/api/storageservices/put-message). No control characters, no
# whitespace in identifiers.
# "not pattern" rather than an anchored pattern: Python's ``$`` also matches before a final newline.
_CONTROL = r"[\x00-\x1f\x7f-\x9f\u2028\u2029]"
_CONTROL_OR_SPACE = r"[\x00-\x20\x7f-\x9f\u2028\u2029]"


def _bounded(max_length: int, forbidden: str = _CONTROL) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_length, "not": {"pattern": forbidden}}


# An address (and a UPN, which has the same form) is at most 254 characters: RFC 5321 4.5.3.1.3 limits
# the path to 256 octets including the angle brackets (RFC 3696 errata 1690).
ADDRESS_MAX = 254
# EmailEvents.NetworkMessageId is a GUID (36); 128 leaves room without admitting a blob.
NETWORK_MESSAGE_ID_MAX = 128
# A Message-ID header: RFC 5322 2.1.1 limits a line to 998 characters.
INTERNET_MESSAGE_ID_MAX = 998
# An Exchange connector's Name is its directory object's cn, whose schema range is 1..64
# (https://learn.microsoft.com/windows/win32/adschema/a-cn: Range-Upper 64).
CONNECTOR_NAME_MAX = 64
# Any other string a rule maps into a target (extra fields): bounded too.
EXTRA_FIELD_MAX = 1024
# Nesting deeper than this is refused before decoding (a request is a flat object; evidence holds rows'
# columns, where dynamic values nest a few levels): hostile depth is a clear invalid message, never a
# RecursionError.
MAX_DEPTH = 32
TARGET_FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "network_message_id": _bounded(NETWORK_MESSAGE_ID_MAX, _CONTROL_OR_SPACE),
    "recipient": _bounded(ADDRESS_MAX, _CONTROL_OR_SPACE),
    # Spaces allowed: RFC 5322's msg-id has none, but mail in the wild does, and refusing it would leave
    # a real message unremediated; control characters are refused.
    "internet_message_id": _bounded(INTERNET_MESSAGE_ID_MAX),
    "connector": _bounded(CONNECTOR_NAME_MAX),
    "user": _bounded(ADDRESS_MAX, _CONTROL_OR_SPACE),
}
OBJECT_ID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def request_schema(target_fields: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    """The JSON schema for requests whose actions (and required target fields) are ``target_fields``."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://xdr-responder/schemas/remediation-request-1.json",
        "type": "object",
        "required": ["schema", "id", "rule", "action", "mode", "target", "evidence", "detected_at"],
        "properties": {
            "schema": {"const": SCHEMA_VERSION},
            "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "rule": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$"},
            "action": {"enum": list(target_fields)},
            "mode": {"enum": list(MODES)},
            "target": {
                "type": "object",
                "properties": {
                    "network_message_id": TARGET_FIELD_SCHEMAS["network_message_id"],
                    "recipient": TARGET_FIELD_SCHEMAS["recipient"],
                    # The recipient mailbox's Entra object id (EmailEvents.RecipientObjectId): how the mailbox
                    # strategy addresses the mailbox (/users/{id}); additive, ``recipient`` stays the address.
                    "recipient_object_id": {"type": "string", "pattern": OBJECT_ID_PATTERN},
                    "internet_message_id": TARGET_FIELD_SCHEMAS["internet_message_id"],
                    "connector": TARGET_FIELD_SCHEMAS["connector"],
                    "connector_type": {"enum": ["inbound", "outbound"]},
                    "user": TARGET_FIELD_SCHEMAS["user"],
                },
                "propertyNames": {"pattern": "^[a-z][a-z0-9_]{0,63}$"},
                "additionalProperties": {"type": ["string", "null"], "maxLength": EXTRA_FIELD_MAX,
                                         "not": {"type": "string", "pattern": _CONTROL}},
            },
            "evidence": {"type": "object"},
            "detected_at": {"type": "string", "format": "date-time",
                            "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$"},
            # Added fields (allowed by the contract): which scan run produced it, its place in that run
            # (the per-run target cap is enforced on it) and the rule's severity and name for cards.
            "run": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "index": {"type": "integer", "minimum": 0},
                               "total": {"type": "integer", "minimum": 0}},
            },
            "severity": {"type": "string"},
            "rule_name": {"type": "string"},
            "source": {"enum": list(SOURCES)},
        },
        "allOf": [
            {"if": {"properties": {"action": {"const": a}}},
             "then": {"properties": {"target": {"required": list(fields)}}}}
            for a, fields in target_fields.items() if fields
        ],
    }


REQUEST_SCHEMA: dict[str, Any] = request_schema(TARGET_FIELDS)


class RequestInvalid(ValueError):
    """A message that is not a valid remediation-request/1; the message says which field."""


class Contract:
    """Validation of requests for one table of actions (this module's, or the action registry's)."""

    def __init__(self, target_fields: Mapping[str, tuple[str, ...]]) -> None:
        self.target_fields = dict(target_fields)
        self.schema = request_schema(self.target_fields)
        self._validator = jsonschema.Draft202012Validator(self.schema,
                                                          format_checker=jsonschema.FormatChecker())

    def validate(self, obj: Any) -> dict[str, Any]:
        """Return ``obj`` if it is a valid request, else raise RequestInvalid naming the field."""
        where = _too_deep(obj)
        if where is not None:
            raise RequestInvalid(f"{where}: nested deeper than {MAX_DEPTH} levels")
        try:
            errors = sorted(self._validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        except RecursionError:   # a backstop: _too_deep already refuses what could get here
            raise RequestInvalid("(message): too deeply nested to validate") from None
        if errors:
            e = errors[0]
            where = "/".join(str(p) for p in e.absolute_path) or "(message)"
            raise RequestInvalid(f"{where}: {_message(e)}")
        if obj["id"] != request_id(obj["rule"], obj["action"], obj["target"], self.target_fields):
            raise RequestInvalid("id: does not match rule, action and target (tampered or from another "
                                 "version)")
        return obj

    def parse(self, body: str | bytes) -> dict[str, Any]:
        """Decode and validate one queue message body (JSON text)."""
        obj = loads_bounded(body)
        return self.validate(obj)


def _message(e: jsonschema.ValidationError) -> str:
    """The error without echoing a long or hostile value (it goes to the ledger, cards and logs)."""
    if e.validator == "maxLength":
        return f"longer than {e.validator_value} characters ({len(e.instance)})"
    if e.validator == "not":
        return "contains a control character or whitespace where none is allowed"
    if e.validator == "propertyNames":
        return "field names must be lower-case letters, digits and _ (at most 64)"
    return e.message if len(e.message) <= 300 else e.message[:300] + "..."


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')   # JSON string literals: brackets inside them do not nest
_BRACKETS = re.compile(r"[\[\]{}]")


def loads_bounded(body: str | bytes) -> Any:
    """``json.loads`` that refuses, as RequestInvalid, text nested deeper than MAX_DEPTH (checked by a
    linear scan before decoding, so a hostile body never reaches the recursive decoder)."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise RequestInvalid(f"(message): not JSON: {exc}") from None
    if text.count("[") + text.count("{") > MAX_DEPTH:   # fast path: most messages nest far less
        depth = 0
        for bracket in _BRACKETS.findall(_STRINGS.sub('""', text)):
            depth += 1 if bracket in "[{" else -1
            if depth > MAX_DEPTH:
                raise RequestInvalid(f"(message): nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RequestInvalid(f"(message): not JSON: {exc}") from None


def _too_deep(obj: Any) -> str | None:
    """The path of the first value nested deeper than MAX_DEPTH in ``obj``, or None (iterative)."""
    stack: list[tuple[Any, int, str]] = [(obj, 0, "")]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict):
            children = [(v, f"{path}/{k}") for k, v in value.items()]
        elif isinstance(value, list):
            children = [(v, f"{path}/{i}") for i, v in enumerate(value)]
        else:
            continue
        if depth >= MAX_DEPTH:
            return path.lstrip("/") or "(message)"
        stack.extend((v, depth + 1, p) for v, p in children)
    return None


def request_id(rule: str, action: str, target: Mapping[str, Any],
               target_fields: Mapping[str, tuple[str, ...]] = TARGET_FIELDS) -> str:
    """Deterministic dedup key: the same rule, action and target always give the same id.

    Only the identifying target fields count (case-folded), so evidence or extra fields that vary
    between overlapping scans never change the id.
    """
    keys = target_fields.get(action, ()) or tuple(sorted(target))
    ident = {k: str(target.get(k, "")).strip().lower() for k in keys}
    blob = json.dumps([rule, action, ident], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def utc_iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: times in requests must be UTC-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_request(*, rule: str, action: str, mode: str, target: Mapping[str, Any],
                 evidence: Mapping[str, Any], detected_at: datetime, **extra: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "id": request_id(rule, action, target),
        "rule": rule,
        "action": action,
        "mode": mode,
        "target": {k: v for k, v in target.items() if v not in (None, "")},
        "evidence": dict(evidence),
        "detected_at": utc_iso(detected_at),
        **extra,
    }
    validate_request(req)
    return req


CONTRACT = Contract(TARGET_FIELDS)


def validate_request(obj: Any) -> dict[str, Any]:
    """Return ``obj`` if it is a valid request, else raise RequestInvalid naming the field."""
    return CONTRACT.validate(obj)


def parse_message(body: str | bytes) -> dict[str, Any]:
    """Decode and validate one queue message body (JSON text)."""
    return CONTRACT.parse(body)
