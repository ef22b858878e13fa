"""Benchmarks: ``python -m responder.bench --write BENCHMARKS.md`` (``make bench``).

One module per figure (time to remediate, pipeline overhead, remediation throughput, engine cost,
cold start); ``report`` writes them with the command and the machine they ran on. Timings are
measurements of this machine, never assertions: the test suite checks behaviour only.
"""
