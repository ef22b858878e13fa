"""Everything that happens to a remediation request after it leaves the queue."""
