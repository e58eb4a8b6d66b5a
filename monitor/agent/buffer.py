"""What an agent saw and has not delivered yet: a bounded queue, oldest first.

While the server cannot be reached the agent keeps probing and keeps its
results here, to send them late with their own times. The queue is bounded (a
week cut off would fill the memory): past the limit the oldest results are
dropped and counted, and the first push afterwards says how many.
"""

from __future__ import annotations

from collections import deque
from typing import Any

DEFAULT_LIMIT = 100_000  # results (≈ 300 bytes each): 30 MB, ~28 h of 1 probe/s


class ResultBuffer:
    """Results waiting to be pushed, in the order they were seen."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError("the buffer holds at least one result")
        self._items: deque[dict[str, Any]] = deque()
        self.limit = limit
        self.dropped = 0  # results lost to the limit since the last delivery

    def __len__(self) -> int:
        return len(self._items)

    def add(self, result: dict[str, Any]) -> None:
        if len(self._items) >= self.limit:
            self._items.popleft()
            self.dropped += 1
        self._items.append(result)

    def peek(self, count: int) -> list[dict[str, Any]]:
        """The oldest ``count`` results, left in place until ``delivered``."""
        return [self._items[index] for index in range(min(count, len(self._items)))]

    def delivered(self, batch: list[dict[str, Any]]) -> None:
        """The server took ``batch`` (``peek``'s answer): forget it. Results dropped to the
        limit while it was on its way may have taken some of it already."""
        for item in batch:
            if self._items and self._items[0] is item:
                self._items.popleft()
