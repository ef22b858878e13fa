"""``python -m responder.bench [NAME]... [--write BENCHMARKS.md] [--only NAME]... [--moves N] [--trials N]``.

``python -m responder.bench quality`` runs only the detection-quality section (as ``--only quality``).
``python -m responder.bench chaos [--requests N] [--fault-rate R] ... [--json]`` is the fault-injection
harness on its own (devtools/bench/chaos.py, its own options); in a full run (``make bench``) its table
is the section ``chaos``, at ``--chaos-requests`` (500) and ``--chaos-fault-rate`` (0.3).
``python -m responder.bench ttr --json [--trials N]`` prints only the time-to-remediate variants as JSON
(``{"variants": [...]}``, issue 15's shape) instead of the report."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from devtools.bench import machine, report

NAMES = ("ttr", "pipeline", "throughput", "engine", "coldstart", "quality", "chaos")


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["chaos"] and not any(a.startswith("--write") for a in args_in):
        from devtools.bench import chaos

        return chaos.main(args_in[1:])
    p = argparse.ArgumentParser(prog="python -m responder.bench", description="Run the benchmarks.")
    p.add_argument("--write", type=Path, metavar="FILE", help="write the Markdown report here")
    p.add_argument(
        "--append",
        action="store_true",
        help="add this run's report to the end of FILE instead of replacing it (e.g. a long run "
        "of one benchmark beside the regular ones)",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help=f"run only these ({', '.join(NAMES)})")
    p.add_argument("--only", action="append", choices=NAMES, help="run only these (repeatable)")
    p.add_argument(
        "--quality-size",
        default="large",
        choices=("small", "medium", "large"),
        help="sample tenant the detection-quality section scans (default large)",
    )
    p.add_argument("--trials", type=int, default=30, help="time-to-remediate trials (default 30)")
    p.add_argument("--push-trials", type=int, default=1000,
                   help="time-to-remediate traces for the push variants alone (default 1000; the first "
                   "--trials of them are the ones every variant runs)")
    p.add_argument("--json", action="store_true",
                   help='with ttr alone: print {"variants": [...]} as JSON instead of the report')
    p.add_argument("--moves", type=int, default=10_000, help="throughput moves, spread over 100 mailboxes")
    p.add_argument("--engine-sizes", default="10000,100000,1000000", help="EmailEvents rows, comma-separated")
    p.add_argument("--chaos-requests", type=int, default=500, help="chaos harness requests per scenario")
    p.add_argument("--chaos-fault-rate", type=float, default=0.3, help="chaos harness fault rate")
    p.add_argument("--chaos-workers", type=int, default=4, help="chaos harness worker processes")
    args = p.parse_args(argv)
    argv_used = sys.argv[1:] if argv is None else argv
    command = "python -m responder.bench " + " ".join(shlex.quote(a) for a in argv_used)
    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        p.error(f"unknown benchmark {unknown[0]!r} (choose from {', '.join(NAMES)})")
    selected = list(dict.fromkeys([*args.names, *(args.only or [])])) or list(NAMES)
    if args.json and (selected != ["ttr"] or args.write):
        p.error("--json prints the ttr benchmark alone: `python -m responder.bench ttr --json`")
    results: dict[str, Any] = {}
    start = time.perf_counter()
    for name in selected:
        t0 = time.perf_counter()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        results[name] = _run(name, args)
        print(f"bench: {name} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - start
    if args.json:
        sys.stdout.write(json.dumps({"variants": results["ttr"]["variants"]}, default=str) + "\n")
        return 0
    text = report.render(results, command=command.strip(), machine=machine.describe(), elapsed_s=elapsed)
    if args.write and args.append and args.write.exists():
        previous = args.write.read_text(encoding="utf-8").rstrip()
        extra = text.replace("# Benchmarks", "# Benchmarks: additional run", 1)
        args.write.write_text(previous + "\n\n---\n\n" + extra, encoding="utf-8")
        print(f"bench: appended to {args.write}", file=sys.stderr)
    elif args.write:
        args.write.write_text(text, encoding="utf-8")
        print(f"bench: wrote {args.write}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    print(json.dumps(results, default=str), file=sys.stderr) if not args.write else None
    return 0


def _run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    if name == "ttr":
        from devtools.bench import ttr

        return ttr.run(args.trials, push_trials=args.push_trials)
    if name == "pipeline":
        from devtools.bench import pipeline

        return pipeline.run()
    if name == "throughput":
        from devtools.bench import throughput

        return throughput.run(100, max(1, args.moves // 100))
    if name == "engine":
        from devtools.bench import engine

        return engine.run(tuple(int(s) for s in args.engine_sizes.split(",")))
    if name == "quality":
        from devtools.bench import quality

        return quality.run(args.quality_size)
    if name == "chaos":
        from devtools.bench import chaos

        result = chaos.run(requests=args.chaos_requests, rate=args.chaos_fault_rate,
                           workers=args.chaos_workers)
        for scenario in result["scenarios"]:
            scenario.pop("ids", None)
        result["command"] = (f"python -m responder.bench chaos --requests {args.chaos_requests} "
                             f"--fault-rate {args.chaos_fault_rate} --workers {args.chaos_workers}")
        return result
    from devtools.bench import coldstart

    return coldstart.run()


if __name__ == "__main__":
    sys.exit(main())
