"""Undo a run (remediation/undo_run.py): everything one run did, reversed in one step, one summary report."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from core.graph import make_graph_client
from core.settings import Settings
from core.tenant import TenantConfig
from devtools.fakegraph import FakeGraph
from remediation.exchange import ExchangeClient
from remediation.ledger import Ledger
from remediation.reporting import Report
from remediation.worker import Worker
from tests.remediation.factories import PROTECTED, connector_request, email_request, make_rule, user_request
from tests.remediation.test_worker import Clock

pytestmark = pytest.mark.azurite

RULE = make_rule(max_targets=50)
ACCOUNTS = make_rule("connectors", (("revoke_sessions", "auto"), ("disable_connector", "auto")),
                     recipients_param=None)
CATALOG = {RULE.slug: RULE, ACCOUNTS.slug: ACCOUNTS}
TENANT = TenantConfig.from_mapping({"params": {"protected_recipients": PROTECTED}}, source="test")


class H:
    def __init__(self, fake: FakeGraph, ledger: Ledger) -> None:
        self.fake, self.ledger = fake, ledger
        self.reports: list[Report] = []

    def run(self, body: Callable[[Worker], Awaitable[Any]], **env: str) -> Any:
        async def hook(report: Report) -> None:
            self.reports.append(report)

        async def main() -> Any:
            settings = Settings.from_env({"RESPONDER_GRAPH_BASE_URL": self.fake.base_url,
                                          "RESPONDER_EMAIL_STRATEGY": "mailbox",
                                          "RESPONDER_TENANT_ID": self.fake.tenant_id, **env}, require=False)
            exchange = ExchangeClient(self.fake.tenant_id, base_url=self.fake.exchange_base_url)
            graph = make_graph_client(base_url=self.fake.base_url, max_retries=0)
            try:
                return await body(Worker(settings, TENANT, CATALOG, self.ledger, graph, exchange,
                                         report_hook=hook))
            finally:
                await exchange.aclose()
        return asyncio.run(main())


@pytest.fixture
def h(storage_conn: str, unique_name: str) -> Any:
    with FakeGraph() as fake:
        yield H(fake, Ledger.from_connection_string(storage_conn, unique_name, clock=Clock()))


def twenty(h: H) -> list[dict[str, Any]]:
    """A run that moves 20 messages across the three protected mailboxes, some from a folder of their own."""
    reqs = []
    for i in range(20):
        box = PROTECTED[i % 3]
        folder = "inbox"
        if i % 4 == 0:
            folder = h.fake.mailboxes.add_folder(box, f"Projects {i}")
        h.fake.mailboxes.add(box, f"<m{i}@x>", folder)
        reqs.append(email_request(f"nm-{i}", box, index=i, imid=f"<m{i}@x>"))
    return reqs


def folders(h: H, reqs: list[dict[str, Any]]) -> list[str | None]:
    return [h.fake.mailboxes.folder_of(r["target"]["recipient"], r["target"]["internet_message_id"])
            for r in reqs]


def test_a_run_that_moved_20_messages_is_fully_restored_with_one_summary(h: H) -> None:
    reqs = twenty(h)
    before = folders(h, reqs)
    out = h.run(lambda w: w.process(reqs))
    assert [o.state for o in out] == ["confirmed"] * 20 and set(folders(h, reqs)) == {"junkemail"}
    h.reports.clear()
    result = h.run(lambda w: w.undo_run("run-1", "alice"))
    assert folders(h, reqs) == before          # each back in the folder it came from
    assert (len(result.undone), result.failed) == (20, [])
    for r in reqs:
        row = h.ledger.get(r["id"])
        assert row is not None and row.extra["undone_by"]
        undo = h.ledger.get(row.extra["undone_by"])
        assert undo is not None and undo.extra["undo_of"] == r["id"] and undo.state == "confirmed"
    [summary] = h.reports
    assert summary.kind == "undone" and "20 undone" in summary.summary and "alice" in summary.summary
    assert {o.extra["undo_run"] for o in summary.outcomes} == {"undone"}
    # Idempotent: a second undo-run undoes nothing more, says so, and moves nothing.
    moves = len(h.fake.calls_to("POST", r"/move$"))
    h.reports.clear()
    again = h.run(lambda w: w.undo_run("run-1", "bob"))
    assert (again.undone, len(again.already_undone)) == ([], 20)
    assert "nothing more to undo" in again.summary()
    assert len(h.fake.calls_to("POST", r"/move$")) == moves and h.reports == []


def test_one_failing_target_does_not_stop_the_others(h: H) -> None:
    reqs = twenty(h)[:6]
    h.run(lambda w: w.process(reqs))
    # sales@ is PROTECTED[1]: indexes 1 and 4. Its mailbox refuses the move back (403, as Graph answers
    # ErrorAccessDenied when the app's access policy excludes the mailbox).
    h.fake.inject("POST", r"sales(@|%40)contoso\.com.*/move$", 403, times=None, code="ErrorAccessDenied")
    result = h.run(lambda w: w.undo_run("run-1", "alice"))
    assert len(result.undone) == 4 and sorted(o.request_id for o in result.failed) == sorted(
        reqs[i]["id"] for i in (1, 4))
    assert all(o.error for o in result.failed)
    now = folders(h, reqs)
    assert [now[1], now[4]] == ["junkemail", "junkemail"]
    assert "junkemail" not in [f for i, f in enumerate(now) if i not in (1, 4)]
    [summary] = h.reports
    assert {o.extra["undo_run"] for o in summary.outcomes} == {"undone", "failed"}
    assert "2 failed" in summary.summary


def test_what_cannot_be_undone_is_listed_and_nothing_done_is_counted(h: H) -> None:
    h.fake.users.add("mallory@contoso.com")
    revoke = user_request("mallory@contoso.com")
    held = user_request("eve@contoso.com", mode="approval")
    held["run"] = revoke["run"]
    h.run(lambda w: w.process([revoke, held]))
    result = h.run(lambda w: w.undo_run("run-c", "alice"))
    assert [r.request_id for r in result.cannot_undo] == [revoke["id"]]
    assert [r.request_id for r in result.nothing_done] == [held["id"]]
    assert result.undone == [] and "cannot be undone" in result.summary()


CONNECTOR_RULE = make_rule("connectors", (("disable_connector", "auto"), ("disable_user", "auto"),
                                          ("revoke_sessions", "auto")), recipients_param=None)


def test_a_disabled_connector_and_account_are_re_enabled_and_a_revoke_is_listed(h: H) -> None:
    CATALOG[CONNECTOR_RULE.slug] = CONNECTOR_RULE
    try:
        h.fake.connectors.add("Partner relay", "inbound")
        h.fake.users.add("mallory@contoso.com")
        h.fake.users.add("eve@contoso.com")
        reqs = [connector_request("Partner relay"), user_request("mallory@contoso.com", "disable_user"),
                user_request("eve@contoso.com")]
        auto = {"RESPONDER_CONNECTOR_ACTIONS": "auto"}
        out = h.run(lambda w: w.process(reqs), **auto)
        assert [o.state for o in out] == ["confirmed"] * 3
        assert h.fake.connectors.get("Partner relay")["Enabled"] is False
        assert h.fake.users.get("mallory@contoso.com").account_enabled is False
        result = h.run(lambda w: w.undo_run("run-c", "alice"), **auto)
        assert sorted(o.action for o in result.undone) == ["enable_connector", "enable_user"]
        assert h.fake.connectors.get("Partner relay")["Enabled"] is True
        assert h.fake.users.get("mallory@contoso.com").account_enabled is True
        assert [r.action for r in result.cannot_undo] == ["revoke_sessions"]
        [summary] = h.reports[-1:]
        assert summary.kind == "undone" and "1 cannot be undone" in summary.summary
    finally:
        del CATALOG[CONNECTOR_RULE.slug]


def test_under_manual_connector_actions_a_disabled_connector_is_listed_not_called(h: H) -> None:
    CATALOG[CONNECTOR_RULE.slug] = CONNECTOR_RULE
    try:
        h.fake.connectors.add("Partner relay", "inbound")
        req = connector_request("Partner relay")
        h.run(lambda w: w.process([req]), RESPONDER_CONNECTOR_ACTIONS="auto")
        calls = len(h.fake.calls)
        result = h.run(lambda w: w.undo_run("run-c", "alice"), RESPONDER_CONNECTOR_ACTIONS="manual")
        assert [r.request_id for r in result.cannot_undo] == [req["id"]] and result.undone == []
        assert len(h.fake.calls) == calls and h.fake.connectors.get("Partner relay")["Enabled"] is False
    finally:
        del CATALOG[CONNECTOR_RULE.slug]
