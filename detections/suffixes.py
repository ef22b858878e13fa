"""The multi-label public suffixes the connector-sender-mismatch rule uses to find organisational domains.

DMARC relaxed alignment compares organisational domains: the public suffix plus one label
(RFC 7489 section 3.2, which points at the Public Suffix List). news.contoso.co.uk and
bounce.contoso.co.uk share contoso.co.uk; a.co.uk and b.co.uk share only the suffix co.uk and are
not aligned. The rule only needs the suffixes with more than one label (a one-label suffix, the TLD,
is the default), and only those its mail can plausibly carry: Sentinel limits a rule's query to
10,000 characters (https://learn.microsoft.com/azure/sentinel/detect-threats-custom, "Rule query
best practices"), so the full ICANN list (about 3,500 two-label entries, 35 kB) cannot go in. The
reduction kept here: two-label ICANN suffixes whose second-level label is a generic commercial or
network category (co, com, net, org, ltd, plc, ne, or: co.uk, com.au, co.jp, ne.jp, ...), about
525 entries, 5 kB of query text. A tenant adds others (ac.uk, gov.uk, 3-label suffixes) with the
rule's ``public_suffixes`` parameter.

Source: the ``publicsuffixlist`` package (PyPI, pinned in requirements-dev.txt; code and bundled
list under MPL-2.0, list by Mozilla, https://publicsuffix.org/). Regenerate the rule's default
with ``python -m detections.suffixes`` after updating the pin; a test checks they agree.
"""

from __future__ import annotations

from importlib import resources

GENERIC_SECOND_LEVELS = frozenset({"co", "com", "net", "org", "ltd", "plc", "ne", "or"})


def icann_rules() -> list[str]:
    """The plain rules (no wildcards or exceptions) of the list's ICANN section, as written."""
    text = resources.files("publicsuffixlist").joinpath("public_suffix_list.dat").read_text(encoding="utf-8")
    section = text.split("===BEGIN ICANN DOMAINS===", 1)[1].split("===END ICANN DOMAINS===", 1)[0]
    rules = (line.strip() for line in section.splitlines())
    return [r for r in rules if r and not r.startswith(("//", "*", "!"))]


def org_suffixes() -> list[str]:
    """The reduced list (see the module docstring), sorted, ASCII only (mail domains in EmailEvents
    are A-labels)."""
    return sorted({
        r.lower() for r in icann_rules()
        if r.count(".") == 1 and r.isascii() and r.split(".", 1)[0] in GENERIC_SECOND_LEVELS
    })


if __name__ == "__main__":
    import json

    print("default: " + json.dumps(org_suffixes(), separators=(", ", ": ")))
