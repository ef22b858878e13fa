"""POST /api/runs/{id}/undo (issue 14, undo a run), called as the host calls it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from core.request import make_request
from devtools.fakegraph import FakeGraph
from tests.functions.conftest import NOW, PROTECTED, RULE, Env, http

pytestmark = pytest.mark.azurite


def undo(env: Env, run_id: str, body: Any = b"", **kw: Any) -> tuple[int, dict[str, Any]]:
    resp = env.call("undo_run", http("POST", f"http://localhost/api/runs/{run_id}/undo", body,
                                     route_params={"id": run_id}, **kw))
    return resp.status_code, json.loads(resp.get_body())


@pytest.mark.parametrize(("run_id", "body", "params", "field"), [
    ("bad/id", b"", None, "id"),
    ("-x", b"", None, "id"),
    ("r" * 129, b"", None, "id"),
    ("run-1", {"force": True}, None, "force"),
    ("run-1", {"by": 3}, None, "by"),
    ("run-1", {"by": " "}, None, "by"),
    ("run-1", b"[]", None, "body"),
    ("run-1", b"", {"dry": "1"}, "query.dry"),
])
def test_bad_input_is_a_400_naming_the_field(env: Env, run_id: str, body: Any, params: Any,
                                             field: str) -> None:
    status, doc = undo(env, run_id, body, params=params)
    assert (status, doc["field"]) == (400, field), doc


def test_an_unknown_run_is_404(env: Env) -> None:
    status, doc = undo(env, "no-such-run")
    assert status == 404 and "no request of this run" in doc["message"]


def test_a_run_is_undone_once_with_one_card_and_the_claimed_name_recorded(make_env: Any) -> None:
    with FakeGraph() as fake:
        env = make_env(graph_base_url=fake.base_url, email_strategy="mailbox")
        ids = []
        for i, box in enumerate(PROTECTED):
            fake.mailboxes.add(box, f"<m{i}@x>")
            req = make_request(rule=RULE, action="move_to_junk", mode="auto",
                               target={"network_message_id": f"nm-{i}", "recipient": box,
                                       "internet_message_id": f"<m{i}@x>"},
                               evidence={"SenderMailFromAddress": "bad@gmail.com"}, detected_at=NOW,
                               run={"id": "run-9", "index": i, "total": 3}, severity="Medium", rule_name="r")
            env.call("worker", QueueMessage(id=f"q{i}", body=json.dumps(req).encode(), dequeue_count=1))
            ids.append(req["id"])
        assert {fake.mailboxes.folder_of(b, f"<m{i}@x>") for i, b in enumerate(PROTECTED)} == {"junkemail"}
        cards_before = len(env.notifier.cards)
        status, doc = undo(env, "run-9", {"by": "alice@contoso.com"})
        assert status == 200 and sorted(u["undo_of"] for u in doc["undone"]) == sorted(ids), doc
        assert {fake.mailboxes.folder_of(b, f"<m{i}@x>") for i, b in enumerate(PROTECTED)} == {"inbox"}
        [card] = env.notifier.cards[cards_before:]
        assert card["body"][0]["id"] == "xdr-undo" and "3 undone" in json.dumps(card)
        undo_row = env.rt.ledger().get(doc["undone"][0]["request_id"])
        assert undo_row.extra["claimed_by"] == "alice@contoso.com"
        assert undo_row.request["undo_of"]["by"] == "function-key"
        status, doc = undo(env, "run-9")
        assert status == 200 and doc["undone"] == [] and len(doc["already_undone"]) == 3
        assert "nothing more to undo" in doc["summary"] and len(env.notifier.cards) == cards_before + 1
