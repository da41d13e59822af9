"""`DiscordSurface`: how a turn looks on Discord while it runs and when it ends.

While a turn runs: the typing indicator (re-sent every 5 s) in the channel or thread, and one progress message
(an embed, one line per sub-assistant, the live text preview) edited at most once a second. For an `/ask` answered
in place, the deferred interaction response ("is thinking...") is the progress message while its token lives.

Delivery, exactly once. Discord returns a message's nonce only in the create response and the gateway event,
never when history is read back, and `enforce_nonce` only deduplicates within "a few minutes". So:

- every message we post carries a nonce derived from the turn id (discord.py always sends `enforce_nonce` with a
  nonce): a retried or repeated post within the window returns the first message instead of a duplicate;
- the durable link is the reply reference: the head message of an answer is a reply to the turn's anchor (the
  user's message, or the interaction's own response message), which Discord does return in history;
- the head is written last: it is the progress message (or a placeholder) edited into the first chunk after the
  other chunks were posted. "The head holds text and no progress embed" therefore means "fully delivered", which is
  what `find_delivery` checks by scanning the history after the anchor;
- `deliver` after a crash reuses a head it finds and skips chunks already posted (same text, ours, after the
  head), so a half-posted long answer is completed rather than repeated.

Failures (retry.py sorts them): every call of a delivery is retried with backoff on transient failures (5xx,
resets, timeouts; discord.py itself waits out 429s). A reply the interaction cannot take goes to the channel; a reply
the channel refuses (Missing Permissions, Missing Access, Unknown Channel) is sent to the user directly (a DM whose
first line says why); a reply that needs Read Message History goes without the reply link. When no way works,
`deliver` raises `bot.types.Undeliverable`. Typing and the "thinking" response never outlive the turn: typing
stops when the turn ends, whatever the delivery did, and a deferred response is left saying where the answer went.

Longer than our usual module on purpose: it is the Discord counterpart of the Slack turn view, one turn's screen
state (typing, progress message, parts, nonces) plus its delivery fallbacks, which must agree on what is already
posted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TypeVar

import discord

from adapters.discord.clock import Clock, sleep_or_event
from adapters.discord.constants import (
    CANNOT_REPLY_WITHOUT_HISTORY,
    DM_FALLBACK_NOTE,
    ELSEWHERE_NOTICE,
    INTERACTION_EXPIRY_MARGIN,
    INTERACTION_TOKEN_LIFETIME,
    MESSAGE_TEXT,
    PROGRESS_EDIT_INTERVAL,
    TYPING_RESEND_INTERVAL,
    UNKNOWN_MESSAGE,
)
from adapters.discord.rendering import (
    ProgressState,
    format_reply,
    handover_embed,
    is_final,
    is_status_message,
    nonce_for,
    placeholder_embed,
)
from adapters.discord.retry import CALL_ERRORS, RetryPolicy, is_transient, reason, with_retries
from adapters.discord.routing import Route
from bot.types import Platform, Progress, Reply, TurnRef, Undeliverable, Withdrawn

log = logging.getLogger("switchboard.discord.surface")

T = TypeVar("T")

#: nonces tried for a turn's progress message when the previous one was posted and then deleted
STATUS_GENERATIONS = 4
#: name prefix of the tasks that keep the typing indicator up
TYPING_TASK_PREFIX = "discord-typing-"
#: how many messages after the anchor a recovery scan reads (two history pages)
RECOVERY_SCAN_LIMIT = 200
#: delivered turn ids remembered so that late progress events are ignored
FINISHED_MEMORY = 1_000
NO_MENTIONS = discord.AllowedMentions.none()


@dataclass(slots=True)
class LiveInteraction:
    """A deferred `/ask` whose response message is (for now) the turn's progress message and answer."""

    interaction: discord.Interaction
    original_id: int
    handed_over: bool = False  # the token is (nearly) dead: everything goes to the channel from now on
    touched: bool = False  # the deferred "thinking" response was edited at least once
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    watchdog: asyncio.Task[None] | None = None

    @property
    def deadline(self) -> datetime.datetime:
        return self.interaction.created_at + INTERACTION_TOKEN_LIFETIME - INTERACTION_EXPIRY_MARGIN


@dataclass(slots=True)
class _TurnView:
    turn_id: str
    route: Route
    state: ProgressState = field(default_factory=ProgressState)
    status_id: int | None = None  # our progress message in the channel (reply to the anchor)
    typing: asyncio.Task[None] | None = None
    flusher: asyncio.Task[None] | None = None
    dirty: bool = False
    closed: bool = False
    last_render: float = float("-inf")
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    typed: asyncio.Event = field(default_factory=asyncio.Event)  # the first typing request was made (or skipped)


@dataclass(slots=True)
class _Scan:
    head: discord.Message | None
    tail: list[discord.Message]  # our later answer messages, oldest first


class DiscordSurface:
    platform: Platform = "discord"

    def __init__(
        self,
        client: discord.Client,
        clock: Clock,
        *,
        ready: asyncio.Event,
        typing_max: float = 3600.0,
        retry: RetryPolicy | None = None,
    ):
        self._client = client
        self._clock = clock
        self._ready = ready
        self._typing_max = typing_max
        self.retry = retry or RetryPolicy()
        self._views: dict[str, _TurnView] = {}
        self._interactions: dict[int, LiveInteraction] = {}
        self._recovering: set[str] = set()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ registration from the command handler

    def register_interaction(self, interaction: discord.Interaction, original_id: int) -> LiveInteraction:
        live = LiveInteraction(interaction, original_id)
        self._interactions[interaction.id] = live
        live.watchdog = self._spawn(self._watch_expiry(live))
        return live

    def is_live(self, live: LiveInteraction) -> bool:
        now = datetime.datetime.fromtimestamp(self._clock.now(), tz=datetime.UTC)
        return not live.handed_over and now < live.deadline

    async def _watch_expiry(self, live: LiveInteraction) -> None:
        """Before the token dies, leave the response in a final, honest state and move the turn to the channel."""
        now = datetime.datetime.fromtimestamp(self._clock.now(), tz=datetime.UTC)
        await self._clock.sleep((live.deadline - now).total_seconds())
        if self._interactions.get(live.interaction.id) is live:
            await self._hand_over(live)
            self._interactions.pop(live.interaction.id, None)  # the token is of no use any more

    async def _hand_over(self, live: LiveInteraction) -> None:
        async with live.lock:
            if live.handed_over:
                return
            live.handed_over = True
            with contextlib.suppress(discord.HTTPException):
                await live.interaction.edit_original_response(content=None, embed=handover_embed())
        for view in self._views.values():
            if view.route.interaction_id == live.interaction.id and not view.closed:
                if view.typing is None:
                    view.typing = self._spawn(self._type(view), f"{TYPING_TASK_PREFIX}{view.turn_id}")
                self._request_render(view)  # progress continues in a channel message

    # ------------------------------------------------------------------ Surface: progress

    async def progress(self, turn: TurnRef, event: Progress) -> None:
        if turn.id in self._finished:
            return  # a straggler after delivery must not restart typing or progress
        if isinstance(event, Withdrawn):  # no reply follows: stop typing, forget the turn
            withdrawn = self._views.pop(turn.id, None)
            if withdrawn is not None:
                await self._close(withdrawn)
            return
        view = self._views.get(turn.id)
        if view is None:
            view = self._views[turn.id] = _TurnView(turn.id, Route.parse(turn.route))
        if view.closed:
            return
        if view.typing is None and (view.route.kind == "message" or self._live_for(view.route) is None):
            view.typing = self._spawn(self._type(view), f"{TYPING_TASK_PREFIX}{turn.id}")
        if view.state.apply(event):
            self._request_render(view)

    def _live_for(self, route: Route) -> LiveInteraction | None:
        if route.kind != "interaction" or route.interaction_id is None:
            return None
        live = self._interactions.get(route.interaction_id)
        return live if live is not None and self.is_live(live) else None

    async def _type(self, view: _TurnView) -> None:
        try:
            await self._ready.wait()
            started = next_at = self._clock.monotonic()
            while not view.closed and self._clock.monotonic() - started < self._typing_max:
                try:
                    await self._client.http.send_typing(view.route.channel_id)
                except CALL_ERRORS as exc:
                    if not is_transient(exc):
                        log.info("typing indicator refused in channel %s: %s", view.route.channel_id, exc)
                        return
                    log.info("typing indicator failed in channel %s (%s); trying again", view.route.channel_id, exc)
                finally:
                    view.typed.set()
                next_at += TYPING_RESEND_INTERVAL  # a fixed cadence, whatever the request took
                if await sleep_or_event(self._clock, next_at - self._clock.monotonic(), view.wake):
                    return
        finally:
            view.typed.set()

    def _request_render(self, view: _TurnView) -> None:
        view.dirty = True
        if view.flusher is None or view.flusher.done():
            view.flusher = self._spawn(self._flush(view))

    async def _flush(self, view: _TurnView) -> None:
        """Render the latest state, at most once per PROGRESS_EDIT_INTERVAL; coalesces everything in between."""
        await self._ready.wait()
        while view.dirty and not view.closed:
            wait = view.last_render + PROGRESS_EDIT_INTERVAL - self._clock.monotonic()
            if wait > 0 and await sleep_or_event(self._clock, wait, view.wake):
                return
            async with view.lock:
                if view.closed:
                    return
                view.dirty = False
                view.last_render = self._clock.monotonic()  # pacing counts from each request's start
                try:
                    await self._render(view)
                except CALL_ERRORS as exc:
                    log.warning("progress update failed for turn %s: %s", view.turn_id, reason(exc))

    async def _render(self, view: _TurnView) -> None:
        embed = view.state.embed()
        live = self._interactions.get(view.route.interaction_id or 0) if view.route.kind == "interaction" else None
        if live is not None and self.is_live(live):
            async with live.lock:
                if not live.handed_over:
                    try:
                        await live.interaction.edit_original_response(content=None, embed=embed)
                        live.touched = True
                        return
                    except CALL_ERRORS as exc:
                        if is_transient(exc):
                            raise  # the next render tries again
                        log.info("interaction response no longer editable (%s); continuing in the channel", exc)
                        live.handed_over = True
        channel = self._channel(view.route)
        if view.status_id is None:
            message = await self._post_status(channel, view.turn_id, view.route, embed)
            view.status_id = message.id if message is not None else None
        else:
            try:
                await channel.get_partial_message(view.status_id).edit(embed=embed)
            except discord.NotFound:
                view.status_id = None  # someone deleted it: the next render posts a new one
                raise

    # ------------------------------------------------------------------ Surface: deliver

    async def deliver(self, turn: TurnRef, reply: Reply) -> str:
        await self._ready.wait()
        route = Route.parse(turn.route)
        view = self._views.get(turn.id)
        if view is not None:
            await self._close(view)
        chunks = MESSAGE_TEXT.split(format_reply(reply))
        live = self._live_for(route)
        leftovers: list[int] = []  # our messages in the channel that are not (yet) a whole answer
        try:
            try:
                return await self._deliver_here(turn.id, route, view, chunks, live, leftovers)
            except Exception as exc:
                log.warning(
                    "could not post the reply of turn %s in channel %s (%s); trying another way",
                    turn.id, route.channel_id, reason(exc),
                )
                await self._remove(self._channel(route), leftovers)
                return await self._deliver_elsewhere(turn, route, reply, exc, live)
        finally:
            self._views.pop(turn.id, None)
            self._recovering.discard(turn.id)
            self._finished[turn.id] = None
            while len(self._finished) > FINISHED_MEMORY:
                self._finished.popitem(last=False)
            if route.interaction_id is not None:
                self.forget_interaction(route.interaction_id)

    async def _deliver_here(
        self,
        turn_id: str,
        route: Route,
        view: _TurnView | None,
        chunks: list[str],
        live: LiveInteraction | None,
        leftovers: list[int],
    ) -> str:
        """Where the reply belongs: the interaction's response while its token lives, else the channel."""
        if live is not None:
            try:
                delivered = await self._deliver_interaction(live, chunks)
                if delivered is not None:
                    return delivered
            except CALL_ERRORS as exc:
                log.warning("answering through the interaction failed (%s); posting in the channel", reason(exc))
                live.handed_over = True
                self._recovering.add(turn_id)  # some followups may have been posted: do not repeat them
        status_id = view.status_id if view is not None else None
        scan_first = view is None or turn_id in self._recovering
        return await self._deliver_channel(turn_id, route, chunks, status_id, leftovers, scan_first=scan_first)

    async def _deliver_interaction(self, live: LiveInteraction, chunks: list[str]) -> str | None:
        """Tail chunks as followups, then the head into the original response. None: the token was handed over."""
        interaction = live.interaction
        async with live.lock:
            if live.handed_over:
                return None
            if len(chunks) > 1 and not live.touched:
                # the first followup after a defer would *replace* the "thinking" message: settle it first
                await self._retrying(
                    lambda: interaction.edit_original_response(content=None, embed=placeholder_embed()),
                    "settling the interaction response",
                )
                live.touched = True
            followups: list[discord.WebhookMessage] = []
            try:
                for chunk in chunks[1:]:
                    followups.append(
                        await self._retrying(
                            functools.partial(
                                interaction.followup.send, chunk, wait=True, allowed_mentions=NO_MENTIONS
                            ),
                            "posting a followup",
                        )
                    )
                await self._retrying(
                    lambda: interaction.edit_original_response(
                        content=chunks[0], embeds=[], allowed_mentions=NO_MENTIONS
                    ),
                    "editing the interaction response into the answer",
                )
            except BaseException:
                # the answer is posted again elsewhere: its parts already here would be read twice
                for followup in followups:
                    with contextlib.suppress(*CALL_ERRORS):
                        await followup.delete()
                raise
        return str(live.original_id)

    async def _deliver_channel(
        self,
        turn_id: str,
        route: Route,
        chunks: list[str],
        status_id: int | None,
        leftovers: list[int],
        *,
        scan_first: bool,
    ) -> str:
        channel = self._channel(route)
        existing: list[discord.Message] = []
        if scan_first:
            scan = await self._scan(route)
            if scan.head is not None:
                if is_final(scan.head):  # the head is written last: a final head means all of it is there
                    return str(scan.head.id)
                status_id = scan.head.id
                existing = scan.tail
        if status_id is None and len(chunks) == 1:
            message = await self._send(channel, chunks[0], nonce_for(turn_id, 0), reference=self._anchor_ref(route))
            return str(message.id) if message is not None else f"nonce:{nonce_for(turn_id, 0)}"
        if status_id is None:
            placeholder = await self._post_status(channel, turn_id, route, placeholder_embed())
            if placeholder is None:  # no head to write last: the parts in reading order
                delivered = await self._post_in_order(channel, turn_id, route, chunks, "head", leftovers)
                leftovers.clear()
                return delivered
            status_id = placeholder.id
        leftovers.append(status_id)
        tail: list[int] = []
        for index, chunk in enumerate(chunks[1:], start=1):
            found = next((m for m in existing if m.content == chunk), None)
            if found is not None:
                existing.remove(found)
                message_id: int | None = found.id
            else:
                message = await self._send(channel, chunk, nonce_for(turn_id, index))
                message_id = message.id if message is not None else None
            if message_id is not None:
                tail.append(message_id)
                leftovers.append(message_id)
        head_id = status_id
        try:
            await self._retrying(
                lambda: channel.get_partial_message(head_id).edit(content=chunks[0], embeds=[]),
                "editing the answer's first part into place",
            )
            leftovers.clear()
            return str(status_id)
        except discord.NotFound:
            log.warning("the progress message of turn %s was deleted; posting the answer anew", turn_id)
            leftovers.remove(status_id)
        # the tail already posted would now come before the answer's start: post it all again, then remove it
        delivered = await self._post_in_order(channel, turn_id, route, chunks, "again", leftovers)
        await self._remove(channel, tail)
        leftovers.clear()
        return delivered

    async def _post_in_order(
        self,
        channel: discord.PartialMessageable,
        turn_id: str,
        route: Route,
        chunks: list[str],
        tag: str,
        leftovers: list[int],
    ) -> str:
        """Post every part, the first as the reply to the anchor (each noted in `leftovers` until the caller has
        the whole answer); returns the first one's id."""
        first: discord.Message | None = None
        for index, chunk in enumerate(chunks):
            reference = self._anchor_ref(route) if index == 0 else None
            message = await self._send(channel, chunk, nonce_for(turn_id, f"{tag}-{index}"), reference=reference)
            if message is not None:
                first = first or message
                leftovers.append(message.id)
        return str(first.id) if first is not None else f"nonce:{nonce_for(turn_id, f'{tag}-0')}"

    async def _post_status(
        self, channel: discord.PartialMessageable, turn_id: str, route: Route, embed: discord.Embed
    ) -> discord.Message | None:
        """Post the progress message (a reply to the anchor). Its nonce is derived from the turn, so a repeat
        returns the one already there; when that one was deleted, the next nonce of a fixed series is tried, so a
        restarted process lands on the same message. None: every one of them was posted and deleted."""
        for generation in range(STATUS_GENERATIONS):
            nonce = nonce_for(turn_id, "status" if generation == 0 else f"status-{generation}")
            message = await self._send(channel, None, nonce, embed=embed, reference=self._anchor_ref(route))
            if message is not None:
                return message
        return None

    async def _remove(self, channel: discord.PartialMessageable, message_ids: list[int]) -> None:
        """Delete messages of ours that must not stay (best effort, retried on transient failures)."""
        for message_id in list(message_ids):
            partial = channel.get_partial_message(message_id)
            try:
                await self._retrying(partial.delete, "removing a message that must not stay")
            except discord.NotFound:
                pass
            except CALL_ERRORS as exc:
                log.warning("could not remove message %s: %s", message_id, reason(exc))

    async def _deliver_elsewhere(
        self, turn: TurnRef, route: Route, reply: Reply, failure: Exception, live: LiveInteraction | None
    ) -> str:
        """The channel would not take the reply: send it to the user directly (a DM saying why). The deferred
        response of an `/ask`, if any, is left saying where the answer went. Raises `Undeliverable` when the DM
        fails too, or when the failure was not about this channel and there is nobody to send it to."""
        user = turn.users[-1] if turn.users else None
        if user is None or not user.isdigit() or route.guild_id is None:  # (a DM already: no other way)
            await self._settle_interaction(live, None)
            raise Undeliverable(reason(failure), f"channel {route.channel_id}, no other way") from failure
        try:
            dm = await self._retrying(
                lambda: self._client.create_dm(discord.Object(int(user))), "opening a DM with the user"
            )
            chunks = MESSAGE_TEXT.split(DM_FALLBACK_NOTE.format(channel=route.channel_id) + format_reply(reply))
            first: discord.Message | None = None
            for index, chunk in enumerate(chunks):
                message = await self._send(dm, chunk, nonce_for(turn.id, f"dm-{index}"))
                first = first or message
        except Exception as exc:
            log.warning("sending the reply of turn %s to user %s directly failed too (%s)", turn.id, user, reason(exc))
            await self._settle_interaction(live, None)
            raise Undeliverable(reason(failure), f"channel {route.channel_id}; DM: {reason(exc)}") from failure
        log.info("the reply of turn %s was sent to user %s directly", turn.id, user)
        await self._settle_interaction(live, ELSEWHERE_NOTICE)
        return str(first.id) if first is not None else f"nonce:{nonce_for(turn.id, 'dm-0')}"

    async def _settle_interaction(self, live: LiveInteraction | None, notice: str | None) -> None:
        """Leave a deferred response in a final state (best effort): the notice, or removed when there is none."""
        now = datetime.datetime.fromtimestamp(self._clock.now(), tz=datetime.UTC)
        if live is None or now >= live.deadline:  # (handed over or not: only a dead token makes it pointless)
            return
        interaction = live.interaction
        try:
            if notice is not None:
                await self._retrying(
                    lambda: interaction.edit_original_response(content=notice, embeds=[]), "settling the response"
                )
            else:
                await self._retrying(lambda: interaction.delete_original_response(), "removing the response")
        except CALL_ERRORS as exc:
            log.info("could not settle the interaction response: %s", reason(exc))

    # ------------------------------------------------------------------ Surface: find_delivery

    async def find_delivery(self, turn: TurnRef) -> str | None:
        await self._ready.wait()
        route = Route.parse(turn.route)
        self._recovering.add(turn.id)
        if route.kind == "interaction":
            original = await self._fetch_original(route)
            if original is not None and is_final(original):
                return str(original.id)
        scan = await self._scan(route)
        if scan.head is not None and is_final(scan.head):
            return str(scan.head.id)
        return None

    async def _fetch_original(self, route: Route) -> discord.Message | None:
        live = self._live_for(route)
        try:
            if live is not None:
                return await live.interaction.original_response()
            return await self._channel(route).fetch_message(route.anchor_id)
        except discord.HTTPException as exc:
            log.info("cannot read the response of interaction %s: %s", route.interaction_id, exc)
            return None

    async def _scan(self, route: Route) -> _Scan:
        """Our reply to the anchor (the head) and our answer messages after it."""
        me = self._me()
        head: discord.Message | None = None
        tail: list[discord.Message] = []
        try:
            async for message in self._channel(route).history(
                limit=RECOVERY_SCAN_LIMIT, after=discord.Object(route.anchor_id), oldest_first=True
            ):
                if message.author.id != me:
                    continue
                replies_to_anchor = message.reference is not None and message.reference.message_id == route.anchor_id
                if head is None:
                    if replies_to_anchor:
                        head = message
                elif not replies_to_anchor and not is_status_message(message):
                    tail.append(message)
        except discord.HTTPException as exc:
            log.warning("cannot read the history of channel %s to check a delivery: %s", route.channel_id, exc)
        return _Scan(head, tail)

    # ------------------------------------------------------------------ helpers

    def _me(self) -> int:
        user = self._client.user
        assert user is not None, "the Discord client is not logged in"
        return user.id

    def _channel(self, route: Route) -> discord.PartialMessageable:
        return self._client.get_partial_messageable(route.channel_id, guild_id=route.guild_id)

    def _anchor_ref(self, route: Route) -> discord.MessageReference:
        return discord.MessageReference(
            message_id=route.anchor_id, channel_id=route.channel_id, guild_id=route.guild_id, fail_if_not_exists=False
        )

    async def _retrying(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        return await with_retries(call, self.retry, what)

    async def _send(
        self,
        channel: discord.PartialMessageable | discord.DMChannel,
        content: str | None,
        nonce: str,
        *,
        embed: discord.Embed | None = None,
        reference: discord.MessageReference | None = None,
    ) -> discord.Message | None:
        """Post once: the nonce makes a repeat within Discord's window return the first message (which is also what
        makes retrying a post after a failure safe). None means a message with this nonce was posted and then
        deleted (Discord answers 404 Unknown Message)."""
        try:
            return await self._retrying(
                lambda: channel.send(
                    content,
                    # discord.py's overloads leave out the None that the implementation takes (and defaults to)
                    embed=embed,  # type: ignore[arg-type]
                    nonce=nonce,
                    reference=reference,  # type: ignore[arg-type]
                    allowed_mentions=NO_MENTIONS,
                    mention_author=False,
                ),
                "posting a message",
            )
        except discord.NotFound as exc:
            if exc.code == UNKNOWN_MESSAGE:
                log.info("a message with nonce %s was already posted and deleted; not posting it again", nonce)
                return None
            raise
        except discord.Forbidden as exc:
            if exc.code != CANNOT_REPLY_WITHOUT_HISTORY or reference is None:
                raise
            log.warning(
                "no Read Message History permission in channel %s: answering without a reply link, so a delivery "
                "cut by a crash can only be deduplicated within Discord's nonce window",
                channel.id,
            )
            return await self._send(channel, content, nonce, embed=embed)

    async def _close(self, view: _TurnView) -> None:
        """Stop typing and progress updates; waits for an edit in flight so it cannot land after the answer."""
        view.closed = True
        view.wake.set()
        for task in (view.flusher, view.typing):
            if task is not None and task is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def forget_interaction(self, interaction_id: int) -> None:
        live = self._interactions.pop(interaction_id, None)
        if live is not None and live.watchdog is not None:
            live.watchdog.cancel()

    def _spawn(self, coro: Coroutine[object, object, None], name: str | None = None) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        if name is not None:
            task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def settled(self, turn_id: str) -> None:
        """Wait until the progress of `turn_id` received so far has been rendered (or failed to be). For tests and
        benchmarks that need a deterministic call order."""
        view = self._views.get(turn_id)
        if view is None:
            return
        if view.typing is not None:
            await view.typed.wait()
        while view.flusher is not None and not view.flusher.done():
            await asyncio.wait({view.flusher})

    def typing_running(self, turn_id: str | None = None) -> int:
        """How many turns (or whether `turn_id`) still send the typing indicator."""
        prefix = TYPING_TASK_PREFIX + (turn_id or "")
        return sum(1 for t in self._background if t.get_name().startswith(prefix) and not t.done())

    async def aclose(self) -> None:
        for view in list(self._views.values()):
            view.closed = True
            view.wake.set()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
