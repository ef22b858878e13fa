"""The function app renumbers a run's new requests (app/runs.py) per action, as the scan does."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.runs import register_run
from core.request import make_request
from detections.scan import RuleRun
from remediation.ledger import Ledger
from tests.remediation.factories import make_rule

pytestmark = pytest.mark.azurite

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def test_new_requests_are_numbered_per_action_and_total_counts_the_run(storage_conn: str,
                                                                       unique_name: str) -> None:
    ledger = Ledger.from_connection_string(storage_conn, unique_name)
    rule = make_rule(actions=(("notify", "auto"), ("move_to_junk", "auto")))
    reqs = []
    for i in range(3):
        reqs.append(make_request(rule=rule.slug, action="notify", mode="auto",
                                 target={"network_message_id": f"m{i}"}, evidence={}, detected_at=NOW))
        reqs.append(make_request(rule=rule.slug, action="move_to_junk", mode="auto",
                                 target={"network_message_id": f"m{i}", "recipient": "a@contoso.com"},
                                 evidence={}, detected_at=NOW))
    # One of them was seen by an earlier run: it is not part of this run's numbering.
    ledger.receive({**reqs[0], "run": {"id": "earlier", "index": 0, "total": 1}})
    run = RuleRun(rule=rule, params={}, query="", rows=[{}] * 3, requests=reqs, partial=False, error=None,
                  run_id="run-2")
    queued = register_run(ledger, run, NOW)
    assert [(r["action"], r["run"]["index"], r["run"]["total"]) for r in queued.new] == [
        ("move_to_junk", 0, 5), ("notify", 0, 5), ("move_to_junk", 1, 5), ("notify", 1, 5),
        ("move_to_junk", 2, 5),
    ]
