"""`switchboard.tuning.tuned_process`: the interpreter settings it promises while the engine runs, a periodic full
collection instead of the automatic one, and everything as it was afterwards."""

from __future__ import annotations

import asyncio
import gc
import sys

from switchboard import tuning


async def test_settings_inside_and_restored_after():
    threshold, interval = gc.get_threshold(), sys.getswitchinterval()
    async with tuning.tuned_process():
        assert gc.get_threshold()[2] == tuning.NEVER and gc.get_threshold()[:2] == threshold[:2]
        assert sys.getswitchinterval() == tuning.SWITCH_INTERVAL_SECONDS
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == threshold and sys.getswitchinterval() == interval
    assert gc.get_freeze_count() == 0


async def test_cyclic_garbage_is_collected_by_the_periodic_collection():
    collected = asyncio.Event()

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2:
            collected.set()

    gc.callbacks.append(watch)
    try:
        async with tuning.tuned_process(full_collection_seconds=0.05):
            await asyncio.wait_for(collected.wait(), 5)
    finally:
        gc.callbacks.remove(watch)
