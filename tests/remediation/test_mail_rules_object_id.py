"""The two mail rules hand the mailbox strategy the recipient's object id (RecipientObjectId).

Each rule's own positive cases are run again with a RecipientObjectId on every EmailEvents row; every
move_to_junk request must then carry it as ``recipient_object_id``, next to the unchanged ``recipient``.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from detections.catalog import load_rule
from detections.ruletests import Expected, load_tests, run_case

RULES = Path(__file__).resolve().parents[2] / "detections" / "rules"


def object_id(address: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "mailbox:" + address.lower()))


@pytest.mark.parametrize("slug", ["consumer-sender-to-shared-mailboxes", "consumer-reply-chain-file-link"])
def test_move_to_junk_targets_carry_the_recipient_object_id(slug: str) -> None:
    tests = load_tests(load_rule(RULES / f"{slug}.yaml"))
    cases = [c for c in tests.cases if any(e.action == "move_to_junk" for e in c.expect)]
    assert cases
    for case in cases:
        rows = [{**r, "RecipientObjectId": object_id(r["RecipientEmailAddress"])}
                if r.get("RecipientEmailAddress") else r for r in case.tables.get("EmailEvents", [])]
        expect = [Expected(e.action, {**e.target, "recipient_object_id": object_id(e.target["recipient"])},
                           e.mode) if e.action == "move_to_junk" else e for e in case.expect]
        with_ids = replace(case, tables={**case.tables, "EmailEvents": rows}, expect=expect)
        result = asyncio.run(run_case(tests, with_ids))
        assert result.passed, f"{case.name}:\n{result.diff()}"
