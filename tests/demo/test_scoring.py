"""Scoring against truth: what counts as found, missed and a false positive."""

from __future__ import annotations

from typing import Any

from devtools.sample.scoring import score, totals

TRUTH: dict[str, Any] = {
    "rules": {
        "junk-rule": {
            "expected": [
                {
                    "action": "move_to_junk",
                    "mode": "auto",
                    "target": {"network_message_id": "m1", "recipient": "a@x.com"},
                },
                {
                    "action": "move_to_junk",
                    "mode": "auto",
                    "target": {"network_message_id": "m2", "recipient": "b@x.com"},
                },
            ]
        },
        "account-rule": {
            "expected": [
                {
                    "action": "revoke_sessions",
                    "mode": "approval",
                    "target": {"user": "adm@x.com"},
                    "aliases": {"user": ["0000-oid"]},
                },
            ]
        },
        "quiet-rule": {"expected": []},
    }
}


def req(rid: str, rule: str, action: str, mode: str, **target: str) -> dict[str, Any]:
    return {"id": rid, "rule": rule, "action": action, "mode": mode, "target": target}


def test_flagged_targets_are_found_case_insensitively_and_by_alias() -> None:
    requests = [
        req("1", "junk-rule", "move_to_junk", "auto", network_message_id="m1", recipient="A@X.COM"),
        req(
            "2",
            "junk-rule",
            "move_to_junk",
            "auto",
            network_message_id="m2",
            recipient="b@x.com",
            internet_message_id="<i>",
        ),
        req("3", "account-rule", "revoke_sessions", "approval", user="0000-OID"),
    ]
    scores = score(TRUTH, requests)
    assert totals(scores) == {"found": 3, "missed": 0, "false_positives": 0}


def test_approval_counts_as_found_only_when_held_and_auto_only_when_done() -> None:
    requests = [
        req("1", "junk-rule", "move_to_junk", "auto", network_message_id="m1", recipient="a@x.com"),
        req("2", "junk-rule", "move_to_junk", "auto", network_message_id="m2", recipient="b@x.com"),
        req("3", "account-rule", "revoke_sessions", "approval", user="adm@x.com"),
    ]
    scores = score(TRUTH, requests, {"1": "confirmed", "2": "failed", "3": "held"})
    assert scores["junk-rule"].counts() == {"found": 1, "missed": 1, "false_positives": 0}
    assert "ended failed" in scores["junk-rule"].misses[0]["why"]
    assert scores["account-rule"].counts() == {"found": 1, "missed": 0, "false_positives": 0}
    # an approval-mode request that was executed without a person is not what the mode promises
    scores = score(TRUTH, requests, {"1": "confirmed", "2": "skipped", "3": "confirmed"})
    assert scores["account-rule"].counts() == {"found": 0, "missed": 1, "false_positives": 0}


def test_other_targets_wrong_actions_and_unknown_rules_are_false_positives() -> None:
    requests = [
        req("1", "junk-rule", "move_to_junk", "auto", network_message_id="m9", recipient="a@x.com"),
        req("2", "junk-rule", "soft_delete", "auto", network_message_id="m1", recipient="a@x.com"),
        req("3", "quiet-rule", "notify", "auto"),
        req("4", "new-rule", "notify", "auto"),
    ]
    scores = score(TRUTH, requests, slugs=["never-ran"])
    assert scores["junk-rule"].counts() == {"found": 0, "missed": 2, "false_positives": 2}
    assert scores["quiet-rule"].counts() == {"found": 0, "missed": 0, "false_positives": 1}
    assert scores["new-rule"].counts() == {"found": 0, "missed": 0, "false_positives": 1}
    assert scores["never-ran"].counts() == {"found": 0, "missed": 0, "false_positives": 0}
    assert scores["account-rule"].misses[0]["why"] == "not flagged"


def test_a_request_seen_twice_counts_once() -> None:
    same = req("1", "junk-rule", "move_to_junk", "auto", network_message_id="m1", recipient="a@x.com")
    scores = score(TRUTH, [same, dict(same)])
    assert scores["junk-rule"].counts() == {"found": 1, "missed": 1, "false_positives": 0}
