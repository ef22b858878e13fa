"""``python -m responder sandbox``: Azurite, the fake Graph and the approval page on one machine, with
held requests to decide, until Ctrl-C (devtools/sandbox.py; docs/sandbox.md)."""

from __future__ import annotations

import argparse
import gc
import shlex
import sys
import time

from responder.commands import command


def register(subparsers: argparse._SubParsersAction) -> None:
    p = command(
        subparsers,
        "sandbox",
        help="a local sandbox: Azurite, fake Graph, the approval page and held requests, until Ctrl-C",
        description="Start Azurite, the fake Graph and Exchange and the approval page (signed in as a test "
        "person you choose), load the sample tenant, scan it once so there are held requests, run the "
        "worker over the queue, and print the URLs and the environment for the CLI. Ctrl-C stops it all.",
        codes={0: "stopped with Ctrl-C", 1: "something failed to start", 2: "bad input"},
    )
    p.add_argument("--as", dest="upn", default=None, metavar="UPN",
                   help="the signed-in person the page sees (default: oncall@contoso.com)")
    p.add_argument("--group", default=None, metavar="ID",
                   help="the on-call group object id, which the signed-in person is in")
    p.add_argument("--port", type=int, default=0, metavar="N",
                   help="the approval page's port (default: a free one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from devtools.sandbox import DEFAULT_GROUP, DEFAULT_UPN, running_sandbox

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port: {args.port} is not a TCP port")

    def say(text: str) -> None:
        print(f"... {text}", file=sys.stderr, flush=True)

    try:
        with running_sandbox(args.upn or DEFAULT_UPN, args.group or DEFAULT_GROUP, args.port, say) as (sb, _):
            out = [f"Approval page (signed in as {args.upn or DEFAULT_UPN}):"]
            out += [f"  held request: {sb.page_url}/requests/{rid}" for rid in sb.held]
            out += [f"  run:          {sb.page_url}/runs/{rid}" for rid in sb.run_ids]
            out += [f"Fake Graph:     {sb.graph_url}",
                    f"Records:        {sb.records} (ledger.json, graph-accounts.json: written on Ctrl-C)",
                    "",
                    "For the CLI (python -m responder ledger | approve ID | stop status), in another shell:"]
            out += [f"export {k}={shlex.quote(v)}" for k, v in sb.env.items()]
            out += ["", "The worker runs here: what you approve is done on the fake Graph. Ctrl-C stops all."]
            print("\n".join(out), flush=True)
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        gc.collect()   # the fake Graph's cycles hold DuckDB: collected now, no leak report at exit
    return 0
