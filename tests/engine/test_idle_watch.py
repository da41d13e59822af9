"""`bot.supervisor.IdleWatch`: one timer per stream that ends a read waiting longer than allowed, never counts the
time between reads, and leaves a read that gets its event in time alone, however long the stream lasts."""

from __future__ import annotations

import asyncio

import pytest

from bot.supervisor import IdleWatch


async def test_a_stream_whose_events_keep_coming_outlives_the_idle_timeout():
    events: asyncio.Queue[int] = asyncio.Queue()

    async def feed() -> None:
        for n in range(12):
            await asyncio.sleep(0.02)
            events.put_nowait(n)

    feeder = asyncio.create_task(feed())
    got = []
    async with asyncio.timeout(None) as deadline:
        watch = IdleWatch(deadline)
        for _ in range(12):  # 12 x 20 ms: far longer than the 60 ms allowed per read
            watch.reading(0.06)
            got.append(await events.get())
            watch.done_reading()
        watch.close()
    await feeder
    assert got == list(range(12)) and not deadline.expired()


async def test_a_read_waiting_too_long_ends_with_timeout():
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(None) as deadline:
            watch = IdleWatch(deadline)
            watch.reading(0.05)
            await never
    assert deadline.expired() and 0.04 <= loop.time() - started < 1.0


async def test_time_between_reads_does_not_count_and_a_shorter_wait_is_honoured():
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(None) as deadline:
        watch = IdleWatch(deadline)
        watch.reading(0.05)
        watch.done_reading()
        await asyncio.sleep(0.1)  # handling an event: longer than the wait allowed, but no read is waiting
        assert not deadline.expired()
        watch.reading(10.0)
        watch.done_reading()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(None) as deadline:
            watch = IdleWatch(deadline)
            watch.reading(10.0)
            watch.reading(0.05)  # a queued run's shorter limit replaces the armed one
            await asyncio.sleep(5)
    assert loop.time() - started < 1.0
