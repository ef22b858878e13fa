"""The function app's worker gets the shared per-mailbox leases when it uses the mailbox strategy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from app.runtime import slots_table
from remediation.mailbox_slots import MailboxSlots

pytestmark = pytest.mark.azurite


@pytest.mark.parametrize("strategy", ["mailbox", "defender"])
def test_worker_gets_mailbox_slots_only_for_the_mailbox_strategy(make_env: Callable[..., Any], strategy: str,
                                                                 storage_conn: str) -> None:
    env = make_env(email_strategy=strategy)

    async def go() -> Any:
        async with env.rt.worker() as w:
            return w.mailbox_slots, w.ctx.mailbox_slots

    slots, in_ctx = asyncio.run(go())
    table = slots_table(env.rt.settings.ledger_table)
    names = {t.name for t in TableServiceClient.from_connection_string(storage_conn).list_tables()}
    if strategy == "mailbox":
        assert isinstance(slots, MailboxSlots) and in_ctx is slots and table in names
    else:
        assert slots is None and in_ctx is None and table not in names
