"""Test and demo infrastructure that is real, just local: Azurite, the fake Graph, webhook sinks."""
