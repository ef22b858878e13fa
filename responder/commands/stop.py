"""``stop on|off|status``: the emergency stop (remediation/stop.py) from the command line.

It writes one row of the ledger's table, so it needs only the storage data role, no Graph permission and
no redeploy. Each worker instance sees a flip within 10 seconds.
"""

from __future__ import annotations

import argparse
import json
import sys

from azure.core.exceptions import AzureError

from core.settings import Settings
from remediation.stop import StopState, read_stop, set_stop
from responder.commands import UsageError, command
from responder.commands.remediate import _who
from responder.commands.storage import STORAGE_ENV, open_ledger, storage_failure


def register(subparsers: argparse._SubParsersAction) -> None:
    p = command(subparsers, "stop", help="the emergency stop: hold every action until it is cleared",
                description="`stop on --reason TEXT` holds every action (hold reason emergency_stop) until "
                            "`stop off`, without a redeploy; undo still runs. Requests held by the stop stay "
                            "held after it is cleared: approve them one by one (`ledger --hold-reason "
                            "emergency_stop` lists them). `stop status` shows who set it, when and why.",
                codes={0: "done (status: shown, on or off)", 1: "storage could not be reached",
                       2: "bad input or configuration"})
    p.add_argument("switch", choices=("on", "off", "status"))
    p.add_argument("--reason", default="", help="why (required for on; shown on every card)")
    p.add_argument("--by", default=None, help="who flips it (default: the login name)")
    p.add_argument("--storage", metavar="CONNECTION_STRING",
                   help=f"storage connection string (default: the {STORAGE_ENV} app setting, else "
                        "identity-based access to AzureWebJobsStorage__accountName)")
    p.add_argument("--table", metavar="NAME", help="ledger table (default: RESPONDER_LEDGER_TABLE)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_stop)


def _stop(args: argparse.Namespace) -> int:
    if args.switch == "on" and not args.reason.strip():
        raise UsageError("stop on needs --reason TEXT (it is shown on every card)")
    if args.switch == "status" and (args.reason or args.by):
        raise UsageError("stop status takes no --reason or --by")
    ledger = open_ledger(args, Settings.from_env(require=False))
    try:
        if args.switch == "status":
            state = read_stop(ledger)
        else:
            try:
                state = set_stop(ledger, args.switch == "on", _who(args), args.reason)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
    except AzureError as exc:
        raise storage_failure(exc, ledger) from None
    _print(state, as_json=args.json)
    return 0


def _print(state: StopState, *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(state.to_dict(), ensure_ascii=False) + "\n")
        return
    if state.on:
        print(state.describe())
    elif state.by:
        print(f"emergency stop is off (cleared by {state.by} at {state.at})")
    else:
        print("emergency stop is off")
