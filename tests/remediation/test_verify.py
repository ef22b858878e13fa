"""Verification's pure parts: the mail's time from a (hostile) request, the timespan, the location rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from remediation.verify import classify, mail_time, verification_query, verification_timespan

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
SUBMITTED = NOW - timedelta(minutes=5)


@pytest.mark.parametrize(("request_", "expected"), [
    ({"evidence": {"Timestamp": "2026-11-20T11:58:00.123456Z"}, "detected_at": "2026-11-20T12:00:00Z"},
     datetime(2026, 11, 20, 11, 58, 0, 123456, tzinfo=UTC)),
    ({"evidence": {"Timestamp": "garbage"}, "detected_at": "2026-11-21T00:00:00Z"},
     datetime(2026, 11, 21, tzinfo=UTC)),
    ({"evidence": {"Timestamp": "2026-11-20T11:58:00"}}, SUBMITTED),     # naive: not believed
    ({"evidence": ["not", "a", "mapping"], "detected_at": 5}, SUBMITTED),
    ({"evidence": {"Timestamp": "2027-01-01T00:00:00Z"}}, SUBMITTED),   # never later than the fallback
    (None, SUBMITTED),
])
def test_mail_time_from_a_request(request_, expected) -> None:
    assert mail_time(request_, SUBMITTED) == expected


def test_timespan_reaches_a_day_before_the_oldest_mail_and_at_most_30_days() -> None:
    week_ago = NOW - timedelta(days=7, microseconds=1)
    assert verification_timespan([NOW - timedelta(hours=1), week_ago], NOW) == timedelta(days=8, seconds=1)
    assert verification_timespan([NOW - timedelta(days=90)], NOW) == timedelta(days=30)
    assert verification_timespan([NOW + timedelta(hours=1)], NOW) == timedelta(days=1)


@pytest.mark.parametrize(("action", "location"), [
    ("move_to_junk", "Junk folder"), ("move_to_junk", "JUNK"), ("move_to_junk", " junk folder "),
    ("move_to_inbox", "Inbox/Folder"), ("move_to_inbox", "inbox/folder"), ("soft_delete", "Deleted Items"),
])
def test_locations_confirm_case_insensitively(action: str, location: str) -> None:
    state, _ = classify(action, location, submitted_at=SUBMITTED, now=NOW, grace=timedelta(hours=2))
    assert state == "confirmed"


def test_a_known_other_location_waits_for_the_grace_period() -> None:
    grace = timedelta(hours=2)
    assert classify("move_to_junk", "Inbox/folder", submitted_at=SUBMITTED, now=NOW, grace=grace)[0] is None
    late = classify("move_to_junk", "Inbox/folder", submitted_at=NOW - grace, now=NOW, grace=grace)
    assert late[0] == "not_applied" and "still shows the message in Inbox/folder" in late[1]


def test_the_query_escapes_ids() -> None:
    q = verification_query(['a"b', "c"])
    assert 'NetworkMessageId in ("a\\"b", "c")' in q and "LatestDeliveryLocation" in q
