"""The small shared core every other package may import: settings, tenant config, the
remediation-request contract, the Graph client factory and shared helpers. It imports nothing of ours."""
