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
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, field

import discord

from adapters.discord.clock import Clock, sleep_or_event
from adapters.discord.constants import (
    CANNOT_REPLY_WITHOUT_HISTORY,
    INTERACTION_EXPIRY_MARGIN,
    INTERACTION_TOKEN_LIFETIME,
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
from adapters.discord.routing import Route
from adapters.discord.splitting import split_message
from bot.types import Progress, Reply, TurnRef

log = logging.getLogger("switchboard.discord.surface")

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


@dataclass(slots=True)
class _Scan:
    head: discord.Message | None
    tail: list[str]  # contents of our later answer messages, oldest first


class DiscordSurface:
    platform = "discord"

    def __init__(self, client: discord.Client, clock: Clock, *, ready: asyncio.Event, typing_max: float = 3600.0):
        self._client = client
        self._clock = clock
        self._ready = ready
        self._typing_max = typing_max
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
                    view.typing = self._spawn(self._type(view))
                self._request_render(view)  # progress continues in a channel message

    # ------------------------------------------------------------------ Surface: progress

    async def progress(self, turn: TurnRef, event: Progress) -> None:
        if turn.id in self._finished:
            return  # a straggler after delivery must not restart typing or progress
        view = self._views.get(turn.id)
        if view is None:
            view = self._views[turn.id] = _TurnView(turn.id, Route.parse(turn.route))
        if view.closed:
            return
        if view.typing is None and (view.route.kind == "message" or self._live_for(view.route) is None):
            view.typing = self._spawn(self._type(view))
        if view.state.apply(event):
            self._request_render(view)

    def _live_for(self, route: Route) -> LiveInteraction | None:
        if route.kind != "interaction" or route.interaction_id is None:
            return None
        live = self._interactions.get(route.interaction_id)
        return live if live is not None and self.is_live(live) else None

    async def _type(self, view: _TurnView) -> None:
        await self._ready.wait()
        started = next_at = self._clock.monotonic()
        while not view.closed and self._clock.monotonic() - started < self._typing_max:
            try:
                await self._client.http.send_typing(view.route.channel_id)
            except discord.HTTPException as exc:
                log.info("typing indicator refused in channel %s: %s", view.route.channel_id, exc)
                return
            next_at += TYPING_RESEND_INTERVAL  # a fixed cadence, whatever the request took
            if await sleep_or_event(self._clock, next_at - self._clock.monotonic(), view.wake):
                return

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
                except discord.HTTPException as exc:
                    log.warning("progress update failed for turn %s: %s", view.turn_id, exc)

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
                    except discord.HTTPException as exc:
                        log.info("interaction response no longer editable (%s); continuing in the channel", exc)
                        live.handed_over = True
        channel = self._channel(view.route)
        if view.status_id is None:
            message = await self._send(
                channel, None, nonce_for(view.turn_id, "status"), embed=embed, reference=self._anchor_ref(view.route)
            )
            view.status_id = message.id if message is not None else None
        else:
            await channel.get_partial_message(view.status_id).edit(embed=embed)

    # ------------------------------------------------------------------ Surface: deliver

    async def deliver(self, turn: TurnRef, reply: Reply) -> str:
        await self._ready.wait()
        route = Route.parse(turn.route)
        view = self._views.get(turn.id)
        if view is not None:
            await self._close(view)
        chunks = split_message(format_reply(reply))
        try:
            live = self._live_for(route)
            if live is not None:
                try:
                    delivered = await self._deliver_interaction(live, chunks)
                    if delivered is not None:
                        return delivered
                except discord.HTTPException as exc:
                    log.warning("answering through the interaction failed (%s); posting in the channel", exc)
                    live.handed_over = True
                    self._recovering.add(turn.id)  # some followups may have been posted: do not repeat them
            status_id = view.status_id if view is not None else None
            scan_first = view is None or turn.id in self._recovering
            return await self._deliver_channel(turn.id, route, chunks, status_id, scan_first=scan_first)
        finally:
            self._views.pop(turn.id, None)
            self._recovering.discard(turn.id)
            self._finished[turn.id] = None
            while len(self._finished) > FINISHED_MEMORY:
                self._finished.popitem(last=False)
            if route.interaction_id is not None:
                self.forget_interaction(route.interaction_id)

    async def _deliver_interaction(self, live: LiveInteraction, chunks: list[str]) -> str | None:
        """Tail chunks as followups, then the head into the original response. None: the token was handed over."""
        async with live.lock:
            if live.handed_over:
                return None
            if len(chunks) > 1 and not live.touched:
                # the first followup after a defer would *replace* the "thinking" message: settle it first
                await live.interaction.edit_original_response(content=None, embed=placeholder_embed())
                live.touched = True
            for chunk in chunks[1:]:
                await live.interaction.followup.send(chunk, wait=True, allowed_mentions=NO_MENTIONS)
            await live.interaction.edit_original_response(content=chunks[0], embeds=[], allowed_mentions=NO_MENTIONS)
        return str(live.original_id)

    async def _deliver_channel(
        self, turn_id: str, route: Route, chunks: list[str], status_id: int | None, *, scan_first: bool
    ) -> str:
        channel = self._channel(route)
        existing: list[str] = []
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
            head = await self._send(
                channel,
                None,
                nonce_for(turn_id, "status"),
                embed=placeholder_embed(),
                reference=self._anchor_ref(route),
            )
            status_id = head.id if head is not None else None
        for index, chunk in enumerate(chunks[1:], start=1):
            if chunk in existing:
                existing.remove(chunk)
                continue
            await self._send(channel, chunk, nonce_for(turn_id, index))
        if status_id is not None:
            try:
                await channel.get_partial_message(status_id).edit(content=chunks[0], embeds=[])
                return str(status_id)
            except discord.NotFound:
                log.warning("the progress message of turn %s was deleted; posting the answer's start anew", turn_id)
        message = await self._send(channel, chunks[0], nonce_for(turn_id, "head"), reference=self._anchor_ref(route))
        return str(message.id) if message is not None else f"nonce:{nonce_for(turn_id, 'head')}"

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
        tail: list[str] = []
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
                    tail.append(message.content)
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

    async def _send(
        self,
        channel: discord.PartialMessageable,
        content: str | None,
        nonce: str,
        *,
        embed: discord.Embed | None = None,
        reference: discord.MessageReference | None = None,
    ) -> discord.Message | None:
        """Post once: the nonce makes a repeat within Discord's window return the first message. None means a
        message with this nonce was posted and then deleted (Discord answers 404 Unknown Message)."""
        try:
            return await channel.send(
                content,
                embed=embed,
                nonce=nonce,
                reference=reference,
                allowed_mentions=NO_MENTIONS,
                mention_author=False,
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

    def _spawn(self, coro: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def aclose(self) -> None:
        for view in list(self._views.values()):
            view.closed = True
            view.wake.set()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
