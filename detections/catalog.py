"""Load and validate rule files (``detections/rules/<slug>.yaml``) into :class:`Rule` objects.

Validation is strict on purpose: a JSON Schema rejects unknown keys, and the checks below catch
what a schema cannot (duplicate ids, a default of the wrong type, a target field the action does
not take). Every error names the file and the field, so a SOC engineer editing YAML sees where.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from core.request import EMAIL_ACTIONS, OPTIONAL_TARGET_FIELDS, TARGET_FIELDS
from detections.params import ParamError, coerce, kql_timespan, parse_timespan

DETECTIONS_DIR = Path(__file__).resolve().parent
RULES_DIR = DETECTIONS_DIR / "rules"
SCHEMAS_DIR = DETECTIONS_DIR / "schemas"
RULE_SCHEMA_PATH = DETECTIONS_DIR / "rule.schema.json"
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")

# Target fields an action may map beyond its required ones: the request contract's table.
_OPTIONAL_TARGETS = OPTIONAL_TARGET_FIELDS


_ALL_TARGET_FIELDS = ("network_message_id", "recipient", "recipient_object_id", "internet_message_id",
                      "connector", "connector_type", "user")

# Sentinel's ATT&CK tactic names (Azure/Azure-Sentinel .script/tests/detectionTemplateSchemaValidation/Models/
# AttackTactic.cs, plus PreAttack from the ARM alertRules API). Some Sentinel files write them with spaces
# ("Initial Access", "Command and Control"): compared without spaces or case, stored in this form.
TACTICS = ("Reconnaissance", "ResourceDevelopment", "InitialAccess", "Execution", "Persistence",
           "PrivilegeEscalation", "DefenseEvasion", "CredentialAccess", "Discovery", "LateralMovement",
           "Collection", "Exfiltration", "CommandAndControl", "Impact", "ImpairProcessControl",
           "InhibitResponseFunction", "PreAttack")
_TACTIC_KEYS = {t.lower(): t for t in TACTICS}
# Sentinel's limits for a scheduled rule (ScheduledTemplateInternalModel.cs: RangeTimeSpanIsoFormat
# "00:05:00".."14.00:00:00", PeriodGreaterThanOrEqualFrequency): a rule outside them cannot move to Sentinel.
SENTINEL_MIN_SPAN = timedelta(minutes=5)
SENTINEL_MAX_SPAN = timedelta(days=14)
# An NRT rule has no queryFrequency: Sentinel runs it every minute over the events since the last run.
# Here it runs at the shortest schedule Sentinel allows a scheduled rule (and the shipped rules use), over
# its `window` parameter; any result row triggers it (Sentinel NRT rules have no trigger threshold).
NRT_FREQUENCY = SENTINEL_MIN_SPAN
_NRT_ABSENT = ("queryFrequency", "queryPeriod", "triggerOperator", "triggerThreshold")


class RuleError(ValueError):
    """A rule (or rule-tests) file is wrong. ``str()`` is ``<file>: <field>: <message>``."""

    def __init__(self, file: str | Path, field: str, message: str):
        self.file = str(file)
        self.field = field
        self.message = message
        super().__init__(f"{self.file}: {field}: {message}")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: Any
    required: bool
    description: str
    minimum: int | None = None


@dataclass(frozen=True)
class ActionSpec:
    action: str
    mode: str
    target: dict[str, str]
    evidence: list[str]
    when: dict[str, Any] | None = None

    def columns(self) -> list[str]:
        """Every result column this action reads."""
        cols = [*self.target.values(), *self.evidence]
        if self.when:
            cols.append(self.when["column"])
        return list(dict.fromkeys(cols))


@dataclass(frozen=True)
class Rule:
    slug: str
    id: str
    name: str
    description: str
    severity: str
    platform: str
    query_frequency: timedelta
    query_period: timedelta
    query: str
    parameters: dict[str, ParamSpec]
    actions: list[ActionSpec]
    max_targets: int
    recipients_param: str | None
    path: Path
    raw: dict[str, Any]  # the file as written (Sentinel keys this app does not use are carried here)
    kind: str = "Scheduled"
    tactics: tuple[str, ...] = ()  # canonical names (``InitialAccess``), whatever spelling the file used
    trigger_operator: str = "gt"
    trigger_threshold: int = 0
    # Declared `scope: {all_mailboxes: true}`: the rule may act on any mailbox of the tenant. The
    # rails hold its email actions for approval unless the tenant config allows it (issue 11).
    all_mailboxes: bool = False

    @property
    def tests_path(self) -> Path:
        return self.path.with_name(f"{self.slug}.tests.yaml")


class Catalog(Mapping[str, Rule]):
    """Rules by slug, in slug order."""

    def __init__(self, rules: Mapping[str, Rule]):
        self._rules = dict(sorted(rules.items()))

    def __getitem__(self, slug: str) -> Rule:
        return self._rules[slug]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def select(self, slugs: list[str] | None) -> list[Rule]:
        """The named rules (all when ``slugs`` is empty); an unknown slug is a RuleError."""
        if not slugs:
            return list(self._rules.values())
        out = []
        for slug in dict.fromkeys(slugs):
            if slug not in self._rules:
                raise RuleError(f"{slug}.yaml", "slug",
                                f"no such rule (known: {', '.join(self._rules) or 'none'})")
            out.append(self._rules[slug])
        return out


# --- YAML ----------------------------------------------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: PyYAML silently keeps the last one, which hides edits."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleError(path, "(file)", f"cannot read: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(file)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise RuleError(path, where, f"not valid YAML: {problem}") from None


def schema_error(path: Path, validator: jsonschema.protocols.Validator, data: Any) -> RuleError | None:
    """The first schema violation as a RuleError naming the dotted field, or None."""
    errors = list(validator.iter_errors(data))
    if not errors:
        return None
    err = min(errors, key=lambda e: (len(e.absolute_path), str(list(e.absolute_path))))
    best = jsonschema.exceptions.best_match([err])
    field = ".".join(str(p) for p in best.absolute_path) or "(top level)"
    if best.validator == "additionalProperties" and isinstance(best.instance, dict):
        allowed = set(best.schema.get("properties", {}))
        extra = sorted(k for k in best.instance if k not in allowed)
        if extra:
            field = f"{field}.{extra[0]}" if best.absolute_path else extra[0]
            return RuleError(path, field, "unknown key (allowed here: " + ", ".join(sorted(allowed)) + ")")
    return RuleError(path, field, best.message)


@cache
def rule_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(RULE_SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


# --- building a Rule --------------------------------------------------------------------------------

def sentinel_duration(path: Path, field: str, text: str) -> timedelta:
    """A Sentinel duration (``5m``, ``1h``, ``1d``, ISO 8601 ``PT1H``, ``P1D``; the schema checks the form),
    within the range Sentinel accepts for a scheduled rule."""
    try:
        span = parse_timespan(text)
    except ValueError as exc:
        raise RuleError(path, field, str(exc)) from None
    if not SENTINEL_MIN_SPAN <= span <= SENTINEL_MAX_SPAN:
        raise RuleError(path, field, f"Sentinel takes {kql_timespan(SENTINEL_MIN_SPAN)} to "
                        f"{kql_timespan(SENTINEL_MAX_SPAN)}, got {text}")
    return span


def canonical_tactics(path: Path, tactics: list[str]) -> tuple[str, ...]:
    out = []
    for i, name in enumerate(tactics):
        canonical = _TACTIC_KEYS.get(name.replace(" ", "").lower())
        if canonical is None:
            raise RuleError(path, f"tactics.{i}", f"unknown tactic {name!r} (Sentinel's tactics: "
                            f"{', '.join(TACTICS)})")
        out.append(canonical)
    return tuple(dict.fromkeys(out))


def load_rule(path: Path) -> Rule:
    path = Path(path)
    slug = path.name.removesuffix(".yaml")
    if not SLUG_RE.match(slug):
        raise RuleError(path, "(file name)", "a rule's slug (its file name without .yaml) must be lower-case "
                        "letters, digits and hyphens")
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise RuleError(path, "(top level)", "expected a mapping of rule fields")
    err = schema_error(path, rule_validator(), data)
    if err:
        raise err
    ext = data["responder"]
    kind = data["kind"]
    if kind == "NRT":
        for key in _NRT_ABSENT:
            if key in data:
                raise RuleError(path, key, f"an NRT rule has no {key} (it runs every "
                                f"{kql_timespan(NRT_FREQUENCY)} over its window parameter; use kind: "
                                "Scheduled to set a schedule)")
    tactics = canonical_tactics(path, data.get("tactics", []))

    params: dict[str, ParamSpec] = {}
    for name, body in ext["parameters"].items():
        field = f"responder.parameters.{name}"
        spec = ParamSpec(name=name, type=body["type"], default=None,
                         required=bool(body.get("required", False)),
                         description=body["description"], minimum=body.get("minimum"))
        if spec.minimum is not None and spec.type != "int":
            raise RuleError(path, f"{field}.minimum", "only int parameters take a minimum")
        if "default" in body:
            try:
                default = coerce(spec.type, body["default"], minimum=spec.minimum)
            except ValueError as exc:
                raise RuleError(path, f"{field}.default", f"not a valid {spec.type}: {exc}") from None
            spec = ParamSpec(name, spec.type, default, spec.required, spec.description, spec.minimum)
        elif not spec.required:
            raise RuleError(path, field, "needs a default, or `required: true` when no default makes sense")
        params[name] = spec

    window = params["window"]
    if window.type != "timespan":
        raise RuleError(path, "responder.parameters.window.type", "the window parameter must be a timespan")
    if window.default is None:
        raise RuleError(path, "responder.parameters.window.default", "the window parameter needs a default")
    if kind == "NRT":
        frequency, period = NRT_FREQUENCY, window.default
    else:
        frequency = sentinel_duration(path, "queryFrequency", data["queryFrequency"])
        period = sentinel_duration(path, "queryPeriod", data["queryPeriod"])
        if period != window.default:
            raise RuleError(path, "queryPeriod", f"must equal the window parameter's default "
                            f"({kql_timespan(window.default)}), got {data['queryPeriod']}")
        if period < frequency:
            raise RuleError(path, "queryPeriod", f"must be at least queryFrequency "
                            f"({data['queryFrequency']}), got {data['queryPeriod']}: runs would leave gaps")

    actions: list[ActionSpec] = []
    for i, body in enumerate(ext["remediation"]):
        field = f"responder.remediation.{i}"
        action = body["action"]
        required = set(TARGET_FIELDS[action])
        allowed = required | set(_OPTIONAL_TARGETS.get(action, ()))
        if action == "notify":
            # A notification names whatever it is about; its target fields are its identity.
            allowed = set(_ALL_TARGET_FIELDS)
            if not body["target"]:
                raise RuleError(path, f"{field}.target", "a notify action needs at least one target field "
                                "(what the notification is about)")
        missing = sorted(required - set(body["target"]))
        if missing:
            raise RuleError(path, f"{field}.target",
                            f"action {action} needs target field(s): {', '.join(missing)}")
        extra = sorted(set(body["target"]) - allowed)
        if extra:
            raise RuleError(path, f"{field}.target.{extra[0]}", f"action {action} takes no such target field "
                            f"(it takes: {', '.join(sorted(allowed)) or 'none'})")
        actions.append(ActionSpec(action=action, mode=body["mode"], target=dict(body["target"]),
                                  evidence=list(body["evidence"]), when=body.get("when")))

    recipients_param = ext.get("scope", {}).get("recipients_param")
    if recipients_param is not None:
        spec = params.get(recipients_param)
        if spec is None or spec.type != "string_list":
            raise RuleError(path, "responder.scope.recipients_param",
                            f"must name a string_list parameter of this rule, got {recipients_param!r}")
    all_mailboxes = bool(ext.get("scope", {}).get("all_mailboxes", False))
    if all_mailboxes and recipients_param is not None:
        raise RuleError(path, "responder.scope", "declare either recipients_param (a protected list) or "
                        "all_mailboxes: true (every mailbox of the tenant), not both")
    if any(a.action in EMAIL_ACTIONS for a in actions) and recipients_param is None and not all_mailboxes:
        raise RuleError(path, "responder.scope.recipients_param", "rules with email actions must say which "
                        "parameter lists the recipients they may touch (or declare all_mailboxes: true)")

    return Rule(
        slug=slug, id=data["id"], name=data["name"], description=data["description"],
        severity=data["severity"], platform=ext["platform"],
        query_frequency=frequency, query_period=period,
        query=data["query"], parameters=params, actions=actions, max_targets=ext["max_targets"],
        recipients_param=recipients_param, path=path, raw=data, kind=kind, tactics=tactics,
        trigger_operator=data.get("triggerOperator", "gt"), trigger_threshold=data.get("triggerThreshold", 0),
        all_mailboxes=all_mailboxes,
    )


def load_catalog(rules_dir: Path | None = None) -> Catalog:
    """Every ``*.yaml`` rule in ``rules_dir`` (default ``RULES_DIR``; ``*.tests.yaml`` excluded)."""
    rules_dir = Path(rules_dir) if rules_dir is not None else RULES_DIR
    if not rules_dir.is_dir():
        raise RuleError(rules_dir, "(folder)", "rules folder does not exist")
    rules: dict[str, Rule] = {}
    ids: dict[str, Path] = {}
    for path in sorted(rules_dir.glob("*.yaml")):
        if path.name.endswith(".tests.yaml"):
            continue
        rule = load_rule(path)
        if rule.id.lower() in ids:
            raise RuleError(path, "id", f"duplicate rule id {rule.id} (also in {ids[rule.id.lower()].name})")
        if rule.slug in rules:
            raise RuleError(path, "slug", f"duplicate slug {rule.slug}")
        ids[rule.id.lower()] = path
        rules[rule.slug] = rule
    for path in sorted(rules_dir.glob("*.yml")):
        raise RuleError(path, "(file name)", "rule files end in .yaml (this one would be ignored)")
    for path in sorted(rules_dir.glob("*.tests.yaml")):
        slug = path.name.removesuffix(".tests.yaml")
        if slug not in rules:
            raise RuleError(path, "(file name)", f"test cases for a rule that does not exist ({slug}.yaml)")
    return Catalog(rules)


__all__ = [
    "RULES_DIR",
    "SCHEMAS_DIR",
    "TACTICS",
    "ActionSpec",
    "Catalog",
    "ParamError",
    "ParamSpec",
    "Rule",
    "RuleError",
    "load_catalog",
    "load_rule",
    "load_yaml",
]
