"""The demo's request queue: an Azurite storage queue, or an in-process stand-in when Azurite is absent.

Messages are written base64-encoded, as the Functions host's queue trigger expects them by default
(and as the timer functions' output binding writes them), and decoded on receipt exactly as the host
would before handing the body to the worker.
"""

from __future__ import annotations

import base64
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class Delivery:
    body: str
    dequeue_count: int
    handle: Any


class RequestQueue(Protocol):
    kind: str

    def send(self, body: str) -> None: ...
    def receive(self, max_messages: int) -> list[Delivery]: ...
    def delete(self, delivery: Delivery) -> None: ...
    def release(self, delivery: Delivery) -> None: ...
    def depth(self) -> int: ...


class AzuriteQueue:
    kind = "azurite"

    def __init__(self, connection_string: str, name: str):
        from azure.storage.queue import QueueClient

        self.client = QueueClient.from_connection_string(connection_string, name)
        self.client.create_queue()
        self.name = name

    def send(self, body: str) -> None:
        self.client.send_message(base64.b64encode(body.encode("utf-8")).decode("ascii"))

    def receive(self, max_messages: int) -> list[Delivery]:
        out = []
        for msg in self.client.receive_messages(max_messages=max_messages, visibility_timeout=30):
            out.append(Delivery(base64.b64decode(msg.content).decode("utf-8"), msg.dequeue_count or 1, msg))
            if len(out) >= max_messages:
                break
        return out

    def delete(self, delivery: Delivery) -> None:
        self.client.delete_message(delivery.handle)

    def release(self, delivery: Delivery) -> None:
        # The host makes a failed message visible again (here at once, so the demo does not wait).
        self.client.update_message(delivery.handle, visibility_timeout=0)

    def depth(self) -> int:
        return int(self.client.get_queue_properties().approximate_message_count or 0)


class MemoryQueue:
    """In-process stand-in: same base64 round trip and dequeue counts, nothing persisted."""

    kind = "in-process"

    def __init__(self) -> None:
        self._items: deque[tuple[str, int]] = deque()

    def send(self, body: str) -> None:
        self._items.append((base64.b64encode(body.encode("utf-8")).decode("ascii"), 0))

    def receive(self, max_messages: int) -> list[Delivery]:
        out = []
        while self._items and len(out) < max_messages:
            content, count = self._items.popleft()
            out.append(Delivery(base64.b64decode(content).decode("utf-8"), count + 1, (content, count + 1)))
        return out

    def delete(self, delivery: Delivery) -> None:
        return None  # already taken off the deque by receive

    def release(self, delivery: Delivery) -> None:
        self._items.append(delivery.handle)

    def depth(self) -> int:
        return len(self._items)
