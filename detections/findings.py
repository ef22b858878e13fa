"""Result rows -> remediation-request/1 dicts, per the rule's remediation actions."""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from core.request import TARGET_FIELDS, RequestInvalid, make_request
from detections.catalog import ActionSpec, Rule


@dataclass
class Findings:
    requests: list[dict[str, Any]] = field(default_factory=list)
    # Rows that matched an action but could not become a request (empty target column, bad value).
    problems: list[str] = field(default_factory=list)


def json_safe(value: Any) -> Any:
    """A value JSON can carry unchanged in meaning: datetimes as ISO 8601 UTC strings, and so on."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
        text = moment.strftime("%Y-%m-%dT%H:%M:%S")
        return text + (f".{moment.microsecond:06d}" if moment.microsecond else "") + "Z"
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return str(value)


# A queue message is at most 64 KB, and the Functions queue binding base64-encodes it (x 4/3): 48 KB of
# JSON is the real ceiling. Evidence from make_set/make_list columns can be far larger, so it is trimmed
# to this budget when the request is made; target, ids and the rest of the request stay well under the
# remaining 16 KB.
EVIDENCE_BUDGET = 32 * 1024
EVIDENCE_MAX_STRING = 2048   # characters kept of one string before trimming harder
EVIDENCE_MAX_ITEMS = 100     # items kept of one list before trimming harder


def _more(n: int) -> str:
    return f"\u2026(+{n} more)"


def _trim(value: Any, max_string: int, max_items: int) -> Any:
    if isinstance(value, str) and len(value) > max_string:
        return value[:max_string] + _more(len(value) - max_string)
    if isinstance(value, list):
        kept = [_trim(v, max_string, max_items) for v in value[:max_items]]
        return [*kept, _more(len(value) - max_items)] if len(value) > max_items else kept
    if isinstance(value, dict):
        return {k: _trim(v, max_string, max_items) for k, v in value.items()}
    return value


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def trim_evidence(evidence: Mapping[str, Any], budget: int = EVIDENCE_BUDGET) -> dict[str, Any]:
    """``evidence`` (JSON-safe values) cut to ``budget`` bytes of JSON: long strings and long lists are
    shortened, each with an explicit ``…(+N more)`` marker so on-call knows something was left out.
    Limits halve until it fits; evidence that fits is returned unchanged."""
    out = dict(evidence)
    max_string, max_items = EVIDENCE_MAX_STRING, EVIDENCE_MAX_ITEMS
    while _json_size(out) > budget:
        out = {k: _trim(v, max_string, max_items) for k, v in evidence.items()}
        if max_string <= 16 and max_items <= 1:
            break
        max_string, max_items = max(16, max_string // 2), max(1, max_items // 2)
    if _json_size(out) > budget:
        # Many columns, each already minimal: keep the columns that fit, in the rule's order.
        kept: dict[str, Any] = {}
        for k, v in out.items():
            if _json_size({**kept, k: v, "_trimmed": _more(len(out))}) > budget:
                kept["_trimmed"] = _more(len(out) - len(kept))
                break
            kept[k] = v
        out = kept
    return out


def effective_mode(rule: Rule, action: ActionSpec, *, tenant_mode: str | None, dry_run: bool) -> str:
    """Rule action's mode < tenant config ``rules.<slug>.mode`` < global dry run. The tenant config
    replaces the rule's mode, so it may loosen it (the operator's reviewed choice); connector actions
    still wait for a person unless RESPONDER_CONNECTOR_ACTIONS is auto, which the worker's rails enforce."""
    if dry_run:
        return "dry_run"
    return tenant_mode or action.mode


def _matches(row: Mapping[str, Any], when: Mapping[str, Any] | None) -> bool:
    if not when:
        return True
    value = row.get(when["column"])
    if "equals" in when:
        return value == when["equals"]
    return value in when["in"]


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def requests_from_rows(rule: Rule, rows: Sequence[Mapping[str, Any]], *, modes: Mapping[int, str],
                       detected_at: datetime, run_id: str, source: str | None = None) -> Findings:
    """One request per (row, matching action), deduplicated by request id; ``modes`` by action index.

    ``source`` (``core.request.SOURCES``: "scheduled" for a scan, "push" for the push worker) says which
    path found the request; it is not part of the id, so both paths' requests for one copy are one id.

    ``run.index`` numbers this rule's requests *of the same action* within the run (the worker applies
    the per-rule target cap on it, so a notify row sorted first cannot push a protective move past the
    cap); ``run.total`` counts all of the run's requests (the run is complete when that many settled).
    """
    out = Findings()
    seen: set[str] = set()
    for n, row in enumerate(rows):
        for i, action in enumerate(rule.actions):
            if not _matches(row, action.when):
                continue
            target: dict[str, str] = {}
            required_missing = []
            for tfield, column in action.target.items():
                value = row.get(column)
                if _empty(value):
                    # Optional fields (internet_message_id, ...) are simply left out when empty.
                    if tfield in TARGET_FIELDS[action.action]:
                        required_missing.append(f"{tfield} (column {column})")
                    continue
                target[tfield] = str(json_safe(value))
            if action.action == "notify" and not target:
                required_missing.append("every target field (" + ", ".join(action.target.values()) + ")")
            if required_missing:
                out.problems.append(f"{rule.slug}: row {n + 1}: {action.action}: empty "
                                    f"{', '.join(required_missing)}; no request made")
                continue
            evidence = trim_evidence({col: json_safe(row.get(col)) for col in action.evidence})
            extra = {"source": source} if source else {}
            try:
                req = make_request(rule=rule.slug, action=action.action, mode=modes[i], target=target,
                                   evidence=evidence, detected_at=detected_at,
                                   severity=rule.severity, rule_name=rule.name, **extra)
            except RequestInvalid as exc:
                out.problems.append(f"{rule.slug}: row {n + 1}: {action.action}: {exc}; no request made")
                continue
            if req["id"] in seen:
                continue
            seen.add(req["id"])
            out.requests.append(req)
    total = len(out.requests)
    for index, req in zip(action_indices(out.requests), out.requests, strict=True):
        req["run"] = {"id": run_id, "index": index, "total": total}
    return out


def action_indices(requests: Sequence[Mapping[str, Any]]) -> list[int]:
    """Each request's position among the requests of the same action, in order: the cap counts targets
    per action (50 junk moves and 50 notifications are not 100 targets of one kind)."""
    seen: dict[str, int] = {}
    out = []
    for req in requests:
        action = str(req.get("action"))
        out.append(seen.get(action, 0))
        seen[action] = out[-1] + 1
    return out
