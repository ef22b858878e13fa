"""``python -m responder.bench``: the benchmarks live in devtools.bench; this package only keeps the
command name (issues 13/15 and BENCHMARKS.md use it)."""
