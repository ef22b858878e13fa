"""``python -m devtools.sample OUT_DIR [--size small|medium|large] [--seed N] [--email-events N]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devtools.sample import DEFAULT_SEED, SIZES, generate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.sample", description="Write the sample tenant.")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument(
        "--email-events", type=int, default=None, help="exact EmailEvents row count (<= 1,000,000)"
    )
    args = p.parse_args(argv)
    g = generate(args.out_dir, size=args.size, seed=args.seed, email_events=args.email_events)
    for table, n in g.counts.items():
        print(f"{table}: {n} rows", file=sys.stderr)
    print(g.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
