"""Benign shapes from a busy real tenant that sit right beside the attacks the rules look for (issue 11).

Each class is what a shared mailbox's or an admin's ordinary day produces, and each is benign under the
classes the hardened rules count by (docs/rule-catalog.md):

* ``chatty-customer``: one consumer writes three or four times within the hour to ONE shared mailbox
  (one distinct protected mailbox is not a campaign), or to two shared mailboxes a day apart;
* ``auto-reply``: a consumer writes to a shared mailbox, the mailbox's auto-acknowledgement answers within
  seconds ("Automatic reply:", "Réponse automatique :", "Automatische Antwort:", with a ticket number),
  and the consumer follows up with a file-share link (a photo of the damaged parcel): no human replied,
  so the reply-chain rule is not armed;
* ``esp-newsletter``: the tenant's newsletter sent by an email service provider through a long-standing
  connector, header From ``news@news.<domain>`` and envelope ``bounce-…@bounce.<domain>`` (sibling
  subdomains of the tenant's domain: aligned under DMARC relaxed alignment), no SenderObjectId;
* ``sales-burst``: one salesperson mails about 60 external business customers, one message each, within
  an hour that straddles a clock-hour boundary (below the relay-burst threshold of 100 in any window);
* ``mistyped-password``: a user or admin fails three to five times and then signs in, the failures
  straddling a minute boundary, from one ISP and application.

Drawn from its own seeded stream (``Benign(random.Random(...))``) so the older background noise stays
byte-for-byte what it was; every consumer address is fresh, so no benign sender merges with a planted one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from devtools.sample.clock import Clock
from devtools.sample.model import DOMAIN, Person, Tenant
from devtools.sample.noise import CONSUMER_SUBJECTS, FILE_SHARE_URLS, Noise
from devtools.sample.rows import Mail, Recipient

CLASSES = ("chatty-customer", "auto-reply", "esp-newsletter", "sales-burst", "mistyped-password")
ESP_CONNECTOR = "Contoso Newsletter ESP"  # long-standing: no create/modify audit event in the sample
ESP_IP = "167.89.0.0"  # documentation-only stand-in for the ESP's sending range
ESP_BATCH = 60
AUTO_REPLY_PREFIXES = ("Automatic reply: ", "Réponse automatique : ", "Automatische Antwort: ")
CUSTOMER_DOMAINS = (
    "litware.com",
    "proseware.com",
    "wingtiptoys.com",
    "lucernepublishing.com",
    "margiestravel.com",
    "treyresearch.net",
    "coho.com",
    "wideworldimporters.com",
    "alpineskihouse.com",
    "bellowscollege.com",
    "fourthcoffee.com",
    "graphicdesigninstitute.com",
    "humongousinsurance.com",
    "blueyonderairlines.com",
)
SALES_SUBJECTS = (
    "Contoso spring offer for {company}",
    "Your Contoso account review",
    "Follow-up: {company} renewal",
)


@dataclass
class BenignRows:
    """What the benign classes added, per table, with the number of rows each class produced."""

    mails: list[Mail] = field(default_factory=list)
    logons: list[dict[str, Any]] = field(default_factory=list)
    rows_by_class: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    _classes: list[str] = field(default_factory=list)  # the class of each mail, in order

    @property
    def _mail_ids(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for mail, cls in zip(self.mails, self._classes, strict=True):
            if mail.network_message_id:  # given by finalize() when the tenant is written
                out.setdefault(cls, []).append(mail.network_message_id)
        return out

    def add_mail(self, cls: str, mails: list[Mail], span: Clock) -> None:
        if not mails or min(m.ts for m in mails) < span.start or max(m.ts for m in mails) > span.end:
            return  # a shape cut by the sample's edges would not be that shape any more
        self.mails += mails
        self._classes.extend([cls] * len(mails))
        self.rows_by_class[cls] += sum(len(m.recipients) for m in mails)

    def keys(self) -> dict[str, str]:
        """Network message id, connector, account object id or UPN (lower-case) -> the class behind it."""
        out = {ESP_CONNECTOR.lower(): "esp-newsletter"}
        for cls, ids in self._mail_ids.items():
            out.update(dict.fromkeys((i.lower() for i in ids), cls))
        for r in self.logons:
            out[r["AccountObjectId"].lower()] = out[r["AccountUpn"].lower()] = "mistyped-password"
        for m, c in zip(self.mails, self._classes, strict=True):
            if c == "sales-burst" and m.sender_object_id:
                out[m.sender_object_id.lower()] = out[m.header_from.lower()] = c
        return out

    def add_logons(self, cls: str, rows: list[dict[str, Any]]) -> None:
        self.logons += rows
        self.rows_by_class[cls] += len(rows)


class Benign:
    def __init__(self, rng: random.Random, tenant: Tenant, clock: Clock, now: datetime):
        self.rng, self.t, self.clock, self.now = rng, tenant, clock, now
        # Logon rows are shaped by the background's builder (one place knows the table's columns).
        self.noise = Noise(rng, tenant, clock, now)
        self._auto_replies = 0

    def generate(self) -> BenignRows:
        out = BenignRows()
        n_users = len(self.t.users)
        for day in self._days():
            for _ in range(2 + n_users // 200):
                out.add_mail("chatty-customer", self.chatty_one_mailbox(day), self.clock)
            for _ in range(1 + n_users // 500):
                out.add_mail("chatty-customer", self.chatty_two_mailboxes_a_day_apart(day), self.clock)
            for _ in range(2 + n_users // 250):
                out.add_mail("auto-reply", self.auto_reply_thread(day), self.clock)
            out.add_mail("esp-newsletter", self.esp_newsletter(day), self.clock)
            for _ in range(1 + n_users // 1000):
                out.add_mail("sales-burst", self.sales_burst(day), self.clock)
            for i in range(2 + n_users // 200):
                who = self.rng.choice(self.t.admins) if i == 0 else self.rng.choice(self.t.users)
                out.add_logons("mistyped-password", self.mistyped_password(day, who))
        return out

    def _days(self) -> list[datetime]:
        """Midnight of every calendar day the sample touches, the first and last (partial) ones included."""
        day = self.clock.start.replace(hour=0, minute=0, second=0, microsecond=0)
        out = []
        while day <= self.clock.end:
            out.append(day)
            day += timedelta(days=1)
        return out

    def _at(self, day: datetime, earliest_hour: int = 8, latest_hour: int = 17) -> datetime:
        """A moment in the day's office hours, inside the sample's span (clamped to its start)."""
        moment = day + timedelta(
            hours=self.rng.randint(earliest_hour, latest_hour - 1), seconds=self.rng.randrange(3600)
        )
        return max(moment, self.clock.start + timedelta(minutes=1))

    def _box(self) -> Person:
        return self.rng.choice(self.t.shared)

    def _subject(self) -> str:
        return self.rng.choice(CONSUMER_SUBJECTS)

    # --- mail ----------------------------------------------------------------------------------------

    def chatty_one_mailbox(self, day: datetime) -> list[Mail]:
        sender, box, subject = self.t.consumer_address(self.rng), self._box(), self._subject()
        start = self._at(day)
        mails, ts = [], start
        for i in range(self.rng.randint(3, 4)):
            mails.append(
                Mail(
                    ts,
                    sender,
                    sender,
                    None,
                    [Recipient(box.upn, box.object_id)],
                    subject if i == 0 else f"Re: {subject}",
                )
            )
            ts += timedelta(minutes=self.rng.randint(4, 18))
        return mails

    def chatty_two_mailboxes_a_day_apart(self, day: datetime) -> list[Mail]:
        sender, subject = self.t.consumer_address(self.rng), self._subject()
        first_box, second_box = self.rng.sample(self.t.shared, 2)
        first = self._at(day)
        later = first + timedelta(hours=self.rng.randint(23, 26), minutes=self.rng.randint(0, 59))
        return [
            Mail(first, sender, sender, None, [Recipient(first_box.upn, first_box.object_id)], subject),
            Mail(
                later,
                sender,
                sender,
                None,
                [Recipient(second_box.upn, second_box.object_id)],
                f"{subject} - still waiting",
            ),
        ]

    def auto_reply_thread(self, day: datetime) -> list[Mail]:
        sender, box, subject = self.t.consumer_address(self.rng), self._box(), self._subject()
        start = self._at(day)
        ticket = f"[Ticket #{self.rng.randint(100000, 999999)}]"
        # Languages in turn, so every sample has each of them.
        prefix = AUTO_REPLY_PREFIXES[self._auto_replies % len(AUTO_REPLY_PREFIXES)]
        self._auto_replies += 1
        inbound = Mail(start, sender, sender, None, [Recipient(box.upn, box.object_id)], subject)
        auto = Mail(
            start + timedelta(seconds=self.rng.randint(2, 25)),
            box.upn,
            box.upn,
            box.object_id,
            [Recipient(sender)],
            f"{prefix}{subject} {ticket}",
            sender_display=box.display,
            sender_ip="10.0.4.30",
        )
        follow = Mail(
            auto.ts + timedelta(minutes=self.rng.randint(3, 90)),
            sender,
            sender,
            None,
            [Recipient(box.upn, box.object_id)],
            f"Re: {subject} {ticket}",
            urls=[self.rng.choice(FILE_SHARE_URLS)],
        )
        return [inbound, auto, follow]

    def esp_newsletter(self, day: datetime) -> list[Mail]:
        start = day.replace(hour=7, minute=30)
        step = timedelta(hours=2) / ESP_BATCH
        subject = f"Contoso Weekly - {day:%d %B}"
        out = []
        for i in range(ESP_BATCH):
            ts = start + step * i
            if not self.clock.start <= ts <= self.clock.end:
                continue
            out.append(
                Mail(
                    ts,
                    f"bounce-{self.rng.getrandbits(40):010x}@bounce.{DOMAIN}",
                    f"news@news.{DOMAIN}",
                    None,
                    [Recipient(self.t.consumer_address(self.rng))],
                    subject,
                    sender_display="Contoso News",
                    connector=ESP_CONNECTOR,
                    sender_ip=ESP_IP,
                    urls=[f"https://news.{DOMAIN}/weekly?utm_source=esp"],
                    direction="Outbound",
                )
            )
        return out

    def sales_burst(self, day: datetime) -> list[Mail]:
        seller = self.rng.choice(self.t.users)
        # Start 20-40 minutes before a full hour, so a clock-hour bin sees only part of the burst.
        start = day + timedelta(hours=self.rng.randint(9, 15), minutes=self.rng.randint(20, 40))
        count = self.rng.randint(55, 65)
        out = []
        for i in range(count):
            company_domain = self.rng.choice(CUSTOMER_DOMAINS)
            contact = (
                f"{self.rng.choice(('purchasing', 'info', 'office', 'j.doe', 'a.miller'))}@{company_domain}"
            )
            company = company_domain.split(".")[0].title()
            out.append(
                Mail(
                    start + timedelta(seconds=55 * i + self.rng.randrange(5)),
                    seller.upn,
                    seller.upn,
                    seller.object_id,
                    [Recipient(contact)],
                    self.rng.choice(SALES_SUBJECTS).format(company=company),
                    sender_display=seller.display,
                    sender_ip="10.0.4.17",
                )
            )
        return out

    # --- logons --------------------------------------------------------------------------------------

    def mistyped_password(self, day: datetime, who: Person) -> list[dict[str, Any]]:
        # The first failure falls in the last 10 seconds of a minute, so the burst straddles the boundary.
        minute = self._at(day, 7, 11).replace(second=0, microsecond=0)
        ts = minute + timedelta(seconds=self.rng.randint(50, 56))
        app = self.rng.choice(("Microsoft 365", "Microsoft Exchange Online"))
        isp, loc, ip = self.rng.choice(
            (
                ("Contoso Networks", "Berlin, DE", "10.0.4.17"),
                ("Deutsche Telekom AG", "Munich, DE", "84.128.10.20"),
            )
        )
        rows = []
        for i in range(self.rng.randint(3, 5)):
            if i:
                ts += timedelta(seconds=self.rng.randint(4, 9))
            rows.append(
                self.noise._logon(ts, who, "LogonFailed", app, isp, loc, failure="InvalidPassword", ip=ip)
            )
        success = ts + timedelta(seconds=self.rng.randint(3, 8))  # the right password, seconds later
        rows.append(self.noise._logon(success, who, "LogonSuccess", app, isp, loc, ip=ip))
        if minute < self.clock.start or success > self.clock.end:
            return []
        return rows
