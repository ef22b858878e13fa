"""``python -m responder demo``: run the whole pipeline on the embedded sample tenant (devtools/demo.py)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import sys
from pathlib import Path

from devtools.sample import DEFAULT_SEED, SIZES
from responder.commands import command


def register(subparsers: argparse._SubParsersAction) -> None:
    p = command(
        subparsers,
        "demo",
        help="run scan -> queue -> worker -> verify -> cards on the embedded sample tenant",
        description="Generate the sample tenant, start Azurite and the fake Graph, run every rule through "
        "the defender backend, remediate through the queue and the worker, verify, write Teams cards, "
        "and compare the outcome with the tenant's truth file.",
        codes={0: "every planted attack was found and nothing else was flagged", 1: "otherwise",
               2: "bad input"},
    )
    p.add_argument("--tenant-size", choices=list(SIZES), default="small")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=argparse.SUPPRESS)
    p.add_argument(
        "--output",
        type=Path,
        default=Path("demo-output"),
        metavar="DIR",
        help="where the tenant, cards, ledger and summary go (default: ./demo-output, replaced on each run)",
    )
    p.add_argument("--no-render", action="store_true", help="do not render the cards to PNG")
    p.add_argument("--no-azurite", action="store_true", help="use the in-process queue and ledger")
    p.add_argument("--json", action="store_true", help="print only the summary as JSON on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from devtools.demo import DemoOptions, run_demo
    from devtools.demo_summary import print_summary, summarize
    from responder.commands import console as rich_console

    output = args.output
    for sub in ("tenant", "cards", "push"):  # a re-run starts from a fresh tenant, writes only its own cards
        if (output / sub).exists():
            shutil.rmtree(output / sub)
    options = DemoOptions(
        size=args.tenant_size,
        seed=args.seed,
        output=output,
        render=not args.no_render,
        use_azurite=not args.no_azurite,
    )
    err = rich_console(stderr=True)
    with err.status("starting", spinner="dots") as status:

        def step(text: str) -> None:
            err.log(text)
            status.update(text)

        result = asyncio.run(run_demo(options, step))
    summary = summarize(result)
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        print_summary(summary, rich_console())
        rich_console().print(f"Everything is in {output}")
    ok = summary["truth"]["missed"] == 0 and summary["truth"]["false_positives"] == 0
    # The fake Graph's server objects sit in reference cycles that still hold the local engine's DuckDB
    # connection; collected here, DuckDB's bindings do not print leak reports at interpreter exit.
    del result
    gc.collect()
    return 0 if ok else 1
