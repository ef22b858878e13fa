"""The corpus of Microsoft's hunting queries: sourced, counted in docs/kql-corpus.md from a fresh run, and
the conversation take-over query answers on the local engine what Kusto answers."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import yaml

from detections.backends.local import LocalBackend, load_schemas, referenced_tables
from tests.corpus import corpus

OURS = set(load_schemas())


def test_the_corpus_holds_at_least_40_sourced_queries_over_our_tables_only() -> None:
    entries = corpus.load()
    assert len(entries) >= 40
    assert len({e.query for e in entries}) == len(entries), "a query is in the corpus twice"
    for e in entries:
        assert e.source["repo"] in ("Azure/Azure-Sentinel",
                                    "microsoft/Microsoft-365-Defender-Hunting-Queries")
        assert e.source["path"] and re.fullmatch(r"[0-9a-f]{40}", e.source["commit"]), e.file
        # Reads at least one of our tables, and no other hunting table (the schemas know only ours).
        assert referenced_tables(e.query, OURS), e.file
        other = re.findall(
            r"\b(Device\w+Events|AlertInfo|AlertEvidence|IdentityInfo|UrlClickEvents|AAD\w+)\b", e.query)
        assert not other, (e.file, other)


def test_the_docs_table_is_a_fresh_run() -> None:
    doc = corpus.DOC.read_text(encoding="utf-8")
    assert corpus.doc_section(doc) == corpus.results_markdown(corpus.run()), (
        "docs/kql-corpus.md is stale: run `python -m tests.corpus.corpus --write`")


def test_conversation_take_over_returns_the_kusto_row_count_on_a_hand_built_table() -> None:
    entry = next(e for e in corpus.load() if "conversation take over" in e.name.lower())
    assert entry.source["path"].endswith("Hunt for email conversation take over attempts.yaml")

    def mail(mid: str, when: str, sender: str, to: str, subject: str, **extra: str) -> dict:
        row = dict(Timestamp=when, NetworkMessageId=mid, SenderMailFromAddress=sender,
                   SenderFromAddress=sender, SenderFromDomain=sender.split("@")[1], RecipientEmailAddress=to,
                   Subject=subject, DeliveryAction="Delivered", DeliveryLocation="Inbox/folder",
                   EmailDirection="Inbound")
        return {**row, **extra}

    rows = [
        # History: the pair bob -> ann and the domain fabrikam.com are known.
        mail("old", "now-2d", "bob@fabrikam.com", "ann@contoso.com", "Order"),
        mail("known-pair", "now-1h", "bob@fabrikam.com", "ann@contoso.com", "RE: Order"),
        mail("known-domain", "now-1h", "bob@fabrikam.com", "cy@contoso.com", "RE: Order"),
        mail("not-a-reply", "now-1h", "eve@fabrikam-billing.com", "ann@contoso.com", "Hello"),
        mail("quarantined", "now-1h", "mal@evil.example", "ann@contoso.com", "RE: Order",
             DeliveryLocation="Quarantine"),
        # The take-over: a reply from a never-seen pair and domain. Its OrgLevelAction/UserLevelAction and
        # ThreatTypes are missing, which Kusto reads as "" (so `!= "Block"` holds).
        mail("take-over", "now-1h", "eve@fabrikam-billing.com", "ann@contoso.com", "RE: Order"),
    ]
    backend = LocalBackend.from_rows({"EmailEvents": rows}, corpus.NOW, source="takeover")
    out = asyncio.run(backend.run(entry.query, timespan=timedelta(days=7))).rows
    # Kusto: both leftouter joins leave Pair1 / SenderFromDomain1 as "" for the new pair and domain.
    assert [r["NetworkMessageId"] for r in out] == ["take-over"]


def test_corpus_files_are_plain_yaml_with_the_query_as_published() -> None:
    for path in sorted(corpus.QUERIES.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert set(data) == {"name", "source", "query"}, path.name
        assert data["query"].strip(), path.name
