"""Who and what a run touched, pulled from request targets and evidence for the scan card."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from remediation.actions.registry import Registry, default_registry

# kind -> (target fields, evidence columns) that name an entity of that kind. Evidence matters for
# senders (never a target) and for the admin account behind a connector change.
ENTITY_SOURCES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Recipients": (("recipient",), ("RecipientEmailAddress",)),
    "Senders": (("sender",), ("SenderFromAddress", "SenderMailFromAddress")),
    "Connectors": (("connector",), ()),
    "Users": (("user",), ("AccountUpn",)),
}

def action_label(action: str, registry: Registry | None = None) -> str:
    """The card label each action declares (remediation/actions/, ``ActionDef.label``)."""
    return (registry or default_registry()).label(action)


def distinct(values: Iterable[Any]) -> list[str]:
    """Distinct non-empty values, case-insensitively, first spelling and first-seen order kept."""
    seen: set[str] = set()
    out: list[str] = []
    for v in values:
        if v is None or str(v).strip() == "":
            continue
        s = str(v).strip()
        key = s.lower()
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def entities(requests: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """kind -> distinct values in request order; kinds with nothing are left out."""
    reqs = list(requests)
    out: dict[str, list[str]] = {}
    for kind, (target_fields, evidence_cols) in ENTITY_SOURCES.items():
        values: list[Any] = []
        for r in reqs:
            target = r.get("target") if isinstance(r.get("target"), dict) else {}
            evidence = r.get("evidence") if isinstance(r.get("evidence"), dict) else {}
            values.extend(target.get(f) for f in target_fields)
            values.extend(evidence.get(c) for c in evidence_cols)
        found = distinct(values)
        if found:
            out[kind] = found
    return out


def describe_target(request: dict[str, Any]) -> str:
    """One line naming what the request acts on (untrusted text: render it as plain)."""
    target = request.get("target") or {}
    if not isinstance(target, dict):  # a poison message may be any shape: describe, never crash
        return str(target)
    if "connector" in target:
        kind = target.get("connector_type")
        return f"{target['connector']}, {kind} connector" if kind else str(target["connector"])
    if "user" in target:
        return str(target["user"])
    if "recipient" in target:
        evidence = request.get("evidence")
        subject = evidence.get("Subject") if isinstance(evidence, dict) else None
        base = f"mail to {target['recipient']}"
        return f"{base}, subject “{subject}”" if subject else base
    return ", ".join(f"{k}={v}" for k, v in target.items()) or "(no target)"
