"""Planted attacks (and one legitimate change that looks like one), placed relative to ``now``.

Each planter returns the rows it adds plus a ``Plant`` record naming the artefacts a rule should
find (message copies, connector, account). ``truth.py`` turns those records into per-rule
expectations; nothing here knows which rule finds what.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from devtools.sample.model import PARTNER_CONNECTOR, Person, Tenant
from devtools.sample.noise import Noise
from devtools.sample.rows import Mail, Recipient

ATTACKER_IP = "185.220.101.47"
ATTACKER_ISP = "Shady Hosting Ltd"
ATTACKER_LOCATION = "Unknown, NL"
MALICIOUS_CONNECTOR = "Inbound relay - partner sync"
FILE_SHARE_LINK = "https://dl.dropboxusercontent.com/s/x9y8z7w6/CV_Tom_Becker.zip?dl=1"


@dataclass
class Plant:
    """What one planted scenario left behind, for the truth file."""

    name: str
    description: str
    benign: bool = False
    connectors: list[str] = field(default_factory=list)
    users: list[Person] = field(default_factory=list)
    senders: list[str] = field(default_factory=list)
    mails: list[Mail] = field(default_factory=list)
    cloud_app_events: list[dict[str, Any]] = field(default_factory=list)
    logons: list[dict[str, Any]] = field(default_factory=list)


def consumer_campaign(rng: random.Random, t: Tenant, now: datetime) -> Plant:
    """The seed's campaign: one message to three shared mailboxes, then separate messages."""
    box = {p.upn.split("@")[0]: p for p in t.shared}
    eve, dan = "recruiting.desk.eu@gmail.com", "d.okafor.orders@outlook.com"
    lure = "Quick question about your services"
    plant = Plant(
        "consumer-campaign",
        "Two consumer senders mail several protected shared mailboxes within the "
        "hour (the seed's scenario): one message to three mailboxes, then separate messages; one copy "
        "was already junked by the filter, one went to a personal mailbox outside the protected list.",
        senders=[eve, dan],
    )
    one_to_three = Mail(
        now - timedelta(minutes=48),
        eve,
        eve,
        None,
        [Recipient(box[n].upn, box[n].object_id) for n in ("support", "sales", "info")],
        lure,
        sender_ip="209.85.220.41",
    )
    separate = [
        Mail(
            now - timedelta(minutes=m),
            eve,
            eve,
            None,
            [Recipient(box[n].upn, box[n].object_id, loc)],
            lure,
            sender_ip="209.85.220.41",
        )
        for m, n, loc in ((31, "billing", None), (22, "jobs", None), (14, "hr", "Junk folder"))
    ]
    personal = t.users[0]
    stray = Mail(
        now - timedelta(minutes=20),
        eve,
        eve,
        None,
        [Recipient(personal.upn, personal.object_id)],
        lure,
        sender_ip="209.85.220.41",
    )
    second = [
        Mail(
            now - timedelta(minutes=m),
            dan,
            dan,
            None,
            [Recipient(box[n].upn, box[n].object_id)],
            "Order enquiry",
            sender_ip="40.92.18.5",
        )
        for m, n in ((40, "support"), (26, "sales"), (9, "jobs"))
    ]
    plant.mails = [one_to_three, *separate, stray, *second]
    return plant


def reply_chain(rng: random.Random, t: Tenant, now: datetime) -> Plant:
    """Issue 7 (one mailbox): consumer writes, the mailbox replies, the next mail has a file-share link."""
    hr = next(p for p in t.shared if p.upn.startswith("hr@"))
    tom = "tom.becker.cv@outlook.com"
    first = Mail(
        now - timedelta(hours=26),
        tom,
        tom,
        None,
        [Recipient(hr.upn, hr.object_id)],
        "Application for the warehouse position",
        sender_ip="40.92.18.9",
    )
    reply = Mail(
        now - timedelta(hours=25),
        hr.upn,
        hr.upn,
        hr.object_id,
        [Recipient(tom)],
        "Re: Application for the warehouse position",
        sender_display=hr.display,
        sender_ip="10.0.4.30",
    )
    link = Mail(
        now - timedelta(minutes=35),
        tom,
        tom,
        None,
        [Recipient(hr.upn, hr.object_id)],
        "Re: Re: Application for the warehouse position",
        urls=[FILE_SHARE_LINK],
        sender_ip="40.92.18.9",
    )
    plant = Plant(
        "reply-chain",
        "A consumer writes to one shared mailbox (hr@), hr@ replies, and the next mail "
        "from the consumer carries a Dropbox download link (dl.dropboxusercontent.com) and is still in "
        "the Inbox. Only two inbound copies: the correlation rule cannot see it.",
        senders=[tom],
        mails=[first, reply, link],
    )
    return plant


def compromised_admin(rng: random.Random, t: Tenant, now: datetime, noise: Noise) -> Plant:
    """Password spray, a successful logon, a new inbound connector, and spam relayed through it."""
    admin = t.compromised_admin
    # All within the last hour (the logon and P1/P2 rules look back one hour), each burst inside one
    # clock hour and the failures inside one 60-second bin (how the volume and logon rules count).
    t0 = now - timedelta(minutes=55)
    plant = Plant(
        "compromised-admin",
        f"A password spray from {ATTACKER_ISP}: a few guesses against many accounts "
        f"and a burst against {admin.upn}, then a success seconds later; the admin creates the inbound "
        f"connector '{MALICIOUS_CONNECTOR}' from the same address and relays a burst of spam through it "
        "(P1/P2 domains differ, empty SenderObjectId, mostly external recipients), and sends a burst "
        "of phish to external addresses from the admin's own mailbox.",
        connectors=[MALICIOUS_CONNECTOR],
        users=[admin],
    )
    # The spray: up to four guesses per account against many accounts (below any per-account burst).
    for p in rng.sample(t.users, k=min(25, len(t.users))):
        for k in range(rng.randint(2, 4)):
            plant.logons.append(
                noise._logon(
                    t0 - timedelta(minutes=3, seconds=7 * k + rng.randint(0, 5)),
                    p,
                    "LogonFailed",
                    "Microsoft 365",
                    ATTACKER_ISP,
                    ATTACKER_LOCATION,
                    failure="InvalidPassword",
                    ip=ATTACKER_IP,
                )
            )
    # The burst against the admin: 140 failures within 55 s, then a success 4 s after the last one.
    fails = 140
    for k in range(fails):
        ts = t0 + timedelta(milliseconds=int(55_000 * k / (fails - 1)))
        plant.logons.append(
            noise._logon(
                ts,
                admin,
                "LogonFailed",
                "Microsoft 365",
                ATTACKER_ISP,
                ATTACKER_LOCATION,
                failure="InvalidPassword",
                ip=ATTACKER_IP,
            )
        )
    plant.logons.append(
        noise._logon(
            t0 + timedelta(seconds=59),
            admin,
            "LogonSuccess",
            "Microsoft 365",
            ATTACKER_ISP,
            ATTACKER_LOCATION,
            ip=ATTACKER_IP,
        )
    )
    # The connector, created from the attacker's address.
    params = [
        {"Name": "Name", "Value": MALICIOUS_CONNECTOR},
        {"Name": "ConnectorType", "Value": "OnPremises"},
        {"Name": "SenderIPAddresses", "Value": "45.153.160.0/24"},
        {"Name": "Enabled", "Value": "True"},
        {"Name": "RequireTls", "Value": "False"},
    ]
    plant.cloud_app_events.append(
        noise._cae(
            t0 + timedelta(minutes=3),
            admin,
            "New-InboundConnector",
            "Microsoft Exchange Online",
            "Connector",
            admin=True,
            params=params,
            ip=ATTACKER_IP,
            country="NL",
            isp=ATTACKER_ISP,
        )
    )
    # Relayed spam: 220 messages in 45 minutes, out to the internet; header From spoofs the bank
    # partner, the envelope sender is a throwaway domain.
    start = t0 + timedelta(minutes=5)
    for k in range(220):
        ts = start + timedelta(seconds=int(2700 * k / 219))
        victim = f"{rng.choice(('info', 'accounts', 'office', 'finance'))}{k}@customer{k % 37}.example"
        plant.mails.append(
            Mail(
                ts,
                f"mailer{k % 5}@bulk-relay{k % 3}.info",
                "payments@woodgrovebank.com",
                None,
                [Recipient(victim)],
                "Payment advice: action required",
                connector=MALICIOUS_CONNECTOR,
                direction="Outbound",
                sender_ip="45.153.160.12",
                urls=["https://woodgrove-payments.example/login"],
            )
        )
    # The admin's own mailbox phishes external addresses: 130 messages in 40 minutes (one clock hour).
    start = t0 + timedelta(minutes=7)
    for k in range(130):
        ts = start + timedelta(seconds=int(2400 * k / 129))
        victim = f"ap{k}@supplier{k % 23}.example"
        plant.mails.append(
            Mail(
                ts,
                admin.upn,
                admin.upn,
                admin.object_id,
                [Recipient(victim)],
                "Updated bank details for invoices",
                sender_display=admin.display,
                sender_ip="10.0.4.99",
            )
        )
    return plant


def benign_connector_change(rng: random.Random, t: Tenant, now: datetime, noise: Noise) -> Plant:
    """A real admin renews the partner connector's certificate name: indistinguishable from an attack."""
    admin = t.admins[0]
    params = [
        {"Name": "Identity", "Value": PARTNER_CONNECTOR},
        {"Name": "TlsSenderCertificateName", "Value": f"mail.fabrikam.com;renewed-{now:%Y}"},
    ]
    plant = Plant(
        "benign-connector-change",
        f"{admin.upn} updates the certificate name on the long-standing "
        f"'{PARTNER_CONNECTOR}' connector from the office network. The connector-change rule flags every "
        "change by design and holds it for approval; on-call is expected to reject this one.",
        benign=True,
        connectors=[PARTNER_CONNECTOR],
    )
    plant.cloud_app_events.append(
        noise._cae(
            now - timedelta(hours=5, minutes=40),
            admin,
            "Set-InboundConnector",
            "Microsoft Exchange Online",
            "Connector",
            admin=True,
            params=params,
            ip="10.0.2.5",
        )
    )
    return plant


def all_plants(rng: random.Random, t: Tenant, now: datetime, noise: Noise) -> list[Plant]:
    return [
        consumer_campaign(rng, t, now),
        reply_chain(rng, t, now),
        compromised_admin(rng, t, now, noise),
        benign_connector_change(rng, t, now, noise),
    ]
