"""Screenshots of the approval page for docs/approval.md (``python -m devtools.pagescreens``; dev only).

Azurite and the fake Graph in this process, a run of three Move to Junk requests held for approval, two
approved and run by the worker (mailbox strategy: moved and confirmed at once), then the request page of
a confirmed one (with Undo) and the run page, opened in the system's headless Chromium through
devtools/pagebrowser/click.mjs, served by devtools/pageserver.py as a signed-in on-call person.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import secrets
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from azure.functions.queue import QueueMessage

from app import bootstrap, handlers
from app.runtime import Runtime
from app.signin import PageAuth
from core.request import make_request
from core.settings import ROOT
from devtools.azurite import running_azurite
from devtools.cardrender.render import chromium_path
from devtools.fakegraph import FakeGraph
from devtools.pageserver import Identity, PageServer
from notifications.teams import MemoryNotifier
from remediation.decisions import Decisions, RecordOnly

RULE = "consumer-sender-to-shared-mailboxes"
RECIPIENTS = ["support@contoso.com", "sales@contoso.com", "info@contoso.com"]
ONCALL = "6f1e3d2c-0000-4000-8000-00000000c411"
ALICE = Identity("alice@contoso.com", "0a1b2c3d-0000-4000-8000-0000000a11ce", (ONCALL,))
CLICK = ROOT / "devtools" / "pagebrowser" / "click.mjs"
RUN_ID = "consumer-sender-to-shared-mailboxes-20261120T1200Z"


def screenshot(url: str, png: Path) -> None:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is needed (npm ci) to drive Chromium")
    proc = subprocess.run([node, str(CLICK), chromium_path(), url, "", str(png)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0 or json.loads(proc.stdout).get("status") != 200:
        raise RuntimeError(f"could not open {url}: {proc.stderr[-500:] or proc.stdout[:500]}")


def _deliver(rt: Runtime, body: str) -> None:
    asyncio.run(handlers.on_message(rt, QueueMessage(id="m", body=body.encode(), dequeue_count=1)))


def make_screens(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with running_azurite() as az, FakeGraph() as fake, tempfile.TemporaryDirectory() as tmp:
        tenant = Path(tmp) / "tenant.yaml"
        tenant.write_text("params:\n  protected_recipients: [" + ", ".join(RECIPIENTS) + "]\n",
                          encoding="utf-8")
        config = bootstrap.load({"RESPONDER_TENANT_ID": "00000000-0000-4000-8000-00000000c0de",
                                 "AZURE_CLIENT_ID": "11111111-1111-1111-1111-111111111111",
                                 "AzureWebJobsStorage": az.connection_string,
                                 "RESPONDER_TENANT_CONFIG": str(tenant),
                                 "RESPONDER_GRAPH_BASE_URL": fake.base_url})
        settings = dataclasses.replace(config.settings, email_strategy="mailbox")
        rt = Runtime(dataclasses.replace(config, settings=settings), notifier=MemoryNotifier(),
                     worker_options={"max_attempts": 1})
        now = datetime.now(UTC)
        ids = []
        for i, rcpt in enumerate(RECIPIENTS):
            imid = f"<invoice-{i}@mail.gmail.com>"
            fake.mailboxes.add(rcpt, imid, "inbox", subject="Overdue invoice")
            req = make_request(rule=RULE, action="move_to_junk", mode="approval",
                               target={"network_message_id": f"4f7c2a1e-0000-4000-8000-00000000000{i}",
                                       "recipient": rcpt, "internet_message_id": imid},
                               evidence={"SenderMailFromAddress": "billing.dept@gmail.com",
                                         "Subject": "Overdue invoice", "RecipientEmailAddress": rcpt},
                               detected_at=now, run={"id": RUN_ID, "index": i, "total": len(RECIPIENTS)},
                               severity="Medium", rule_name="Consumer sender to shared mailboxes")
            _deliver(rt, json.dumps(req))
            ids.append(req["id"])
        decisions = Decisions(RecordOnly(rt.settings, rt.config.tenant, rt.config.catalog, rt.ledger()))
        for rid in ids[:2]:
            rec = decisions.record_approval(rid, ALICE.upn, decided_by_id=ALICE.oid, decided_via="page")
            _deliver(rt, json.dumps(rec.request))
        auth = PageAuth(easy_auth=True, oncall=ONCALL, key=secrets.token_bytes(32))
        shots = [out / "request.png", out / "run.png"]
        with PageServer(rt, auth, ALICE) as server:
            screenshot(f"{server.base_url}/requests/{ids[0]}", shots[0])
            screenshot(f"{server.base_url}/runs/{RUN_ID}", shots[1])
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.pagescreens", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "approval",
                        help="folder for request.png and run.png (default: docs/approval)")
    args = parser.parse_args(argv)
    for png in make_screens(args.out):
        print(png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
