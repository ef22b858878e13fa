"""Validation of the ``POST /api/scan`` body: strict, before anything runs.

Shape first (JSON Schema: unknown keys, wrong JSON types), then meaning (rules exist, the lookback is
a timespan of at most 30 days, each parameter is declared by a selected rule and has that rule's
type). Every error names the field (``rules[1]``, ``params.threshold``). Parameter values are only
type-checked here; they reach KQL through ``detections.params``, which builds the literals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import jsonschema

from detections.catalog import Catalog, Rule
from detections.params import ParamError, coerce_param, iso_timespan, parse_timespan

MAX_LOOKBACK = timedelta(days=30)   # advanced hunting keeps 30 days
MAX_BODY_BYTES = 64 * 1024
_SLUG = r"^[a-z0-9][a-z0-9-]*$"

BODY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "rules": {"type": "array", "minItems": 1, "maxItems": 100, "uniqueItems": True,
                  "items": {"type": "string", "pattern": _SLUG, "maxLength": 100}},
        "lookback": {"type": "string", "minLength": 1, "maxLength": 40},
        "params": {"type": "object", "maxProperties": 50, "propertyNames": {"pattern": r"^[a-z_][a-z0-9_]*$",
                                                                             "maxLength": 64}},
        "dry_run": {"type": "boolean"},
    },
}
_validator = jsonschema.Draft202012Validator(BODY_SCHEMA)

# The JSON type each rule parameter type takes in the body (strict: "3" is not an int here).
_PARAM_JSON: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"},
    "bool": {"type": "boolean"},
    "string": {"type": "string", "maxLength": 1000},
    "string_list": {"type": "array", "maxItems": 1000, "items": {"type": "string", "maxLength": 1000}},
    "timespan": {"type": "string", "maxLength": 40},
}


class BadRequest(ValueError):
    """A 400: ``field`` is where in the body, ``message`` what is wrong."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class ScanRequest:
    rules: list[Rule]
    lookback: timedelta | None = None
    params: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False

    def describe(self) -> dict[str, Any]:
        return {"rules": [r.slug for r in self.rules],
                "lookback": iso_timespan(self.lookback) if self.lookback else None,
                "params": sorted(self.params), "dry_run": self.dry_run}


def _path(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _schema_error(error: jsonschema.ValidationError) -> BadRequest:
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            where = _path(error)
            name = extra[0] if where == "body" else f"{where}.{extra[0]}"
            return BadRequest(name, f"unknown key (allowed: {', '.join(sorted(allowed))})")
    if "propertyNames" in error.schema_path:   # the error's instance is the offending key
        return BadRequest(f"{_path(error)}.{error.instance}", "not a valid parameter name")
    return BadRequest(_path(error), error.message)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object (an empty body is ``{}``: every field is optional)."""
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest("body", f"larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest("body", f"not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(body, dict):
        raise BadRequest("body", "must be a JSON object")
    return body


def validate_scan(body: dict[str, Any], catalog: Catalog, *, enabled: list[Rule]) -> ScanRequest:
    """A ScanRequest, or BadRequest naming the first field at fault. ``enabled`` is what an empty
    ``rules`` means (the rules the tenant config has not disabled)."""
    errors = sorted(_validator.iter_errors(body),
                    key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise _schema_error(errors[0])

    rules: list[Rule] = []
    for i, slug in enumerate(body.get("rules", [])):
        if slug not in catalog:
            raise BadRequest(f"rules[{i}]", f"unknown rule {slug!r} (known: {', '.join(catalog)})")
        if catalog[slug] not in enabled:
            # issue 13: the tenant config's switch holds for a named rule too (400, not a silent drop).
            raise BadRequest(f"rules[{i}]", f"rule {slug!r} is disabled by the tenant config "
                             f"(rules.{slug}.enabled: false)")
        rules.append(catalog[slug])
    if not body.get("rules"):
        rules = list(enabled)
    if not rules:
        raise BadRequest("rules", "no rule is enabled; name the rules to run")

    lookback = None
    if "lookback" in body:
        try:
            lookback = parse_timespan(body["lookback"])
        except ValueError as exc:
            raise BadRequest("lookback", str(exc)) from None
        if lookback > MAX_LOOKBACK:
            raise BadRequest("lookback", f"at most {iso_timespan(MAX_LOOKBACK)} "
                             "(advanced hunting keeps 30 days)")

    params = dict(body.get("params", {}))
    if "window" in params and lookback is not None:
        raise BadRequest("params.window", "give the lookback once: as `lookback` or as params.window")
    for name, value in params.items():
        declaring = [r for r in rules if name in r.parameters]
        if not declaring:
            declared = sorted({n for r in rules for n in r.parameters})
            raise BadRequest(f"params.{name}", f"no selected rule declares this parameter "
                             f"(they declare: {', '.join(declared)})")
        for rule in declaring:
            spec = rule.parameters[name]
            problem = next(jsonschema.Draft202012Validator(_PARAM_JSON[spec.type]).iter_errors(value), None)
            if problem is not None:
                raise BadRequest(f"params.{name}", f"rule {rule.slug} declares it as {spec.type}: "
                                 f"{problem.message}")
            try:
                coerce_param(rule.slug, spec, value, source="the request body")
            except ParamError as exc:
                raise BadRequest(f"params.{name}", exc.message) from None
        if name == "window":
            lookback = parse_timespan(value)
            if lookback > MAX_LOOKBACK:
                raise BadRequest("params.window", f"at most {iso_timespan(MAX_LOOKBACK)}")
    params.pop("window", None)   # carried as the lookback: one place to apply it
    return ScanRequest(rules=rules, lookback=lookback, params=params,
                       dry_run=bool(body.get("dry_run", False)))
