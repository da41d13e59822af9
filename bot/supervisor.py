"""The supervisor: gets one agent invocation (a *scope*) to a settled run, whatever the provider does.

It implements the recovery table of ARCHITECTURE.md on the normalised vocabulary of `bot.backends.base`, so it
works the same for every backend. Every recovery costs one unit of the scope's budget and is announced through
`Scope.on_retry`; when the budget is spent, `RunFailed` carries a sentence a user can read.

Longer than our usual module on purpose: it is one state machine (the recovery table), and its paths share the
scope's budget and run records, so split files would only pass those around.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from bot.backends.base import (
    SETTLED,
    UNREACHABLE,
    Backend,
    BackendError,
    Delta,
    OutputsRejected,
    Permanent,
    RunEvent,
    RunGone,
    RunRequest,
    RunState,
    RunStream,
    Snapshot,
    StreamDropped,
    StuckToolCall,
    ThreadGone,
    ThreadLocked,
    Transient,
)
from bot.backoff import backoff_delay
from bot.config import Limits
from bot.errors import SwitchboardError
from bot.metrics import Metrics
from bot.types import Usage
from storage.base import LeaseLost, RunRecord, RunTokens, Store

log = logging.getLogger("switchboard.supervisor")
T = TypeVar("T")

RETRYABLE_RUN_ERRORS = {"server_error", "rate_limit_exceeded"}
MAX_STREAM_RESUMES = 3
# A lock whose holder is neither named nor on our records is a run of ours whose id we never learnt (its stream
# broke before the first event); it cannot be cancelled, and may sit in `queued` for many minutes (PLATFORM_FACTS,
# Responses). After this many waits the scope forks a fresh thread from the local transcript.
UNEXPLAINED_LOCK_WAITS = 2
DROPPED_BEFORE_CREATED = "stream_dropped_before_created"
# Transient reasons that may come after the provider took the request (a 429 or 409 means it did not).
MAYBE_TAKEN = frozenset({"timeout", "connection", "server_error"})


class RunFailed(SwitchboardError):
    """The scope could not be settled. `user_text` is safe to show; `reason` is for logs and metrics."""

    def __init__(self, user_text: str, reason: str) -> None:
        super().__init__(f"{reason}: {user_text}")
        self.user_text = user_text
        self.reason = reason


class _Recreate(Exception):
    """Internal: the current run is lost; start a new one with the same input."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(slots=True)
class Scope:
    """One agent invocation inside a turn: the proxy's, or one sub-assistant call (path "proxy/call_1")."""

    turn_id: str
    path: str
    agent: str
    # Recreate the remote thread from the local transcript; returns the request to send there instead.
    rebuild_thread: Callable[[RunRequest], Awaitable[RunRequest]]
    on_retry: Callable[[str, int], Awaitable[None]]
    on_delta: Callable[[str], Awaitable[None]] | None = None
    # The provider's usage of each run that settled without a result (recreated or failed): still billed.
    on_spent: Callable[[Usage], None] | None = None
    attempts: int = 0
    recoveries: dict[str, int] = field(default_factory=dict)
    run_ids: set[str] = field(default_factory=set)  # every run this scope created (to recognise our own lock)
    unexplained_locks: int = 0
    create_unknown: bool = False  # the last start/submit may have taken effect without us learning its run
    lost_create_since: float | None = None  # when a lock first met us while `create_unknown`


class Supervisor:
    def __init__(self, backend: Backend, store: Store, limits: Limits, metrics: Metrics | None = None) -> None:
        self.backend = backend
        self.store = store
        self.limits = limits
        self.metrics = metrics or Metrics()
        self.recovery_counts: dict[str, int] = {}

    # ---- entry points ----

    async def settle(self, scope: Scope, request: RunRequest, prior: RunState | None = None) -> RunState:
        """Start a run for `request` (or, with `prior` in requires_action, submit `request.input.results` to it)
        and drive it until it is completed, incomplete, or requires_action."""
        submit_to = prior
        # Whether `submit_to` may have taken our outputs already, to be looked at before they are sent again:
        # "maybe" after a submit whose answer was lost, "rejected" after the run refused them.
        look: str | None = None
        while True:
            try:  # a recovery step below may fail transiently too: see the outer handler
                try:
                    if look is not None and submit_to is not None:
                        # A look that fails transiently is made again after backing off: never resend blindly.
                        taken = await self._took_outputs(scope, request, submit_to)
                        if taken is not None:
                            return await self._judge(scope, taken)
                        if look == "rejected":  # e.g. the run expired while sub-assistants worked: a new run
                            await self._recover(scope, "outputs_rejected")
                            submit_to = None
                    look = None
                    if scope.create_unknown:
                        # The last create's answer never came, but it may have run: adopt what it left, rather than
                        # send the same input twice.
                        found = await self._find_lost_create(scope, request)
                        if found is not None:
                            return await self._judge(scope, found)
                    stream = await self._open(scope, request, submit_to)
                    state = await self._watch(scope, request, stream)
                    return await self._judge(scope, state)
                except _Recreate as exc:
                    if exc.reason == DROPPED_BEFORE_CREATED:
                        scope.create_unknown = True
                    await self._recover(scope, exc.reason, exc.retry_after)
                    if exc.reason != DROPPED_BEFORE_CREATED:
                        submit_to = None  # else: send the same outputs again; the run itself may never have had them
                except ThreadLocked as exc:
                    if await self._wait_for_lock(scope, request, exc):
                        request = await scope.rebuild_thread(request)
                        scope.create_unknown = False
                        submit_to = None
                except ThreadGone:
                    await self._recover(scope, "thread_gone")
                    request = await scope.rebuild_thread(request)
                    scope.create_unknown = False
                    submit_to = None
                except RunGone:
                    await self._recover(scope, "run_gone")
                    submit_to = None
                except StuckToolCall as exc:
                    if scope.create_unknown:
                        # The lost create finished after we last looked, leaving calls the resend did not answer.
                        found = await self._find_lost_create(scope, request)
                        if found is not None:
                            return await self._judge(scope, found)
                    await self._recover(scope, "stuck_tool_call")
                    try:
                        await self.backend.answer_stuck_calls(request.thread_id, exc.call_id)
                    except BackendError:
                        request = await scope.rebuild_thread(request)
                        scope.create_unknown = False
                    submit_to = None
                except OutputsRejected:
                    if submit_to is not None:
                        # A resent submit may meet a run that already took the outputs (the first answer was lost):
                        # that run is watched instead of starting a second one (looked at above).
                        look = "rejected"
                    else:
                        await self._recover(scope, "outputs_rejected")
                except Transient as exc:
                    if exc.reason in MAYBE_TAKEN:
                        scope.create_unknown = True
                    await self._recover(scope, exc.reason, exc.retry_after)
                    if submit_to is not None:
                        look = "maybe"  # the submit may have landed before its answer was lost: looked at above
                except Permanent as exc:
                    raise RunFailed(exc.user_text, exc.reason) from exc
            except Transient as exc:
                # Raised by a recovery step itself (a lookup of a lost create, a thread rebuilt): back off (the retry
                # budget bounds it) and go round again; the state it was recovering from is looked at anew.
                await self._recover(scope, exc.reason, exc.retry_after)
            except Permanent as exc:
                raise RunFailed(exc.user_text, exc.reason) from exc

    async def follow(self, scope: Scope, request: RunRequest, record: RunRecord) -> RunState:
        """After a restart: watch a run recorded before the crash, then continue as `settle` would."""
        scope.run_ids.add(record.remote_id)
        # A run recorded as settled has nothing more to stream: retrieve it at once (resuming its stream would
        # end empty, three times, before falling back to that).
        last_seq = None if record.status in SETTLED else record.last_seq
        try:
            state = await self._poll_or_resume(scope, request, record.remote_id, last_seq)
            return await self._judge(scope, state)
        except (_Recreate, RunGone, StreamDropped, Transient) as exc:
            reason = getattr(exc, "reason", "run_lost")
            await self._recover(scope, reason if isinstance(reason, str) else "run_lost")
        except ThreadGone:
            await self._recover(scope, "thread_gone")
            request = await scope.rebuild_thread(request)
        except Permanent as exc:
            raise RunFailed(exc.user_text, exc.reason) from exc
        return await self.settle(scope, request)

    async def call(self, operation: Callable[[], Awaitable[T]],
                   on_retry: Callable[[str, int], Awaitable[None]] | None = None) -> T:
        """Run a plain provider call (create a thread, ...) with the same backoff and budget as runs."""
        attempt = unreachable = 0
        while True:
            try:
                return await operation()
            except Transient as exc:
                self._count(exc.reason)
                if exc.reason == UNREACHABLE:  # as in `_recover`: wait for the provider, no budget spent
                    unreachable += 1
                    tries = unreachable
                else:
                    attempt += 1
                    tries = attempt
                    if attempt > self.limits.retry_budget:
                        raise RunFailed(_budget_text(exc.reason), f"budget_spent:{exc.reason}") from exc
                if on_retry is not None:
                    await on_retry(exc.reason, tries)
                await asyncio.sleep(self._backoff(tries, exc.retry_after))
            except Permanent as exc:
                raise RunFailed(exc.user_text, exc.reason) from exc

    # ---- judging a settled run ----

    async def _judge(self, scope: Scope, state: RunState) -> RunState:
        if state.status in ("completed", "requires_action", "incomplete"):
            return state
        if scope.on_spent is not None:
            scope.on_spent(state.usage)
        if state.status == "cancelled":
            raise _Recreate("cancelled_by_provider")
        if state.status == "expired":
            raise _Recreate("expired")
        if state.status == "failed":
            code = state.error_code or "server_error"
            if code in RETRYABLE_RUN_ERRORS:
                raise _Recreate(code)
            if code == "invalid_prompt":
                raise RunFailed("The AI provider refused this request (invalid prompt).", code)
            raise RunFailed(f"The AI provider could not finish this request ({code}).", code)
        raise _Recreate(f"unexpected_status_{state.status}")

    # ---- watching ----

    async def _open(self, scope: Scope, request: RunRequest, submit_to: RunState | None) -> _Opened:
        """Create (or continue) the run and read until the provider names it, then record it.

        Shielded from cancellation: a run that exists at the provider must be on record, or whoever stops this
        turn (an admin reset) could not cancel it, and it would run on unseen."""
        task = asyncio.ensure_future(self._create_and_record(scope, request, submit_to))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                opened = await task  # let the record land before we go
                await opened.aclose()
            raise

    async def _create_and_record(self, scope: Scope, request: RunRequest, submit_to: RunState | None) -> _Opened:
        if submit_to is not None:
            stream = await self.backend.submit(submit_to, request)
        else:
            stream = await self.backend.start(request)
        iterator = aiter(stream)
        first: list[RunEvent] = []
        dropped: StreamDropped | None = None
        try:
            async with asyncio.timeout(self.limits.stream_idle_timeout):
                while not first or not isinstance(first[-1], Snapshot):
                    first.append(await anext(iterator))
        except (StopAsyncIteration, TimeoutError):
            pass  # watching the stream turns this into a dropped stream, with the usual recovery
        except StreamDropped as exc:
            dropped = exc  # before the run was named, or after events that carry no snapshot: watched the same way
        except BaseException:
            await stream.aclose()
            raise
        opened = _Opened(stream, iterator, first, dropped)
        if first and isinstance(first[-1], Snapshot):
            await self._record(scope, request, first[-1].state)
            opened.recorded = True
        return opened

    async def _watch(self, scope: Scope, request: RunRequest, stream: _Opened) -> RunState:
        try:
            return await self._consume(scope, request, stream, recorded=stream.recorded)
        except StreamDropped as drop:
            run_id = drop.run_id or stream.run_id
            if run_id is None:
                # We never learnt the run's id. Starting again finds it where the provider can list a thread's runs
                # (Assistants adopts it by its input key); elsewhere, if it exists, it holds the thread until it
                # ends, and the lock path waits for it.
                raise _Recreate(DROPPED_BEFORE_CREATED) from drop
            self._count("stream_dropped")
            return await self._poll_or_resume(scope, request, run_id, drop.last_seq)

    async def _consume(self, scope: Scope, request: RunRequest, stream: RunStream, recorded: bool) -> RunState:
        loop = asyncio.get_running_loop()
        iterator = aiter(stream)
        last_status: str | None = None
        queued_since: float | None = None
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel (admin reset) that arrives as the
            # event does, leaving the turn running after it was stopped. One for the whole stream, moved lazily by
            # `IdleWatch`: a timeout per event cost ~5% of the engine's CPU per turn (benchmarks/profile_turn.py).
            async with asyncio.timeout(None) as deadline:
                watch = IdleWatch(deadline)
                try:
                    while True:
                        timeout = self.limits.stream_idle_timeout
                        if queued_since is not None:
                            timeout = min(timeout, max(0.0, queued_since + self.limits.queued_timeout - loop.time()))
                        watch.reading(timeout)
                        try:
                            event = await anext(iterator)
                        except StopAsyncIteration:
                            raise StreamDropped("stream ended", stream.run_id) from None
                        watch.done_reading()
                        if isinstance(event, Delta):
                            if event.text and scope.on_delta is not None:
                                await scope.on_delta(event.text)
                            continue
                        assert isinstance(event, Snapshot)
                        state = event.state
                        if not recorded:
                            await self._record(scope, request, state)
                            recorded = True
                        if state.status != last_status:
                            last_status = state.status
                            queued_since = loop.time() if state.status == "queued" else None
                        if state.settled:
                            await self._settled(state)
                            return state
                finally:
                    watch.close()
        except TimeoutError:
            if not deadline.expired():
                raise  # not ours: raised by something the loop awaited
            if queued_since is not None and stream.run_id:
                await self.cancel_quietly(stream.run_id, request.thread_id)
                raise _Recreate("queued_too_long") from None
            raise StreamDropped("no event within the idle timeout", stream.run_id) from None
        finally:
            await stream.aclose()

    async def _poll_or_resume(self, scope: Scope, request: RunRequest, run_id: str, last_seq: int | None) -> RunState:
        resumes = 0
        while self.backend.supports_resume and last_seq is not None and resumes < MAX_STREAM_RESUMES:
            resumes += 1
            try:
                stream = await self.backend.resume(run_id, request.thread_id, last_seq)
            except Transient as exc:
                # The run itself is fine: back off and watch it again (a new run would race it for the thread).
                await self._recover(scope, exc.reason, exc.retry_after)
                continue
            except Permanent:
                break  # e.g. not created with stream=True: polling still works
            try:
                return await self._consume(scope, request, stream, recorded=True)
            except StreamDropped as drop:
                last_seq = drop.last_seq if drop.last_seq is not None else last_seq
                self._count("stream_dropped")
        return await self._poll(scope, request, run_id)

    async def _poll(self, scope: Scope, request: RunRequest, run_id: str) -> RunState:
        loop = asyncio.get_running_loop()
        queued_since: float | None = None
        while True:
            try:
                state = await self.backend.retrieve(run_id, request.thread_id)
            except Transient as exc:
                await self._recover(scope, exc.reason, exc.retry_after)  # keep watching the same run
                continue
            if state.settled:
                await self._settled(state)
                return state
            if state.status == "queued":
                queued_since = queued_since or loop.time()
                if loop.time() - queued_since > self.limits.queued_timeout:
                    await self.cancel_quietly(run_id, request.thread_id)
                    raise _Recreate("queued_too_long")
            else:
                queued_since = None
            await asyncio.sleep(self.limits.poll_interval if state.poll_after is None else state.poll_after)

    async def _record(self, scope: Scope, request: RunRequest, state: RunState) -> None:
        # A scope's first run has nothing on record to supersede: a scope with records is resumed through
        # `follow`, which adds the recorded run first. Skipping the lookup saves a database trip per run.
        first = not scope.run_ids
        scope.run_ids.add(state.id)
        scope.create_unknown = False
        scope.lost_create_since = None  # a later lost create gets its own wait
        previous = None if first else await self.store.latest_run(scope.turn_id, scope.path)
        if previous is not None and previous.remote_id != state.id and previous.status not in ("completed",):
            await self.store.update_run(previous.remote_id, status="superseded")
        record = RunRecord(
            remote_id=state.id,
            turn_id=scope.turn_id,
            scope=scope.path,
            agent=scope.agent,
            thread_id=request.thread_id,
            status=state.status,
            attempt=scope.attempts,
            input=request.input.to_json(),
            last_seq=state.last_seq,
            created_at=time.time(),
        )
        try:
            await self.store.record_run(record)
        except LeaseLost:
            # another instance owns the conversation now: the run just made is nobody's, so it must not go on
            await self.cancel_quietly(state.id, request.thread_id)
            raise

    # ---- recovery helpers ----

    async def _find_lost_create(self, scope: Scope, request: RunRequest) -> RunState | None:
        """The run a lost create became, if the provider shows it settled; recorded like any run of ours."""
        state = await self.backend.lost_create(request)
        if state is None:
            return None
        log.info("scope %s of turn %s: adopted %s, left by a create whose answer was lost", scope.path,
                 scope.turn_id, state.id)
        self._count("lost_create_adopted")
        await self._record(scope, request, state)
        await self._settled(state)
        return state

    async def _took_outputs(self, scope: Scope, request: RunRequest, prior: RunState) -> RunState | None:
        """The run `prior` if it moved on from waiting for our outputs (so it has them), watched to its end. Raises
        `Transient` when the provider cannot say now."""
        try:
            state = await self.backend.retrieve(prior.id, request.thread_id)
        except Transient:
            raise  # not known: the caller looks again rather than sending the outputs a second time
        except BackendError:
            return None
        if state.status in ("requires_action", "expired", "cancelled", "cancelling", "failed"):
            return None  # it never got them (or cannot use them): a new run receives them
        if state.settled:
            await self._settled(state)
            return state
        return await self._poll_or_resume(scope, request, prior.id, None)

    async def _wait_for_lock(self, scope: Scope, request: RunRequest, exc: ThreadLocked) -> bool:
        """Wait for whoever holds the thread; cancel the holder only when it is a stale run of our own. True when
        the holder cannot be known or stopped and the scope should move to a fresh thread instead."""
        holders = [exc.holder] if exc.holder else await self.backend.active_runs(request.thread_id)
        # A run of ours still recorded as live on this thread is stale (a thread's work is serialised): one stuck
        # in queued whose cancel did not go through, or one a failed turn left waiting for tool outputs.
        recorded = [r for r in await self.store.active_runs() if r.thread_id == request.thread_id]
        ours = [h for h in holders if h in scope.run_ids or any(r.remote_id == h for r in recorded)]
        if not holders:  # the provider names no holder (Responses): those of ours that may still be running
            ours = [r.remote_id for r in recorded if r.status in ("queued", "in_progress")]
        for holder in ours:
            await self.cancel_quietly(holder, request.thread_id)
        if not holders and not ours and scope.create_unknown:
            return await self._wait_for_lost_create(scope)
        if not holders and not ours:
            scope.unexplained_locks += 1
            if scope.unexplained_locks > UNEXPLAINED_LOCK_WAITS:
                scope.unexplained_locks = 0
                await self._recover(scope, "thread_locked_by_unknown_run")
                return True
        await self._recover(scope, "thread_locked", min(self.limits.backoff_max, self.limits.lock_wait / 8))
        return False

    async def _wait_for_lost_create(self, scope: Scope) -> bool:
        """The lock is most likely the create whose answer we lost, still working: give it up to `lock_wait` seconds
        to finish (the settle loop looks for what it left before each new try), for one unit of budget. True when it
        took too long and the scope should move to a fresh thread."""
        now = asyncio.get_running_loop().time()
        if scope.lost_create_since is None:
            scope.lost_create_since = now
            await self._recover(scope, "thread_locked_by_lost_create")
        elif now - scope.lost_create_since > self.limits.lock_wait:
            scope.lost_create_since = None
            await self._recover(scope, "thread_locked_by_unknown_run")
            return True
        await asyncio.sleep(self._backoff(1, min(self.limits.backoff_max, self.limits.lock_wait / 8)))
        return False

    async def cancel_quietly(self, run_id: str, thread_id: str) -> None:
        """Cancel a run of ours. Transient failures are retried: a run left stuck in queued would hold its thread
        (every later run on it fails as locked). A run still not cancelled stays recorded as running."""
        for attempt in range(1, self.limits.retry_budget + 2):
            try:
                await self.backend.cancel(run_id, thread_id)
                break
            except Transient as exc:
                if attempt > self.limits.retry_budget:
                    log.warning("cancel of %s did not go through after %d attempts: %s", run_id, attempt, exc)
                    return
                await asyncio.sleep(self._backoff(attempt, exc.retry_after))
            except BackendError as exc:
                log.info("cancel of %s did not go through: %s", run_id, exc)
                break
        await self.store.update_run(run_id, status="cancelled")

    async def _recover(self, scope: Scope, reason: str, retry_after: float | None = None) -> None:
        scope.recoveries[reason] = scope.recoveries.get(reason, 0) + 1
        self._count(reason)
        if reason == UNREACHABLE:  # no request reached the provider: wait for it (the turn timeout bounds this)
            attempt = scope.recoveries[reason]
        else:
            scope.attempts += 1
            attempt = scope.attempts
            if scope.attempts > self.limits.retry_budget:
                raise RunFailed(_budget_text(reason), f"budget_spent:{reason}")
        log.info("scope %s of turn %s: recovering from %s (attempt %d)", scope.path, scope.turn_id, reason, attempt)
        await scope.on_retry(reason, attempt)
        await asyncio.sleep(self._backoff(attempt, retry_after))

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry `attempt` (1-based): jittered, and never shorter than the provider's Retry-After."""
        return backoff_delay(attempt - 1, self.limits.backoff_base, self.limits.backoff_max, retry_after)

    def _count(self, reason: str) -> None:
        self.recovery_counts[reason] = self.recovery_counts.get(reason, 0) + 1
        self.metrics.recoveries.labels(reason).inc()

    async def _settled(self, state: RunState) -> None:
        used = state.usage
        tokens = RunTokens(used.input_tokens, used.cached_input_tokens, used.output_tokens) if used.total else None
        await self.store.update_run(state.id, status=state.status, last_seq=state.last_seq, tokens=tokens)
        self.metrics.runs.labels(state.status).inc()


class IdleWatch:
    """Expires an `asyncio.timeout` once the stream has been waited on for longer than allowed, with one timer per
    stream instead of one per event: marking a read costs a clock read, and the timer, when it fires early (events
    came meanwhile), re-arms itself for the current deadline. Time spent between reads (handling an event) never
    counts, as with a timeout around each read."""

    def __init__(self, timeout: asyncio.Timeout) -> None:
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._deadline: float | None = None  # None: not reading now
        self._timer: asyncio.TimerHandle | None = None

    def reading(self, seconds: float) -> None:
        """A read starts that may wait at most `seconds`."""
        self._deadline = deadline = self._loop.time() + seconds
        timer = self._timer
        if timer is not None and timer.when() > deadline:  # a shorter wait than the armed one (queued)
            timer.cancel()
            timer = None
        if timer is None:
            self._timer = self._loop.call_at(deadline, self._check)

    def done_reading(self) -> None:
        self._deadline = None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return  # between reads: the next read arms the timer again
        now = self._loop.time()
        if now >= deadline:
            self._timeout.reschedule(now)  # expires the timeout: the read in progress ends with TimeoutError
        else:
            self._timer = self._loop.call_at(deadline, self._check)


class _Opened:
    """A run's stream whose first events were already read (to learn and record the run's id); replays them, then
    the rest, or the drop that cut the stream while they were read."""

    def __init__(
        self,
        stream: RunStream,
        iterator: AsyncIterator[RunEvent],
        first: list[RunEvent],
        dropped: StreamDropped | None = None,
    ) -> None:
        self._stream = stream
        self._iterator = iterator
        self._first = first
        self._dropped = dropped
        self.recorded = False

    @property
    def run_id(self) -> str | None:
        return self._stream.run_id

    def __aiter__(self) -> AsyncIterator[RunEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[RunEvent]:
        for event in self._first:
            yield event
        if self._dropped is not None:
            raise self._dropped
        async for event in self._iterator:
            yield event

    async def aclose(self) -> None:
        await self._stream.aclose()


def _budget_text(reason: str) -> str:
    plain = {
        "rate_limit": "the AI provider kept rate-limiting us",
        "rate_limit_exceeded": "the AI provider kept rate-limiting us",
        "server_error": "the AI provider kept failing",
        "thread_locked": "the conversation stayed busy with another request",
        "thread_locked_by_unknown_run": "the conversation stayed busy with another request",
        "thread_locked_by_lost_create": "the conversation stayed busy with another request",
        "cancelled_by_provider": "the AI provider kept cancelling the work",
        "expired": "the work kept expiring at the AI provider",
        "queued_too_long": "the AI provider did not start the work",
        "connection": "the connection to the AI provider kept failing",
    }.get(reason, "the AI provider kept failing")
    return f"I could not finish this: {plain}, and I ran out of retries."

