"""Card rendering harness (dev only): example cards and headless-Chromium PNG rendering."""
