"""Result rows -> remediation-request/1 dicts, per the rule's remediation actions."""

from __future__ import annotations

import base64
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from detections.catalog import ActionSpec, Rule
from remediation.request import TARGET_FIELDS, RequestInvalid, make_request


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


def effective_mode(rule: Rule, action: ActionSpec, *, tenant_mode: str | None, dry_run: bool) -> str:
    """Rule action's mode < tenant config ``rules.<slug>.mode`` < global dry run."""
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
                       detected_at: datetime, run_id: str) -> Findings:
    """One request per (row, matching action), deduplicated by request id; ``modes`` by action index.

    ``run.index``/``run.total`` number this rule's requests within the run (the worker applies the
    per-rule target cap on them).
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
            evidence = {col: json_safe(row.get(col)) for col in action.evidence}
            try:
                req = make_request(rule=rule.slug, action=action.action, mode=modes[i], target=target,
                                   evidence=evidence, detected_at=detected_at,
                                   severity=rule.severity, rule_name=rule.name)
            except RequestInvalid as exc:
                out.problems.append(f"{rule.slug}: row {n + 1}: {action.action}: {exc}; no request made")
                continue
            if req["id"] in seen:
                continue
            seen.add(req["id"])
            out.requests.append(req)
    total = len(out.requests)
    for index, req in enumerate(out.requests):
        req["run"] = {"id": run_id, "index": index, "total": total}
    return out
