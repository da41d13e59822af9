"""One serial worker per conversation, and one door per conversation that admin actions pass through: a
conversation's turns never overlap each other or an admin action on it, and conversations never wait for each other.
Work itself lives in the store (the inbox); the mailbox only decides who runs when, and runs a failed worker again
after a growing delay, so work left by a failure (a database that refused a write) does not wait for the next
message or a restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger("switchboard.mailbox")

Handler = Callable[[str], Awaitable[bool]]  # process one unit of work; False when there was none


#: first delay before a failed worker runs again (doubling per failure in a row, up to RETRY_MAX_SECONDS)
RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0


class Mailbox:
    def __init__(self, handler: Handler, retry_base: float = RETRY_BASE_SECONDS,
                 retry_max: float = RETRY_MAX_SECONDS) -> None:
        self._handler = handler
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._failures: dict[str, int] = {}  # conversation -> its worker's failures in a row
        self._retries: dict[str, asyncio.TimerHandle] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._doors: dict[str, asyncio.Lock] = {}
        self._at_door: dict[str, int] = {}  # admin actions waiting at or inside each conversation's door
        self._quiet = asyncio.Event()  # set exactly when no worker runs and no admin action is at a door
        self._quiet.set()
        self._closed = False

    def kick(self, conversation: str) -> None:
        """There may be new work for `conversation`: make sure a worker will look (after the door, if it is shut)."""
        if self._closed:
            return
        self._dirty.add(conversation)
        self._start(conversation)

    def busy(self, conversation: str) -> bool:
        """New work for `conversation` would wait: its worker is running or an admin action holds its door."""
        return conversation in self._workers or conversation in self._at_door

    @property
    def depth(self) -> int:
        return len(self._workers)

    @contextlib.asynccontextmanager
    async def exclusive(self, conversation: str) -> AsyncIterator[None]:
        """`async with mailbox.exclusive(conversation):` for admin actions. Stops the conversation's worker (cancels
        and awaits it) and keeps workers out until the block ends; kicks meanwhile start the worker right after.
        Admin actions on one conversation take turns; the door is not reentrant."""
        self._at_door[conversation] = self._at_door.get(conversation, 0) + 1
        self._settle()
        door = self._doors.setdefault(conversation, asyncio.Lock())
        try:
            async with door:
                worker = self._workers.get(conversation)
                if worker is not None:
                    worker.cancel()
                    self._dirty.add(conversation)  # it leaves an interrupted turn behind: look again afterwards
                    # Waits for the task to end even if it swallowed the cancel: no worker runs inside the door.
                    await asyncio.wait([worker])
                yield
        finally:
            self._at_door[conversation] -= 1
            if not self._at_door[conversation]:
                del self._at_door[conversation], self._doors[conversation]
                if conversation in self._dirty:
                    self._start(conversation)
            self._settle()

    async def close(self) -> None:
        self._closed = True
        for retry in self._retries.values():
            retry.cancel()
        self._retries.clear()
        tasks = list(self._workers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def idle(self) -> None:
        """Wait until no conversation has work or an admin action in progress (tests, benchmarks, shutdown)."""
        while not self._quiet.is_set():
            await self._quiet.wait()

    def _start(self, conversation: str) -> None:
        if self._closed or conversation in self._workers or conversation in self._at_door:
            return
        self._workers[conversation] = asyncio.create_task(self._work(conversation), name=f"mailbox:{conversation}")
        self._settle()

    def _retry_later(self, conversation: str) -> None:
        failures = self._failures[conversation] = self._failures.get(conversation, 0) + 1
        delay = min(self._retry_base * 2 ** (failures - 1), self._retry_max)
        log.exception("worker for %s failed (%d in a row); it runs again in %.1fs, or at the next message",
                      conversation, failures, delay)
        if conversation not in self._retries:
            self._retries[conversation] = asyncio.get_running_loop().call_later(delay, self._retry, conversation)

    def _retry(self, conversation: str) -> None:
        del self._retries[conversation]
        self.kick(conversation)

    def _settle(self) -> None:
        if self._workers or self._at_door:
            self._quiet.clear()
        else:
            self._quiet.set()

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
                    self._retry_later(conversation)
                    return
            self._failures.pop(conversation, None)
        finally:
            self._workers.pop(conversation, None)
            if conversation in self._dirty:
                self._start(conversation)  # kicked while it failed, or stopped by a door that has since opened
            self._settle()
