"""Process settings for an engine holding many turns in flight, applied by `switchboard run` and `switchboard chat`
(and by the benchmarks, which measure what those commands run): `async with tuned_process(): ...`.

Two settings of the interpreter, both restored on exit:

* Python's automatic full collection is off, and a full collection runs every `FULL_COLLECTION_SECONDS` instead.
  The interpreter starts one whenever a quarter more objects have survived into the oldest generation; with turns
  in flight for a minute, their live state (coroutines, streams, buffers) is exactly such survivors, so full
  collections came every few seconds and each walked all of it: 0.9-3.5 s pauses at 3,000 conversations, which were
  the seconds-late thinking indicators of docs/PERFORMANCE.md "Big rooms". A turn leaves no cyclic garbage (plain
  turns none, delegated turns 0.2 objects each, measured with `gc.DEBUG_SAVEALL`), so reference counting frees
  nearly everything and the periodic collection only catches the rest. Objects alive at start (modules, classes)
  are frozen out of collections altogether (`gc.freeze`). Young collections keep their defaults.
* The interpreter's thread switch interval is `SWITCH_INTERVAL_SECONDS` instead of 5 ms: the SQLite store's thread
  waits for the event loop's thread to hand over the GIL before each database operation, so under load every
  database trip waited up to 5 ms, three of them before a turn's indicator.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from collections.abc import AsyncIterator

log = logging.getLogger("switchboard.tuning")

FULL_COLLECTION_SECONDS = 600.0
NEVER = 1_000_000_000  # an oldest-generation threshold the interpreter never reaches
SWITCH_INTERVAL_SECONDS = 0.0005
SLOW_COLLECTION_SECONDS = 0.1  # a periodic collection longer than this is logged


@contextlib.asynccontextmanager
async def tuned_process(full_collection_seconds: float = FULL_COLLECTION_SECONDS) -> AsyncIterator[None]:
    threshold, interval = gc.get_threshold(), sys.getswitchinterval()
    gc.freeze()
    gc.set_threshold(threshold[0], threshold[1], NEVER)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    collector = asyncio.create_task(_collect_every(full_collection_seconds), name="switchboard-gc")
    try:
        yield
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        gc.set_threshold(*threshold)
        sys.setswitchinterval(interval)
        gc.unfreeze()


async def _collect_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        started = time.perf_counter()
        found = gc.collect()
        took = time.perf_counter() - started
        (log.info if took > SLOW_COLLECTION_SECONDS else log.debug)(
            "full garbage collection: %d unreachable objects, %.0f ms", found, took * 1000)
