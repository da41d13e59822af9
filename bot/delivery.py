"""Delivery: a turn's progress events and its one reply, handed to the surface of the turn's platform.

A reply is posted at most once across crashes (a resumed turn asks the surface whether it is already there, retrying
a lookup that fails, and posts anyway when the lookup keeps failing: a possible duplicate beats silence), and every
delivery ends the turn `delivered`, with the platform's reference or `undeliverable:<reason>`, never `delivering`;
progress is best effort (a surface that fails to show it is logged and ignored).
"""

from __future__ import annotations

import asyncio
import logging

from bot.backoff import retrying
from bot.config import Limits
from bot.metrics import Metrics
from bot.types import UNDELIVERABLE_PREFIX, Progress, Reply, Surface, TurnRef, Undeliverable
from storage.base import Store, TurnRecord, TurnUpdate

log = logging.getLogger("switchboard.engine.delivery")

#: tries of `Surface.find_delivery` before a resumed reply is posted without knowing whether it is already there
FIND_DELIVERY_ATTEMPTS = 3


class Delivery:
    def __init__(self, store: Store, metrics: Metrics, limits: Limits) -> None:
        #: platform -> its surface; shared, not copied, by `Bot.surfaces` (benchmarks wrap surfaces in place)
        self.surfaces: dict[str, Surface] = {}
        self._store = store
        self._metrics = metrics
        self._limits = limits

    def add_surface(self, surface: Surface) -> None:
        self.surfaces[surface.platform] = surface

    def has_surface(self, platform: str) -> bool:
        return platform in self.surfaces

    async def progress(self, ref: TurnRef, event: Progress) -> None:
        surface = self.surfaces.get(ref.platform)
        if surface is None:
            return
        try:
            await surface.progress(ref, event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("progress update to %s failed for turn %s", ref.platform, ref.id, exc_info=True)

    async def deliver(self, turn: TurnRecord, ref: TurnRef, event_ids: list[str], check_first: bool) -> None:
        """Post the turn's recorded reply and record the outcome. `check_first` (a resumed turn): look for it on the
        platform before posting. The caller made sure the platform has a surface (`has_surface`)."""
        surface = self.surfaces[ref.platform]
        assert turn.reply_text is not None
        delivered: str | None = None
        if check_first:
            delivered = await self._find(surface, ref)
        if delivered is None:
            if turn.state != "delivering":
                await self._store.update_turn(turn.id, TurnUpdate(state="delivering"))
            reason: str | None = None
            try:
                delivered = await surface.deliver(ref, Reply(turn.reply_text, turn.reply_kind or "answer"))
            except asyncio.CancelledError:
                raise  # stopping: the turn stays `delivering` and resumes (find_delivery first) on the next start
            except Undeliverable as exc:
                reason = exc.reason
                log.warning("turn %s: its reply could not be delivered on %s: %s", turn.id, ref.platform, exc)
            except Exception as exc:
                reason = f"error:{type(exc).__name__}"
                log.exception("turn %s: delivering its reply to %s failed unexpectedly", turn.id, ref.platform)
            if reason is None:
                self._metrics.deliveries.labels(ref.platform, turn.reply_kind or "answer").inc()
            else:
                # The surface already retried and tried every other way: leaving the turn `delivering` would only
                # retry it on the next message or restart, behind the user's back. Record the outcome instead.
                self._metrics.undeliverable.labels(ref.platform).inc()
                delivered = f"{UNDELIVERABLE_PREFIX}{reason}"
        await self._store.finish_delivery(turn.id, delivered or "-", event_ids)

    async def _find(self, surface: Surface, ref: TurnRef) -> str | None:
        """Where the reply was posted before a crash, or None: not posted, or the platform could not tell us."""
        try:
            return await retrying(
                lambda: surface.find_delivery(ref),
                attempts=FIND_DELIVERY_ATTEMPTS,
                base=self._limits.backoff_base,
                cap=self._limits.backoff_max,
                retryable=lambda _: True,
                what=f"looking for turn {ref.id}'s reply on {ref.platform}",
                log=log,
            )
        except Exception as exc:
            log.warning(
                "turn %s: could not tell whether its reply is already on %s (%s: %s); posting it, so it may be a "
                "duplicate", ref.id, ref.platform, type(exc).__name__, exc,
            )
            return None
