"""Development tools, never deployed: the fake Graph and Exchange, Azurite runner, webhook sink,
local Graph, sample tenant, demo, benchmarks and the card rendering harness."""
