"""Card senders: the Teams Workflows webhook, a directory of JSON files, memory, and nothing.

Every ``send`` returns whether the card was delivered and never raises: a Teams outage must not
stop remediation. The webhook URL carries its own signature, so it is a secret: it is never logged,
never in a repr, never in an error message, and the httpx request log line that would contain it
is redacted (``_UrlRedactor``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import httpx

from core.retry_after import parse_retry_after
from core.settings import ConfigError, Settings
from notifications.elements import card_kind
from notifications.message import MAX_MESSAGE_BYTES, serialize, to_workflows_message

log = logging.getLogger(__name__)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
REDACTED = "[redacted webhook URL]"


@runtime_checkable
class Notifier(Protocol):
    async def send(self, card: dict[str, Any]) -> bool:
        """Deliver one AdaptiveCard; True when delivered. Never raises."""
        ...


class _UrlRedactor(logging.Filter):
    """Rewrites httpx's "HTTP Request: POST <url> ..." records that would carry a webhook secret.

    httpx logs every request URL at INFO; silencing the httpx logger instead would also hide the
    Graph SDK's request log, which operators rely on.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, *values: str) -> None:
        with self._lock:
            self._secrets.update(v for v in values if v)

    def scrub(self, message: str) -> str:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for s in secrets:
            message = message.replace(s, REDACTED)
        return message

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = self.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


_REDACTOR = _UrlRedactor()
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_REDACTOR)


def _secret_parts(url: str) -> list[str]:
    """Every spelling of the URL (and its signed query) that could end up in a log line."""
    parts = urlsplit(url)
    values = [url, str(httpx.URL(url))]
    if parts.query:
        values.append(parts.query)
        values.append(httpx.URL(url).query.decode("ascii", "replace"))
    if len(parts.path) > 1:
        values.append(parts.path)
    return values


def _validate_url(url: str) -> None:
    # Messages here never include the URL: it is the secret being validated.
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError("Teams webhook URL is not a valid URL") from None
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return  # the local webhook sink in tests and the demo
    raise ValueError("Teams webhook URL must be https (plain http only to a loopback test sink)")


def _retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"))


class TeamsWebhookNotifier:
    """POSTs cards to a Teams Workflows webhook, retrying 429/5xx and network errors with backoff.

    ``retries`` is the number of retries after the first attempt. A Retry-After header is honoured;
    if it asks for longer than ``max_delay`` the notifier gives up instead of holding the worker.
    ``client`` is used as given (the caller owns it); without one, each send opens its own.
    """

    def __init__(self, url: str, client: httpx.AsyncClient | None = None, retries: int = 3, *,
                 backoff: float = 1.0, max_delay: float = 30.0, timeout: float = 10.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        _validate_url(url)
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self._url = url
        _REDACTOR.add(*_secret_parts(url))
        self._client = client
        self.retries = retries
        self.backoff = backoff
        self.max_delay = max_delay
        self.timeout = timeout
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"TeamsWebhookNotifier(url={REDACTED!r}, retries={self.retries})"

    def _delay(self, attempt: int) -> float:
        # Exponential with jitter so several workers that failed together do not retry together.
        base = self.backoff * (2 ** attempt)
        return min(base * (0.5 + random.random() / 2), self.max_delay)

    async def send(self, card: dict[str, Any]) -> bool:
        try:
            body = serialize(to_workflows_message(card))
        except (TypeError, ValueError) as exc:
            log.error("Teams card not sent: it cannot be serialized (%s)", _REDACTOR.scrub(str(exc)))
            return False
        if len(body) > MAX_MESSAGE_BYTES:
            log.error("Teams card not sent: %d bytes is over the %d-byte message limit", len(body),
                      MAX_MESSAGE_BYTES)
            return False
        try:
            if self._client is not None:
                return await self._deliver(self._client, body, card_kind(card))
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                return await self._deliver(client, body, card_kind(card))
        except Exception as exc:  # a notifier must never break remediation, whatever went wrong
            log.error("Teams card (%s) not sent: unexpected %s: %s", card_kind(card), type(exc).__name__,
                      _REDACTOR.scrub(str(exc)))
            return False

    async def _deliver(self, client: httpx.AsyncClient, body: bytes, kind: str) -> bool:
        attempts = self.retries + 1
        for attempt in range(attempts):
            retryable, wait, why = await self._attempt(client, body)
            if retryable is None:
                # A Workflows webhook ("When a Teams webhook request is received") answers 202 Accepted:
                # the flow is queued and posts the card when it runs, so the card is accepted, not yet
                # seen in the channel (a flow that later fails shows only in the flow's run history).
                # https://learn.microsoft.com/connectors/teams/#microsoft-teams-webhook
                if why == "202":
                    log.info("Teams card (%s) accepted (HTTP 202): the workflow is queued and posts it "
                             "when it runs", kind)
                else:
                    log.info("Teams card (%s) delivered (HTTP %s)", kind, why)
                return True
            last = attempt == attempts - 1
            if not retryable or last:
                log.error("Teams card (%s) not delivered after %d attempt(s): %s", kind, attempt + 1, why)
                return False
            if wait is not None and wait > self.max_delay:
                log.error("Teams card (%s) not delivered: %s and the webhook asked to wait %gs "
                          "(more than %gs); giving up", kind, why, wait, self.max_delay)
                return False
            delay = wait if wait is not None else self._delay(attempt)
            log.warning("Teams card (%s) delivery attempt %d failed (%s); retrying in %.1fs", kind,
                        attempt + 1, why, delay)
            await self._sleep(delay)
        return False

    async def _attempt(self, client: httpx.AsyncClient, body: bytes) -> tuple[bool | None, float | None, str]:
        """(None, _, status) on success, else (retryable, Retry-After seconds, reason without the URL)."""
        try:
            response = await client.post(self._url, content=body,
                                         headers={"Content-Type": "application/json; charset=utf-8"},
                                         timeout=self.timeout)
        except httpx.TransportError as exc:
            return True, None, f"{type(exc).__name__}: {_REDACTOR.scrub(str(exc)) or 'no detail'}"
        if 200 <= response.status_code < 300:
            return None, None, str(response.status_code)
        why = f"HTTP {response.status_code}"
        detail = _REDACTOR.scrub(response.text[:200].strip())
        if detail:
            why += f" ({detail})"
        retryable = response.status_code == 429 or response.status_code >= 500
        return retryable, _retry_after(response) if retryable else None, why


class FileNotifier:
    """Writes each card as ``NNNN-<kind>.json`` in ``directory`` (the demo; render them later)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self.paths: list[Path] = []

    def __repr__(self) -> str:
        return f"FileNotifier({str(self.directory)!r})"

    async def send(self, card: dict[str, Any]) -> bool:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            text = json.dumps(card, indent=2, ensure_ascii=False)
            with self._lock:
                while True:
                    path = self.directory / f"{next(self._counter):04d}-{card_kind(card)}.json"
                    try:
                        with path.open("x", encoding="utf-8") as fh:  # never overwrite an earlier card
                            fh.write(text + "\n")
                        break
                    except FileExistsError:
                        continue
            self.paths.append(path)
            return True
        except (OSError, TypeError, ValueError) as exc:
            log.error("card not written to %s: %s", self.directory, exc)
            return False


class MemoryNotifier:
    """Keeps cards in ``cards`` (tests); ``deliver=False`` simulates a channel that is down."""

    def __init__(self, deliver: bool = True) -> None:
        self.deliver = deliver
        self.cards: list[dict[str, Any]] = []

    async def send(self, card: dict[str, Any]) -> bool:
        if self.deliver:
            self.cards.append(card)
        return self.deliver


class NullNotifier:
    """Notifications switched off (no webhook configured). Returns True: off is not a failure."""

    async def send(self, card: dict[str, Any]) -> bool:
        return True


def notifier_from_settings(settings: Settings, *, client: httpx.AsyncClient | None = None) -> Notifier:
    """The webhook notifier when RESPONDER_TEAMS_WEBHOOK_URL is set, else a NullNotifier."""
    url = settings.teams_webhook_url.strip()
    if not url:
        return NullNotifier()
    try:
        return TeamsWebhookNotifier(url, client=client)
    except ValueError as exc:
        raise ConfigError(f"app setting RESPONDER_TEAMS_WEBHOOK_URL: {exc}") from None
