"""The thinking indicator: assistant.threads.setStatus per thread, refreshed during long work, always cleared.

One `ThreadStatus` per (channel, thread_ts). `begin` shows it at once (`begin_soon` in the background, for
listeners that must acknowledge Slack's event without waiting on a Web API call or its rate-limit sleep);
sub-assistants being delegated to or finishing change its loading messages (which Slack shows verbatim, so they
name the sub-assistants at work); a background refresher re-sends it every `refresh_seconds` (Slack drops it after
2 minutes); `clear` sends status "" and stops the refresher, retrying a failed clear with backoff (an indicator
must never stay up). Calls for one thread are serialised so a clear can never be overtaken by an older set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import constants as c
from adapters.slack.retry import RetryPolicy, error_name, with_retries

log = logging.getLogger(__name__)

ThreadId = tuple[str, str]  # (channel, thread_ts)
_MAX_THREADS = 10_000
Clock = Callable[[], float]


def loading_messages(subs: list[str], retrying: bool = False, why: str = "") -> list[str]:
    """What the indicator shows: one line per sub-assistant at work (at most Slack's 10); while retrying, first
    what happened in words (`Retrying.words`, e.g. "cannot connect to the AI provider")."""
    lines = [f"Asking {name}..."[: c.LOADING_MESSAGE_MAX_CHARS] for name in dict.fromkeys(subs)]
    if retrying:
        retry = f"{why[:1].upper()}{why[1:]}; {c.LOADING_RETRYING.lower()}" if why else c.LOADING_RETRYING
        lines.insert(0, retry[: c.LOADING_MESSAGE_MAX_CHARS])
    if not lines:
        lines = [c.LOADING_THINKING]
    return lines[: c.STATUS_LOADING_MESSAGES_MAX]


@dataclass
class ThreadStatus:
    channel: str
    thread_ts: str
    active: bool = False
    #: call_id -> sub-assistant name, for the sub-assistants at work
    subs: dict[str, str] = field(default_factory=dict)
    retrying: bool = False
    retry_why: str = ""
    started_at: float = 0.0
    #: how many times this thread's indicator was cleared (lets a late `begin` see it came too late)
    clears: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    refresher: asyncio.Task[None] | None = None

    def messages(self) -> list[str]:
        return loading_messages(list(self.subs.values()), self.retrying, self.retry_why)


class StatusBoard:
    def __init__(
        self,
        client: AsyncWebClient,
        *,
        refresh_seconds: float = c.STATUS_REFRESH_SECONDS,
        max_lifetime_seconds: float = c.STATUS_MAX_LIFETIME_SECONDS,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._client = client
        self.refresh_seconds = refresh_seconds
        self.max_lifetime_seconds = max_lifetime_seconds
        self._clock = clock or time.monotonic
        self._retry = retry or RetryPolicy()
        self._threads: dict[ThreadId, ThreadStatus] = {}
        self._pending: set[asyncio.Task[None]] = set()

    def thread(self, channel: str, thread_ts: str) -> ThreadStatus:
        key = (channel, thread_ts)
        st = self._threads.get(key)
        if st is None:
            st = self._threads[key] = ThreadStatus(channel, thread_ts)
        return st

    def is_active(self, channel: str, thread_ts: str) -> bool:
        st = self._threads.get((channel, thread_ts))
        return bool(st and st.active)

    def clears(self, channel: str, thread_ts: str) -> int:
        return self.thread(channel, thread_ts).clears

    async def begin(self, channel: str, thread_ts: str, *, unless_cleared_since: int | None = None) -> None:
        """Show the indicator now (no-op when already shown). `unless_cleared_since`: skip when the thread's
        indicator was cleared after that count was read (the turn it was meant for already finished)."""
        st = self.thread(channel, thread_ts)
        async with st.lock:
            if st.active:
                return
            if unless_cleared_since is not None and st.clears != unless_cleared_since:
                return
            st.active = True
            st.retrying = False
            st.started_at = self._clock()
            await self._send(st)
            self._start_refresher(st)

    def begin_soon(self, channel: str, thread_ts: str, *, unless_cleared_since: int | None = None) -> None:
        """`begin` in the background: the caller (an event listener) returns at once."""
        task = asyncio.create_task(
            self.begin(channel, thread_ts, unless_cleared_since=unless_cleared_since),
            name=f"slack-status-begin-{thread_ts}",
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def ensure(self, channel: str, thread_ts: str) -> None:
        await self.begin(channel, thread_ts)

    async def sub_started(self, channel: str, thread_ts: str, call_id: str, sub: str) -> None:
        st = self.thread(channel, thread_ts)
        st.subs[call_id] = sub
        st.retrying = False
        await self._changed(st)

    async def sub_finished(self, channel: str, thread_ts: str, call_id: str) -> None:
        st = self.thread(channel, thread_ts)
        if st.subs.pop(call_id, None) is not None:
            await self._changed(st)

    async def retrying(self, channel: str, thread_ts: str, why: str = "") -> None:
        st = self.thread(channel, thread_ts)
        st.retrying = True
        st.retry_why = why
        await self._changed(st)

    async def clear(self, channel: str, thread_ts: str) -> None:
        """Clear the indicator (always sends status "", even if we believe it is not shown)."""
        st = self.thread(channel, thread_ts)
        async with st.lock:
            st.active = False
            st.subs.clear()
            st.retrying = False
            st.clears += 1
            task, st.refresher = st.refresher, None
            if task is not None:
                task.cancel()
            await self._call(st.channel, st.thread_ts, "", None, attempts=c.STATUS_CLEAR_ATTEMPTS)
        self._forget_idle()

    def _forget_idle(self) -> None:
        """Bound the memory: drop the oldest idle threads (their clear counts no longer matter)."""
        if len(self._threads) <= _MAX_THREADS:
            return
        for key in [k for k, t in self._threads.items() if not t.active and not t.lock.locked()]:
            if len(self._threads) <= _MAX_THREADS // 2:
                break
            del self._threads[key]

    async def clear_where(self, predicate: Callable[[str, str], bool]) -> int:
        """Clear every active indicator whose (channel, thread_ts) matches; returns how many."""
        targets = [st for st in self._threads.values() if st.active and predicate(st.channel, st.thread_ts)]
        for st in targets:
            await self.clear(st.channel, st.thread_ts)
        return len(targets)

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        for st in self._threads.values():
            if st.refresher is not None:
                st.refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await st.refresher
                st.refresher = None

    # ---- internals --------------------------------------------------------------------------------------------------

    async def _changed(self, st: ThreadStatus) -> None:
        async with st.lock:
            if not st.active:
                st.active = True
                st.started_at = self._clock()
                self._start_refresher(st)
            await self._send(st)

    def _start_refresher(self, st: ThreadStatus) -> None:
        if st.refresher is None or st.refresher.done():
            st.refresher = asyncio.create_task(self._refresh_loop(st), name=f"slack-status-{st.thread_ts}")

    async def _refresh_loop(self, st: ThreadStatus) -> None:
        while st.active:
            await asyncio.sleep(self.refresh_seconds)
            async with st.lock:
                if not st.active:
                    return
                if self._clock() - st.started_at > self.max_lifetime_seconds:
                    log.warning("thinking indicator in %s/%s outlived its lifetime; clearing", st.channel, st.thread_ts)
                    st.active = False
                    await self._call(st.channel, st.thread_ts, "", None)
                    return
                await self._send(st)

    async def _send(self, st: ThreadStatus) -> None:
        await self._call(st.channel, st.thread_ts, c.STATUS_THINKING, st.messages())

    async def _call(
        self, channel: str, thread_ts: str, status: str, messages: list[str] | None, *, attempts: int = 1
    ) -> None:
        """Set (or with "" clear) the indicator. Showing it is best effort (one try: the SDK retried 429s, 5xx and
        resets already); clearing it is tried `attempts` times whatever the error, with backoff."""

        async def call() -> object:
            return await self._client.assistant_threads_setStatus(
                channel_id=channel, thread_ts=thread_ts, status=status, loading_messages=messages
            )

        try:
            await with_retries(call, self._retry, "clearing the indicator", retry=lambda _: True, attempts=attempts)
        except Exception as e:
            log.warning("assistant.threads.setStatus failed in %s: %s", channel, error_name(e))
