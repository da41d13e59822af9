"""What admitting a message costs, and whether message-rate limits hold exactly when many people write at once.

    python -m benchmarks.admission [--messages 2000] [--senders 50] [--limit 7] [--store postgresql]

Prints the wall time and process CPU per stored message of `Store.add_inbound` (no limits, the path before access
control existed) and `Store.admit_inbound` (with no quotas, and with a per-user and a per-conversation quota), each
on a fresh SQLite file (or, with `--store postgresql`, a fresh database on a throwaway local PostgreSQL); then
`--senders` concurrent `Bot.accept` calls from one user under a limit of `--limit` per minute, repeated over 20
minutes of a pinned clock, and how many got through each minute (must equal the limit).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.common import make_team
from bot.config import Budgets
from bot.engine import Bot
from bot.types import Inbound, Refused
from storage.base import InboxMessage, Store
from storage.select import store_for

MINUTES = 20


def message(i: int) -> InboxMessage:
    return InboxMessage(f"e{i}", f"console:bench:c{i % 50}", "console", "console:bench", f"u{i % 20}", "hello there",
                        {}, time.time())


async def per_message(where: Callable[[str], str], name: str, store_one: Callable[[Store, int], Awaitable[object]],
                      count: int) -> None:
    store = store_for(where(name))
    await store.open()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(count):
            await store_one(store, i)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await store.close()
    print(f"{name:<32} {wall / count * 1e6:8.0f} us wall  {cpu / count * 1e6:8.0f} us CPU per message")


async def exactness(where: Callable[[str], str], senders: int, limit: int) -> None:
    cfg = dataclasses.replace(make_team("http://127.0.0.1:9/v1", where("limits")),
                              budgets=Budgets(user_messages_per_minute=limit))
    bot = Bot.from_config(cfg)
    await bot.store.open()  # no start, no workers: nothing is answered, only admitted
    await bot.mailbox.close()
    admitted = []
    try:
        for minute in range(MINUTES):
            bot.policy._clock = lambda m=minute: 1_800_000_000.0 + m * 60  # type: ignore[misc]
            outcomes = await asyncio.gather(
                *(bot.accept(Inbound("console", f"m{minute}-{i}", f"console:bench:{minute}-{i}", "console:bench",
                                     "flood", "hello")) for i in range(senders)),
                return_exceptions=True,
            )
            unexpected = [o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, Refused)]
            assert not unexpected, unexpected
            admitted.append(sum(not isinstance(o, BaseException) for o in outcomes))
    finally:
        await bot.backend.close()
        await bot.store.close()
    exact = all(a == limit for a in admitted)
    print(f"{senders} concurrent senders, limit {limit}/min, {MINUTES} minutes: admitted per minute "
          f"min {min(admitted)} max {max(admitted)} -> {'exact' if exact else 'NOT EXACT'}")


async def main(count: int, senders: int, limit: int, kind: str) -> None:
    quotas = {"rate:user": 10**9, "rate:conversation": 10**9}
    cluster: Any = None
    if kind == "postgresql":
        from fakes.pg_cluster import PgCluster

        cluster = PgCluster.start()
    try:
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)

            def where(db: str) -> str:
                if cluster is not None:
                    return str(cluster.create_database("".join(c for c in db if c.isalnum()).lower()))
                return str(folder / f"{db}.db")

            print(f"store: {kind}")
            await per_message(where, "add_inbound", lambda s, i: s.add_inbound(message(i)), count)
            await per_message(where, "admit_inbound (no quotas)", lambda s, i: s.admit_inbound(message(i), {}, 1),
                              count)
            await per_message(where, "admit_inbound (2 quotas)",
                              lambda s, i: s.admit_inbound(message(i), quotas, 1), count)
            await exactness(where, senders, limit)
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--limit", type=int, default=7)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.senders, args.limit, args.store))
