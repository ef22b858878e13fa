"""Rule parameters: typed values, where they come from, and how they reach KQL as `let` statements.

A value only ever reaches the query as a KQL literal built here: strings are double-quoted with every
character that could end the literal escaped, lists become ``dynamic([...])`` of such literals, ints
and timespans are rendered from Python numbers. So no value (from a rule file, the tenant config,
``--param`` or an HTTP body) can change the query's structure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from core.tenant import TenantConfig

if TYPE_CHECKING:  # catalog imports this module (rule loading coerces parameter values)
    from detections.catalog import ParamSpec, Rule

PARAM_TYPES = ("int", "bool", "string", "string_list", "timespan")


class ParamError(ValueError):
    """A parameter value is missing, unknown or of the wrong type; the message names rule and parameter."""

    def __init__(self, rule: str | None, param: str | None, message: str):
        self.rule = rule
        self.param = param
        self.message = message
        parts = (f"rule {rule}:" if rule else "", f"parameter {param}:" if param else "")
        where = " ".join(p for p in parts if p)
        super().__init__(f"{where} {message}".strip())


# --- timespans -------------------------------------------------------------------------------------

_KQL_UNITS = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1),
              "s": timedelta(seconds=1), "ms": timedelta(milliseconds=1)}
_KQL_SPAN = re.compile(r"^(\d{1,9})(d|h|ms|m|s)$")
_ISO_SPAN = re.compile(r"^P(?:(\d{1,9})D)?"
                       r"(?:T(?:(\d{1,9})H)?(?:(\d{1,9})M)?(?:(\d{1,9})(?:\.(\d{1,3}))?S)?)?$")


def parse_timespan(value: Any) -> timedelta:
    """A positive timespan, KQL style (``30m``, ``1h``, ``7d``, ``10s``) or ISO 8601 (``PT2H``).

    Whole seconds only: a rule's ``window`` is sent to the backends as the query timespan, and Graph's
    ``Timespan`` (detections/backends/defender.py ``iso_duration``) takes whole seconds; refusing
    ``1500ms`` here turns it into a clear parameter error (CLI exit 2) instead of a failed run. Every
    accepted value also has an exact KQL literal.
    """
    if isinstance(value, timedelta):
        span = value
    elif isinstance(value, str):
        text = value.strip()
        m = _KQL_SPAN.match(text)
        if m:
            span = int(m.group(1)) * _KQL_UNITS[m.group(2)]
        else:
            iso = _ISO_SPAN.match(text.upper())
            if not iso or text.upper() in ("P", "PT") or text.upper().endswith("T"):
                raise ValueError(f"expected a timespan like 30m, 1h, 7d, 10s or PT2H, got {value!r}")
            days, hours, minutes, seconds, frac = iso.groups()
            span = timedelta(days=int(days or 0), hours=int(hours or 0), minutes=int(minutes or 0),
                             seconds=int(seconds or 0), milliseconds=int((frac or "0").ljust(3, "0")))
    else:
        raise ValueError(f"expected a timespan like 30m, 1h, 7d, 10s or PT2H, got {value!r}")
    if span <= timedelta(0):
        raise ValueError(f"a timespan must be positive, got {value!r}")
    if span.microseconds:
        raise ValueError(f"a timespan must be a whole number of seconds, got {value!r}")
    return span


def kql_timespan(span: timedelta) -> str:
    """The exact KQL timespan literal, in the largest unit that divides it (``1h``, ``90m``, ``1500ms``)."""
    total_ms = span // timedelta(milliseconds=1)
    if span != timedelta(milliseconds=total_ms) or total_ms <= 0:
        raise ValueError(f"timespan {span} is not a positive whole number of milliseconds")
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if total_ms % size == 0:
            return f"{total_ms // size}{unit}"
    return f"{total_ms}ms"


def iso_timespan(span: timedelta) -> str:
    """ISO 8601 duration (``PT1H``, ``P7D``): what Graph runHuntingQuery's ``Timespan`` expects."""
    total_ms = span // timedelta(milliseconds=1)
    days, rest = divmod(total_ms, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, ms = divmod(rest, 1000)
    out = "P" + (f"{days}D" if days else "")
    time = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if seconds or ms:
        time += f"{seconds}.{ms:03d}S" if ms else f"{seconds}S"
    return out + ("T" + time if time else "") if (days or time) else "PT0S"


# --- literals ----------------------------------------------------------------------------------------

# Control characters other than tab/newline/carriage return have no business in a parameter and
# differ between KQL implementations; refusing them keeps the literal exact everywhere.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def kql_string(value: str) -> str:
    """A double-quoted KQL string literal whose content is exactly ``value``."""
    if _FORBIDDEN.search(value):
        raise ValueError("contains a control character")
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"')
               .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


def kql_literal(ptype: str, value: Any) -> str:
    if ptype == "int":
        return str(int(value))
    if ptype == "bool":
        return "true" if value else "false"
    if ptype == "string":
        return kql_string(value)
    if ptype == "string_list":
        return "dynamic([" + ", ".join(kql_string(v) for v in value) + "])"
    if ptype == "timespan":
        return kql_timespan(value)
    raise ValueError(f"unknown parameter type {ptype!r}")


# --- typing values -----------------------------------------------------------------------------------

_TRUE, _FALSE = {"true", "yes", "1"}, {"false", "no", "0"}


def coerce(ptype: str, value: Any, *, minimum: int | None = None) -> Any:
    """The typed value for a raw one (from YAML, JSON or a ``--param`` string), or ValueError saying why.

    Strings from the command line are converted (``"5"`` to 5, ``"a,b"`` to a list); values from YAML
    or JSON must already have the declared type (a number is not silently a string).
    """
    if ptype == "int":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"expected a whole number, got {value!r}")
        if isinstance(value, str):
            if not re.fullmatch(r"-?\d{1,18}", value.strip()):
                raise ValueError(f"expected a whole number, got {value!r}")
            value = int(value.strip())
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value
    if ptype == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"expected true or false, got {value!r}")
    if ptype == "string":
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        kql_string(value)  # refuses control characters
        return value
    if ptype == "string_list":
        items: Iterable[Any]
        if isinstance(value, str):
            # Comma-separated on the command line and in app settings; an empty string is an empty list.
            items = [p.strip() for p in value.split(",")] if value.strip() else []
        elif isinstance(value, list | tuple):
            items = value
        else:
            raise ValueError(f"expected a list of strings, got {value!r}")
        out: list[str] = []
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item.strip():
                raise ValueError(f"item {i + 1}: expected a non-empty string, got {item!r}")
            kql_string(item)
            out.append(item.strip())
        return out
    if ptype == "timespan":
        return parse_timespan(value)
    raise ValueError(f"unknown parameter type {ptype!r}")


def coerce_param(rule: str, spec: ParamSpec, value: Any, *, source: str) -> Any:
    try:
        return coerce(spec.type, value, minimum=spec.minimum)
    except ValueError as exc:
        raise ParamError(rule, spec.name, f"{exc} (from {source})") from None


# --- resolution ----------------------------------------------------------------------------------------

def resolve_params(rule: Rule, tenant: TenantConfig, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Typed values for every parameter of ``rule``: rule default < tenant config < explicit overrides.

    Tenant ``params`` and ``overrides`` are shared by several rules, so names this rule does not
    declare are left for :func:`check_param_names`; ``rules.<slug>.params`` belongs to this rule
    alone, so an unknown name there is an error here. A required parameter with no value refuses.
    """
    values: dict[str, Any] = {}
    per_rule = tenant.for_rule(rule.slug).params
    for name in per_rule:
        if name not in rule.parameters:
            raise ParamError(rule.slug, name, f"set in tenant config rules.{rule.slug}.params but the rule "
                             f"declares no such parameter (it has: {', '.join(rule.parameters)})")
    for name, spec in rule.parameters.items():
        value: Any = None
        if spec.default is not None:
            value = spec.default
        if name in tenant.params:
            value = coerce_param(rule.slug, spec, tenant.params[name], source="tenant config params")
        if name in per_rule:
            value = coerce_param(rule.slug, spec, per_rule[name],
                                 source=f"tenant config rules.{rule.slug}.params")
        if name in overrides:
            value = coerce_param(rule.slug, spec, overrides[name], source="override")
        if spec.required and (value is None or value == []):
            raise ParamError(rule.slug, name, "is required and has no value; the rule refuses to run. Set it "
                             f"in the tenant config (params.{name} or rules.{rule.slug}.params.{name}) "
                             f"or with --param {name}=...")
        values[name] = value
    return values


def check_param_names(selected: Iterable[Rule], overrides: Mapping[str, Any], *,
                      all_rules: Iterable[Rule] = (), tenant: TenantConfig | None = None) -> None:
    """Refuse override names that no selected rule declares, and tenant-config names no rule declares.

    An unknown name is almost always a typo; ignoring it would run the rule with a value the operator
    did not mean.
    """
    selected = list(selected)
    declared = {n for r in selected for n in r.parameters}
    for name in overrides:
        if name not in declared:
            raise ParamError(None, name, "no selected rule declares this parameter "
                             f"(they declare: {', '.join(sorted(declared)) or 'nothing'})")
    if tenant is not None:
        known = {r.slug: r for r in [*all_rules, *selected]}
        everywhere = {n for r in known.values() for n in r.parameters}
        for name in tenant.params:
            if name not in everywhere:
                raise ParamError(None, name, "set in tenant config params but no rule declares it")
        for slug, body in tenant.rules.items():
            if slug not in known:
                # YAML 1.1 reads unquoted on/off/yes/no keys as booleans: say so rather than "no rule False".
                hint = "" if isinstance(slug, str) else f" (YAML read this key as {slug!r}: quote it)"
                raise ParamError(None, None, f"tenant config rules.{slug}: no such rule{hint}")
            for name in body.params:
                if name not in known[slug].parameters:
                    raise ParamError(slug, name, f"set in tenant config rules.{slug}.params but the rule "
                                     "declares no such parameter")


def bind_query(rule: Rule, values: Mapping[str, Any]) -> str:
    """The rule's query preceded by one ``let`` statement per parameter, in declaration order."""
    unknown = set(values) - set(rule.parameters)
    if unknown:
        raise ParamError(rule.slug, sorted(unknown)[0], "not declared by the rule")
    lines = []
    for name, spec in rule.parameters.items():
        if name not in values or values[name] is None:
            raise ParamError(rule.slug, name, "has no value")
        # Re-type here too: bind_query is public, and only typed values may become literals.
        typed = coerce_param(rule.slug, spec, values[name], source="bound value")
        lines.append(f"let {name} = {kql_literal(spec.type, typed)};")
    return "\n".join([*lines, rule.query.strip()])
