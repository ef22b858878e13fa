"""The sample tenant's cast: who works there, who writes to it, which connectors exist.

Everything is drawn from one seeded ``random.Random`` so the same seed always gives the same
tenant. Names are plain and fictional (Contoso, Fabrikam: Microsoft's documentation domains).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

# The demo's clock: every scan of the sample tenant runs "now" at this instant, so results are
# reproducible. It matches the `now` of the rules' own test cases.
SAMPLE_NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

DOMAIN = "contoso.com"
# Shared mailboxes that consumers legitimately write to; the rules protect all of them.
SHARED_MAILBOXES = ("support", "sales", "info", "jobs", "billing", "hr")
PARTNER_DOMAINS = (
    "fabrikam.com",
    "northwindtraders.com",
    "adatum.com",
    "tailspintoys.com",
    "woodgrovebank.com",
)
CONSUMER_DOMAINS = ("gmail.com", "outlook.com", "hotmail.com", "yahoo.com", "icloud.com", "gmx.de", "web.de")
FIRST = (
    "anna",
    "ben",
    "carla",
    "david",
    "emma",
    "felix",
    "grace",
    "henry",
    "isla",
    "jonas",
    "kate",
    "liam",
    "maria",
    "noah",
    "olivia",
    "paul",
    "quinn",
    "rosa",
    "sam",
    "tara",
    "umar",
    "vera",
    "will",
    "yara",
)
LAST = (
    "smith",
    "jones",
    "keller",
    "novak",
    "garcia",
    "chen",
    "okafor",
    "larsen",
    "rossi",
    "meyer",
    "dubois",
    "silva",
    "kowalski",
    "nguyen",
    "haddad",
    "murphy",
)

# Connectors that exist before the sample's days begin (created long ago: no audit event in range).
NEWSLETTER_CONNECTOR = "Contoso Marketing Relay"
PARTNER_CONNECTOR = "Fabrikam Partner TLS"


def new_guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass(frozen=True)
class Person:
    upn: str
    display: str
    object_id: str
    sid: str = ""


@dataclass
class Tenant:
    users: list[Person]
    shared: list[Person]
    admins: list[Person]  # Exchange / Entra admins doing normal work
    compromised_admin: Person  # the admin whose password is sprayed (attack)
    break_glass: Person
    marketing: Person  # the mailbox newsletters are sent as
    partners: dict[str, list[str]]  # partner domain -> external contact addresses
    consumer_counter: dict[str, int] = field(default_factory=dict)

    @property
    def protected(self) -> list[str]:
        return [p.upn for p in self.shared]

    def internal(self) -> list[Person]:
        return self.users + self.admins

    def consumer_address(self, rng: random.Random, domain: str | None = None) -> str:
        """A consumer address never handed out before (unique per call, so noise senders never merge)."""
        domain = domain or rng.choice(CONSUMER_DOMAINS)
        base = f"{rng.choice(FIRST)}.{rng.choice(LAST)}"
        n = self.consumer_counter.get(base, 0) + 1
        self.consumer_counter[base] = n
        return f"{base}{n}{rng.randint(10, 99)}@{domain}"


def _person(rng: random.Random, local: str, display: str) -> Person:
    sid = f"S-1-5-21-1004336348-1177238915-682003330-{rng.randint(1100, 99999)}"
    return Person(upn=f"{local}@{DOMAIN}", display=display, object_id=new_guid(rng), sid=sid)


def build_tenant(rng: random.Random, n_users: int) -> Tenant:
    users: list[Person] = []
    seen: set[str] = set()
    while len(users) < n_users:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        local = f"{first}.{last}"
        if local in seen:
            local = f"{local}{len(users)}"
        seen.add(local)
        users.append(_person(rng, local, f"{first.title()} {last.title()}"))
    shared = [_person(rng, name, f"Contoso {name.title()}") for name in SHARED_MAILBOXES]
    admins = [
        _person(rng, "adm-ines.vogel", "Ines Vogel (admin)"),
        _person(rng, "adm-omar.haddad", "Omar Haddad (admin)"),
    ]
    compromised = _person(rng, "adm-jordan.price", "Jordan Price (admin)")
    partners = {d: [f"{rng.choice(FIRST)}.{rng.choice(LAST)}@{d}" for _ in range(4)] for d in PARTNER_DOMAINS}
    return Tenant(
        users=users,
        shared=shared,
        admins=admins,
        compromised_admin=compromised,
        break_glass=_person(rng, "breakglass", "Break Glass"),
        marketing=_person(rng, "news", "Contoso News"),
        partners=partners,
    )
