"""Tell on-call in Teams: Adaptive Card builders (``cards``), their inputs (``reports``), and senders
(``teams``: Workflows webhook, file, memory, null), and ``reporter``: the worker's OutcomeReporter as
Teams cards. ``render`` draws cards in headless Chromium."""
