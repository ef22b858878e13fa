"""Issue 13: every target field is bounded in size and character set, and hostile JSON is a clear
RequestInvalid, never a RecursionError."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from core.request import MAX_DEPTH, RequestInvalid, make_request, parse_message, validate_request

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def email(**target: Any) -> dict[str, Any]:
    base = {"network_message_id": "8d2f4c0e-6a1b-4c3d-9e8f-0a1b2c3d4e5f", "recipient": "support@contoso.com"}
    return make_request(rule="r", action="move_to_junk", mode="auto", target={**base, **target},
                        evidence={}, detected_at=T0)


BAD_TARGETS = [
    ("network_message_id", "x" * 60_000),
    ("network_message_id", "nm 1"),
    ("recipient", "a" * 250 + "@contoso.com"),       # 262 > 254 (RFC 5321)
    ("recipient", "support@contoso.com\r\nBcc: x@evil.test"),
    ("internet_message_id", "<" + "x" * 1000 + "@contoso.com>"),
    ("internet_message_id", "<a\nb@contoso.com>"),
    ("sender", "x" * 2000),                           # extra fields are bounded too
    ("sender", "bad@gmail.com\n"),
]


@pytest.mark.parametrize(("field", "value"), BAD_TARGETS, ids=[f"{f}-{len(v)}" for f, v in BAD_TARGETS])
def test_oversized_or_control_character_target_fields_are_refused_naming_the_field(field: str,
                                                                                   value: str) -> None:
    with pytest.raises(RequestInvalid, match=f"target/{field}"):
        email(**{field: value})


def test_connector_and_user_bounds() -> None:
    def req(action: str, target: dict[str, str]) -> dict[str, Any]:
        return make_request(rule="r", action=action, mode="auto", target=target, evidence={}, detected_at=T0)
    assert req("disable_connector", {"connector": "Relay 1 (partner)"})["target"]["connector"]
    with pytest.raises(RequestInvalid, match="target/connector"):
        req("disable_connector", {"connector": "c" * 65})          # Exchange names: cn, at most 64
    with pytest.raises(RequestInvalid, match="target/user"):
        req("revoke_sessions", {"user": "u" * 255})
    with pytest.raises(RequestInvalid, match="target"):
        req("revoke_sessions", {"user": "mallory@contoso.com", "Bad Key\n": "x"})


def test_a_valid_target_at_the_bounds_still_passes() -> None:
    local = "a" * 64
    address = local + "@" + "d" * (254 - 65 - 4) + ".com"
    assert len(address) == 254
    assert email(recipient=address)["target"]["recipient"] == address


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


def test_deeply_nested_json_is_request_invalid_not_recursion_error() -> None:
    for body in ("[" * 200_000 + "]" * 200_000, '{"a":' * 5000 + "1" + "}" * 5000):
        with pytest.raises(RequestInvalid, match="nested deeper"):
            parse_message(body)
    req = email()
    req["evidence"] = {"x": _nested(5000)}
    with pytest.raises(RequestInvalid, match="evidence/x"):
        validate_request(req)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    req = email()
    req["evidence"] = {"Subject": "[" * (MAX_DEPTH * 4), "dyn": _nested(MAX_DEPTH - 3)}
    assert parse_message(json.dumps(req))["id"] == req["id"]
