"""The fault-injection harness behind ``python -m responder.bench chaos`` (docs/remediation.md,
"Fault-injection harness"): a fake Graph/Exchange that fails at random and counts what it applied
(fake.py), a flaky Table-storage client for the ledger (ledgerfaults.py), the request mix (workload.py),
a queue host that drives ``Worker.process_message`` like the Functions host (host.py) and the judge
(judge.py). Never deployed.
"""
