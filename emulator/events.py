"""An append-only log of encoded SSE frames that any number of HTTP streams can follow and replay.

A streamed response keeps its log so a dropped client can resume with ``starting_after``; an Assistants run keeps
one so ``submit_tool_outputs(stream=True)`` continues where ``runs.create(stream=True)`` stopped. A frame marked as
a boundary (``thread.run.requires_action``) ends the current stream segment without closing the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(slots=True)
class Frame:
    data: bytes
    boundary: bool = False


class EventLog:
    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.closed = False
        self._changed: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def append(self, data: bytes, *, boundary: bool = False) -> None:
        if self.closed:
            return
        self.frames.append(Frame(data, boundary))
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def follow(self, start: int = 0, *, stop_at_boundary: bool = False) -> AsyncIterator[Frame]:
        """Yield frames from index `start`, waiting for new ones, until the log closes (or a boundary)."""
        index = start
        while True:
            while index < len(self.frames):
                frame = self.frames[index]
                index += 1
                yield frame
                if stop_at_boundary and frame.boundary:
                    return
            if self.closed:
                return
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    async def follow_batches(self, start: int = 0, *, stop_at_boundary: bool = False) -> AsyncIterator[list[Frame]]:
        """As `follow`, but every frame already in the log at once: a stream writes what was produced in the same
        instant together, as a server's buffered socket would, instead of one write per event."""
        index = start
        while True:
            if index < len(self.frames):
                end = len(self.frames)
                if stop_at_boundary:
                    end = next((i + 1 for i in range(index, end) if self.frames[i].boundary), end)
                batch = self.frames[index:end]
                index = end
                yield batch
                if stop_at_boundary and batch[-1].boundary:
                    return
                continue
            if self.closed:
                return
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()
