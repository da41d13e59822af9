"""One serial worker per conversation: a conversation's turns never overlap, and conversations never wait for
each other. Work itself lives in the store (the inbox); the mailbox only decides who runs when."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("switchboard.mailbox")

Handler = Callable[[str], Awaitable[bool]]  # process one unit of work; False when there was none


class Mailbox:
    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._closed = False

    def kick(self, conversation: str) -> None:
        """There may be new work for `conversation`: make sure a worker will look."""
        if self._closed:
            return
        self._dirty.add(conversation)
        if conversation not in self._workers:
            task = asyncio.create_task(self._work(conversation), name=f"mailbox:{conversation}")
            self._workers[conversation] = task

    def busy(self, conversation: str) -> bool:
        return conversation in self._workers

    @property
    def depth(self) -> int:
        return len(self._workers)

    def cancel(self, conversation: str) -> asyncio.Task[None] | None:
        """Cancel the running worker (admin cancel / reset). Returns the task so the caller can await it."""
        task = self._workers.get(conversation)
        if task is not None:
            task.cancel()
        return task

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._workers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def idle(self) -> None:
        """Wait until no conversation has work in progress (tests, benchmarks, graceful shutdown)."""
        while self._workers:
            await asyncio.gather(*list(self._workers.values()), return_exceptions=True)

    async def _work(self, conversation: str) -> None:
        try:
            while conversation in self._dirty:
                self._dirty.discard(conversation)
                try:
                    while await self._handler(conversation):
                        pass
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("worker for %s failed; it will retry on the next message or restart", conversation)
                    return
        finally:
            self._workers.pop(conversation, None)
