"""Background activity that no rule may flag.

Each shape here sits just on the harmless side of a rule on purpose, so a rule that over-matches
shows up as a false positive in the demo and its tests:

* consumer senders who write to one shared mailbox (at most two copies each: the correlation rule
  needs strictly more than two), some of them answered by the mailbox, some following up with a
  link that is not a file-sharing site, a file-share link without any reply, a file-share link that
  was already junked, or a look-alike domain (``notdropbox.com``, ``dropbox.com.example.net``);
* partners answered by a shared mailbox and sending a SharePoint link (not a consumer sender);
* internal mail, partner mail in and out, spam already in Junk;
* newsletters sent as ``news@`` through a long-standing inbound connector: P1 and P2 domains
  differ (bounce domain) but the sender is a real mailbox (SenderObjectId set), volume per hour
  stays below the connector thresholds;
* normal user and admin activity in CloudAppEvents (no connector cmdlets: the one legitimate
  connector change is planted separately, see ``attacks.benign_connector_change``);
* normal logons, with the odd one to three failed attempts before a success.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from devtools.sample.clock import Clock
from devtools.sample.model import DOMAIN, NEWSLETTER_CONNECTOR, PARTNER_CONNECTOR, Person, Tenant, new_guid
from devtools.sample.rows import Mail, Recipient, iso

INTERNAL_SUBJECTS = (
    "Weekly sync notes",
    "Re: Q4 budget",
    "Lunch on Friday?",
    "Updated slides",
    "Re: travel plan",
    "Draft contract review",
    "Team offsite",
    "Re: customer escalation",
    "Timesheet reminder",
)
PARTNER_SUBJECTS = (
    "Invoice {n}",
    "Re: delivery schedule",
    "Purchase order {n}",
    "Meeting notes",
    "Re: pricing",
    "Shipment {n} confirmation",
)
CONSUMER_SUBJECTS = (
    "Question about my order",
    "Job application",
    "Refund request",
    "Where is my parcel?",
    "Opening hours",
    "Invoice question",
    "Complaint about delivery",
    "Change my address",
)
SPAM_SUBJECTS = ("You won a prize", "Cheap meds online", "Crypto opportunity", "Your account is on hold")
NEWSLETTER_SUBJECTS = ("Contoso News: November", "Contoso product update", "Contoso webinar invitation")
SPAM_DOMAINS = ("promo-deals.biz", "win-now.top", "bulkmailer.xyz", "crypto-gains.click")
# Links in noise: shared sites that are NOT file-sharing services, and look-alikes that only contain a
# file-sharing name (the reply-chain rule must not match them).
BENIGN_URLS = (
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
    "https://maps.google.com/?q=contoso",
    "https://www.linkedin.com/in/someone",
    "https://notdropbox.com/offer",
    "https://dropbox.com.example.net/login",
    "https://www.instagram.com/p/abc123",
)
FILE_SHARE_URLS = (
    "https://www.dropbox.com/s/q1w2e3/receipt.pdf?dl=0",
    "https://drive.google.com/file/d/1AbCdEf/view",
    "https://we.tl/t-AbCd1234",
)
# The daily newsletter: one message per subscriber, spread over 2 hours, so about 30 an hour through
# its connector: under the connector-volume threshold (100 an hour) and any sane burst threshold.
NEWSLETTER_BATCH = 60
NEWSLETTER_SPREAD = timedelta(hours=2)


class Noise:
    def __init__(self, rng: random.Random, tenant: Tenant, clock: Clock, now: datetime):
        self.rng, self.t, self.clock, self.now = rng, tenant, clock, now

    # --- mail -------------------------------------------------------------------------------------

    def mail_stream(self) -> Iterator[Mail]:
        """Endless background mail, in no particular time order (the writer sorts)."""
        kinds: list[tuple[Callable[[], list[Mail]], int]] = [
            (self.internal, 40),
            (self.partner_in, 14),
            (self.partner_out, 12),
            (self.consumer_single, 9),
            (self.consumer_thread, 4),
            (self.partner_thread, 2),
            (self.spam, 6),
            (self.vendor_newsletter, 5),
        ]
        funcs = [k for k, _ in kinds]
        weights = [w for _, w in kinds]
        while True:
            yield from self.rng.choices(funcs, weights=weights)[0]()

    def _user(self) -> Person:
        return self.rng.choice(self.t.users)

    def _rcpt(self, p: Person, location: str | None = None) -> Recipient:
        return Recipient(p.upn, p.object_id, location)

    def internal(self) -> list[Mail]:
        sender = self._user()
        to = {
            p.upn: p for p in self.rng.sample(self.t.users, k=min(len(self.t.users), self.rng.randint(1, 4)))
        }
        to.pop(sender.upn, None)
        if not to:
            return []
        return [
            Mail(
                self.clock.business(),
                sender.upn,
                sender.upn,
                sender.object_id,
                [self._rcpt(p) for p in to.values()],
                self.rng.choice(INTERNAL_SUBJECTS),
                sender_display=sender.display,
                sender_ip="10.0.4.17",
            )
        ]

    def _partner(self) -> str:
        return self.rng.choice(self.t.partners[self.rng.choice(list(self.t.partners))])

    def _subject(self, options: tuple[str, ...]) -> str:
        return self.rng.choice(options).format(n=self.rng.randint(10000, 99999))

    def partner_in(self) -> list[Mail]:
        sender = self._partner()
        mail = Mail(
            self.clock.business(),
            sender,
            sender,
            None,
            [self._rcpt(self._user()) for _ in range(self.rng.randint(1, 2))],
            self._subject(PARTNER_SUBJECTS),
            sender_ip="198.51.100.20",
        )
        if "fabrikam.com" in sender:
            mail.connector = PARTNER_CONNECTOR  # partner mail arrives over its TLS connector
        if self.rng.random() < 0.3:
            mail.attachments = [
                (f"{mail.subject.replace(' ', '_')}.pdf", "pdf", self.rng.randint(40_000, 400_000))
            ]
        if self.rng.random() < 0.2:
            mail.urls = [f"https://{sender.split('@')[1].split('.')[0]}.sharepoint.com/sites/share/Doc.aspx"]
        return [mail]

    def partner_out(self) -> list[Mail]:
        sender = self._user()
        rcpts = [Recipient(self._partner()) for _ in range(self.rng.randint(1, 2))]
        return [
            Mail(
                self.clock.business(),
                sender.upn,
                sender.upn,
                sender.object_id,
                rcpts,
                self._subject(PARTNER_SUBJECTS),
                sender_display=sender.display,
                sender_ip="10.0.4.17",
            )
        ]

    def _shared(self) -> Person:
        return self.rng.choice(self.t.shared)

    def consumer_single(self) -> list[Mail]:
        """A consumer writes to one shared mailbox, once or twice (two copies never exceed threshold 2)."""
        sender, box = self.t.consumer_address(self.rng), self._shared()
        first = self.clock.business()
        mails = [Mail(first, sender, sender, None, [self._rcpt(box)], self._subject(CONSUMER_SUBJECTS))]
        if self.rng.random() < 0.25:  # a second copy, to another shared mailbox half the time
            other = self._shared() if self.rng.random() < 0.5 else box
            mails.append(
                Mail(
                    first + timedelta(minutes=self.rng.randint(2, 50)),
                    sender,
                    sender,
                    None,
                    [self._rcpt(other)],
                    "Re: " + mails[0].subject,
                )
            )
        return mails

    def consumer_thread(self) -> list[Mail]:
        """Consumer -> shared mailbox -> reply -> follow-up that the reply-chain rule must NOT flag."""
        sender, box = self.t.consumer_address(self.rng), self._shared()
        start = self.clock.business()
        subject = self._subject(CONSUMER_SUBJECTS)
        variant = self.rng.randrange(4)
        first = Mail(start, sender, sender, None, [self._rcpt(box)], subject)
        reply = Mail(
            start + timedelta(minutes=self.rng.randint(10, 240)),
            box.upn,
            box.upn,
            box.object_id,
            [Recipient(sender)],
            "Re: " + subject,
            sender_display=box.display,
            sender_ip="10.0.4.30",
        )
        follow = Mail(
            reply.ts + timedelta(minutes=self.rng.randint(5, 600)),
            sender,
            sender,
            None,
            [self._rcpt(box)],
            "Re: Re: " + subject,
        )
        if variant == 0:  # a reply and a follow-up without links
            return [first, reply, follow]
        if variant == 1:  # a follow-up with a link that is not a file-sharing service (or a look-alike)
            follow.urls = [self.rng.choice(BENIGN_URLS)]
            return [first, reply, follow]
        if variant == 2:  # a file-share link but the mailbox never replied
            follow.urls = [self.rng.choice(FILE_SHARE_URLS)]
            follow.ts = start + timedelta(minutes=self.rng.randint(5, 300))
            return [first, follow]
        # a file-share link after a reply, already junked by the filter: nothing left to do
        follow.urls = [self.rng.choice(FILE_SHARE_URLS)]
        follow.delivery_location = "Junk folder"
        follow.threat = "Spam"
        return [first, reply, follow]

    def partner_thread(self) -> list[Mail]:
        """A partner answered by a shared mailbox sends a file-share link: not a consumer sender."""
        sender, box = self._partner(), self._shared()
        start = self.clock.business()
        return [
            Mail(
                start,
                box.upn,
                box.upn,
                box.object_id,
                [Recipient(sender)],
                "Documents for the audit",
                sender_display=box.display,
                sender_ip="10.0.4.30",
            ),
            Mail(
                start + timedelta(minutes=self.rng.randint(20, 300)),
                sender,
                sender,
                None,
                [self._rcpt(box)],
                "Re: Documents for the audit",
                urls=["https://www.dropbox.com/scl/fi/abc/audit.zip?dl=0"],
            ),
        ]

    def spam(self) -> list[Mail]:
        domain = self.rng.choice(SPAM_DOMAINS)
        sender = f"offers{self.rng.randint(1, 999)}@{domain}"
        return [
            Mail(
                self.clock.business(),
                sender,
                sender,
                None,
                [self._rcpt(self._user(), "Junk folder")],
                self.rng.choice(SPAM_SUBJECTS),
                sender_ip="192.0.2.66",
                delivery_location="Junk folder",
                threat="Spam",
                urls=[f"https://{domain}/click?id={self.rng.randint(1, 10**6)}"],
            )
        ]

    def vendor_newsletter(self) -> list[Mail]:
        sender = f"newsletter@{self.rng.choice(('techweekly.example', 'industry-digest.example'))}"
        return [
            Mail(
                self.clock.business(),
                f"bounce@mail.{sender.split('@')[1]}",
                sender,
                None,
                [self._rcpt(self._user())],
                "This week in tech",
                urls=[f"https://{sender.split('@')[1]}/issue/{self.rng.randint(1, 500)}"],
            )
        ]

    def newsletters(self) -> list[Mail]:
        """Contoso's own newsletter, every morning at 09:00: one batch per day, whatever the tenant's size."""
        out: list[Mail] = []
        day = self.clock.start.replace(hour=9, minute=0, second=0, microsecond=0)
        while day < self.now:
            if day >= self.clock.start:
                out += self.newsletter_batch(day)
            day += timedelta(days=1)
        return out

    def newsletter_batch(self, start: datetime) -> list[Mail]:
        """One message per external subscriber, through the marketing relay, spread over two hours."""
        subject = self.rng.choice(NEWSLETTER_SUBJECTS)
        step = NEWSLETTER_SPREAD / NEWSLETTER_BATCH
        news = self.t.marketing
        out = []
        for i in range(NEWSLETTER_BATCH):
            subscriber = self.t.consumer_address(self.rng)
            ts = start + step * i
            if ts > self.now - timedelta(minutes=1):
                break
            out.append(
                Mail(
                    ts,
                    f"bounces@mail.{DOMAIN}",
                    news.upn,
                    news.object_id,
                    [Recipient(subscriber)],
                    subject,
                    sender_display=news.display,
                    connector=NEWSLETTER_CONNECTOR,
                    sender_ip="198.51.100.77",
                    urls=[f"https://www.{DOMAIN}/news?src=mail"],
                )
            )
        return out

    # --- CloudAppEvents ---------------------------------------------------------------------------

    def cloud_app_events(self, per_user_per_day: float) -> list[dict[str, Any]]:
        rows = []
        n = int(len(self.t.users) * self.clock.days * per_user_per_day)
        user_actions = (
            ("MailItemsAccessed", "Microsoft Exchange Online", "Mailbox"),
            ("Send", "Microsoft Exchange Online", "Mailbox"),
            ("FileAccessed", "Microsoft SharePoint Online", "File"),
            ("FileModified", "Microsoft SharePoint Online", "File"),
            ("MessageSent", "Microsoft Teams", "Chat"),
        )
        for _ in range(n):
            user = self._user()
            action, app, obj = self.rng.choice(user_actions)
            rows.append(
                self._cae(
                    self.clock.business(), user, action, app, obj, admin=False, params=None, ip="10.0.4.17"
                )
            )
        admin_ops = (
            ("Set-Mailbox", "Identity"),
            ("Add-MailboxPermission", "Identity"),
            ("Set-DistributionGroup", "Identity"),
            ("Set-CASMailbox", "Identity"),
            ("Update-DistributionGroupMember", "Identity"),
            ("Set-MailboxAutoReplyConfiguration", "Identity"),
        )
        for _ in range(max(6, self.clock.days * 8)):
            admin = self.rng.choice(self.t.admins)
            op, key = self.rng.choice(admin_ops)
            target = self.rng.choice(self.t.shared + self.t.users).upn
            rows.append(
                self._cae(
                    self.clock.business(),
                    admin,
                    op,
                    "Microsoft Exchange Online",
                    "Mailbox",
                    admin=True,
                    params=[{"Name": key, "Value": target}],
                    ip="10.0.2.5",
                )
            )
        return rows

    def _cae(
        self,
        ts: datetime,
        who: Person,
        action: str,
        app: str,
        obj_type: str,
        *,
        admin: bool,
        params: list[dict[str, str]] | None,
        ip: str,
        country: str = "DE",
        isp: str = "Contoso Networks",
        object_name: str | None = None,
    ) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "Operation": action,
            "UserId": who.upn,
            "ClientIP": ip,
            "Workload": app.replace("Microsoft ", ""),
        }
        if params is not None:
            raw["Parameters"] = params
            object_name = object_name or next(
                (p["Value"] for p in params if p["Name"] in ("Name", "Identity")), None
            )
        return {
            "Timestamp": iso(ts),
            "ActionType": action,
            "Application": app,
            "ApplicationId": 20893 if "Exchange" in app else 20892 if "SharePoint" in app else 11394,
            "AccountObjectId": who.object_id,
            "AccountId": who.object_id,
            "AccountDisplayName": who.display,
            "IsAdminOperation": admin,
            "IPAddress": ip,
            "IsAnonymousProxy": False,
            "CountryCode": country,
            "City": "Berlin" if country == "DE" else None,
            "ISP": isp,
            "UserAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
            "ActivityType": "Edit" if admin else "Basic",
            "ObjectName": object_name,
            "ObjectType": obj_type,
            "ReportId": new_guid(self.rng),
            "AccountType": "Admin" if admin else "Regular",
            "IsExternalUser": False,
            "IsImpersonated": False,
            "RawEventData": raw,
            "ActivityObjects": [{"Type": obj_type, "Name": object_name}] if object_name else [],
        }

    # --- IdentityLogonEvents ----------------------------------------------------------------------

    def logons(self) -> list[dict[str, Any]]:
        rows = []
        people = self.t.users + self.t.admins + [self.t.compromised_admin]
        for day in range(self.clock.calendar_days):
            base = self.clock.start.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=day)
            for p in people:
                if self.rng.random() < 0.15:
                    continue  # not every account signs in every day
                ts = base + timedelta(
                    hours=self.rng.choice((7, 8, 8, 9, 9, 10, 13)), seconds=self.rng.randrange(3600)
                )
                if not self.clock.start <= ts <= self.now:
                    continue
                app = self.rng.choice(("Microsoft 365", "Microsoft Exchange Online", "Active Directory"))
                isp, loc = self.rng.choice(
                    (
                        ("Contoso Networks", "Berlin, DE"),
                        ("Deutsche Telekom AG", "Munich, DE"),
                        ("Vodafone GmbH", "Hamburg, DE"),
                    )
                )
                if self.rng.random() < 0.06:  # mistyped password once to three times, then in
                    for k in range(self.rng.randint(1, 3)):
                        rows.append(
                            self._logon(
                                ts - timedelta(seconds=30 * (k + 1)),
                                p,
                                "LogonFailed",
                                app,
                                isp,
                                loc,
                                failure="InvalidPassword",
                            )
                        )
                rows.append(self._logon(ts, p, "LogonSuccess", app, isp, loc))
        return rows

    def _logon(
        self,
        ts: datetime,
        p: Person,
        action: str,
        app: str,
        isp: str,
        location: str,
        *,
        failure: str | None = None,
        ip: str = "10.0.4.17",
    ) -> dict[str, Any]:
        return {
            "Timestamp": iso(ts),
            "ActionType": action,
            "Application": app,
            "LogonType": "Interactive" if app == "Active Directory" else "OAuth2:Token",
            "Protocol": "Kerberos" if app == "Active Directory" else "OAuth2",
            "FailureReason": failure,
            "AccountName": p.upn.split("@")[0],
            "AccountDomain": DOMAIN,
            "AccountUpn": p.upn,
            "AccountSid": p.sid,
            "AccountObjectId": p.object_id,
            "AccountDisplayName": p.display,
            "DeviceName": None,
            "IPAddress": ip,
            "Port": None,
            "Location": location,
            "ISP": isp,
            "ReportId": new_guid(self.rng),
            "AdditionalFields": {},
        }
