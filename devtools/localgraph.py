"""The fake Graph on a fixed port, over the sample tenant, for running the app locally with Core Tools.

    python -m devtools.localgraph [--dir demo-output/local] [--port 8081] [--size small]

Generates the sample tenant into ``DIR`` (tables and ``DIR/tenant.yaml``, the tenant config that
``local.settings.example.json`` names) unless it is already there, then serves the loopback fake of
Graph and of the Exchange admin API (``devtools/fakegraph.py``) on ``127.0.0.1:PORT`` until
Ctrl-C: ``runHuntingQuery`` runs on the local engine over the tables (at the sample's fixed clock),
``analyzedEmails/remediate`` moves mail in them, the tenant's accounts and connectors exist. Dev tool:
not deployed (``.funcignore``). See docs/function-app.md, "Run it locally".
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from core.settings import ROOT

DEFAULT_DIR = "demo-output/local"
DEFAULT_PORT = 8081
# The made-up tenant id of the demo (portal links only); local.settings.example.json uses it too.
LOCAL_TENANT_ID = "00000000-0000-4000-8000-00000000c0de"


def prepare(directory: Path, size: str = "small") -> Path:
    """The sample tenant in ``directory`` (generated when missing); returns its tenant.yaml."""
    from devtools.sample import generate

    if not (directory / "tenant.yaml").is_file() or not (directory / "tables").is_dir():
        generate(directory, size=size)
    return directory / "tenant.yaml"


def main(argv: Sequence[str] | None = None, *, stop: threading.Event | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.localgraph", description=__doc__)
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"sample tenant folder (default {DEFAULT_DIR})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0: any free")
    parser.add_argument("--size", default="small", choices=("small", "medium", "large"))
    args = parser.parse_args(argv)
    directory = Path(args.dir)
    if not directory.is_absolute():
        directory = ROOT / directory
    tenant = prepare(directory, args.size)

    from devtools.fakegraph import FakeGraph
    from devtools.sample import SAMPLE_NOW
    from devtools.sample.live import LiveTables

    live = LiveTables(directory / "tables", SAMPLE_NOW)
    try:
        with FakeGraph(tenant_id=LOCAL_TENANT_ID, hunting=live.hunt, on_remediate=live.remediate,
                       port=args.port) as fake:
            for upn, object_id in live.people():
                fake.users.add(upn, id=object_id)
            for name in live.connectors():
                fake.connectors.add(name, "inbound")
            print(f"fake Graph on {fake.base_url} (Exchange admin API {fake.exchange_base_url}); "
                  f"tenant config {tenant}; queries run at {SAMPLE_NOW.isoformat()}. Ctrl-C stops.",
                  flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                (stop or threading.Event()).wait()
    finally:
        live.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
