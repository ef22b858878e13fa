"""Compare remediation requests (and, in the demo, their outcomes) with ``truth.json``.

Definitions, per rule and over all rules:

* An expected item is **found** when the rule produced a request with the same action and the same
  identifying target (case-insensitive; an account may be named by UPN or object id) and, when
  outcomes are given, that request ended where its mode says it should: ``auto`` -> ``confirmed``
  (email moves, verified in EmailEvents) or ``skipped``/done for account actions, ``approval`` ->
  ``held`` (waiting for a person: for an approval-mode rule, flagged and held *is* the job done),
  ``dry_run`` -> ``skipped``. Without outcomes (a bare scan), flagged is found.
* **missed**: expected but not found; each miss says why (not flagged, or flagged but ended in
  another state).
* **false_positives**: distinct requests of a rule that match nothing expected for that rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Where a request of each mode should end for it to count as handled.
GOOD_END = {
    "auto": frozenset({"confirmed", "skipped"}),
    "approval": frozenset({"held"}),
    "dry_run": frozenset({"skipped"}),
}


@dataclass
class RuleScore:
    found: int = 0
    missed: int = 0
    false_positives: int = 0
    misses: list[dict[str, Any]] = field(default_factory=list)
    extras: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"found": self.found, "missed": self.missed, "false_positives": self.false_positives}


def _norm(value: Any) -> str:
    return str(value or "").strip().lower()


def matches(expected: Mapping[str, Any], request: Mapping[str, Any]) -> bool:
    if request.get("action") != expected["action"]:
        return False
    target = request.get("target") or {}
    aliases = expected.get("aliases") or {}
    for key, value in expected["target"].items():
        allowed = {_norm(value), *(_norm(a) for a in aliases.get(key, []))}
        if _norm(target.get(key)) not in allowed:
            return False
    return True


def score(
    truth: Mapping[str, Any],
    requests: Iterable[Mapping[str, Any]],
    states: Mapping[str, str] | None = None,
    *,
    slugs: Iterable[str] = (),
) -> dict[str, RuleScore]:
    """Per rule slug (every slug in truth, in ``slugs`` or in a request) -> RuleScore.

    ``states`` maps request id -> final ledger state; None scores detection only.
    """
    by_rule: dict[str, dict[str, Mapping[str, Any]]] = {}
    for req in requests:
        by_rule.setdefault(req["rule"], {})[req["id"]] = req
    names = list(dict.fromkeys([*truth["rules"], *slugs, *by_rule]))
    out: dict[str, RuleScore] = {}
    for slug in names:
        s = RuleScore()
        reqs = by_rule.get(slug, {})
        used: set[str] = set()
        for item in truth["rules"].get(slug, {}).get("expected", []):
            hit = next((r for r in reqs.values() if matches(item, r)), None)
            if hit is None:
                s.missed += 1
                s.misses.append({**_brief(item), "why": "not flagged"})
                continue
            used.add(hit["id"])
            state = None if states is None else states.get(hit["id"])
            if states is not None and state not in GOOD_END.get(hit["mode"], frozenset()):
                s.missed += 1
                s.misses.append(
                    {**_brief(item), "why": f"flagged ({hit['mode']}) but ended {state or 'unknown'}"}
                )
                continue
            s.found += 1
        for rid, req in reqs.items():
            if rid not in used:
                s.false_positives += 1
                s.extras.append({"id": rid, "action": req["action"], "target": req.get("target")})
        out[slug] = s
    return out


def totals(scores: Mapping[str, RuleScore]) -> dict[str, int]:
    return {k: sum(getattr(s, k) for s in scores.values()) for k in ("found", "missed", "false_positives")}


def _brief(item: Mapping[str, Any]) -> dict[str, Any]:
    return {"action": item["action"], "target": item["target"], "scenario": item.get("scenario")}
