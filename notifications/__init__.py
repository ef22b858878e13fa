"""Tell on-call in Teams: Adaptive Card builders (``cards``), their inputs (``reports``), and senders
(``teams``: Workflows webhook, file, memory, null). Rendering to PNG is a dev tool (devtools.cardrender)."""
