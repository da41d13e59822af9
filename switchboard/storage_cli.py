"""`switchboard prune` (delete what `[retention]` no longer keeps, now) and `switchboard migrate-store --to URL`
(copy the team's SQLite database into PostgreSQL; idempotent). Both print what they did, per table.

Prune is safe while the bot runs (it never touches unfinished work). Migrate-store reads the SQLite file while
holding its instance lock, so the bot using it must be stopped; point the team at the URL afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any

from bot.config import ConfigError, TeamConfig, load_config
from storage.base import StoreError
from storage.select import is_postgres, redacted, store_for


def add_commands(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    prune = with_config(sub.add_parser(
        "prune", help="delete delivered messages, finished runs, old transcripts and audit entries now ([retention])"))
    prune.set_defaults(handler=prune_command)
    copy = with_config(sub.add_parser(
        "migrate-store", help="copy the SQLite database into PostgreSQL (safe to repeat)"))
    copy.add_argument("--to", required=True, metavar="URL", help="postgresql://user:password@host:port/database")
    copy.set_defaults(handler=migrate_store_command)


def prune_command(args: argparse.Namespace) -> int:
    try:
        team = load_config(getattr(args, "config", None))
        counts = asyncio.run(_prune(team))
    except (ConfigError, StoreError) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 1
    policy = team.retention
    print(f"pruned {counts.total} row(s) from {redacted(team.db_path)}: " + ", ".join(
        f"{name} {value}" for name, value in dataclasses.asdict(counts).items()))
    print(f"(kept: answered messages {policy.inbox_days:g} days, finished runs {policy.runs_days:g} days, "
          f"reset transcripts {policy.transcript_days:g} days, audit {policy.audit_days:g} days, "
          f"usage {policy.usage_days:g} days; 0 = forever)")
    return 0


async def _prune(team: TeamConfig) -> Any:
    store = store_for(team.db_path)
    await store.open()
    try:
        return await store.prune(team.retention)
    finally:
        await store.close()


def migrate_store_command(args: argparse.Namespace) -> int:
    from bot.admin_socket import AlreadyRunning, InstanceLock

    try:
        team = load_config(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 1
    if not is_postgres(args.to):
        print("switchboard: --to must be a postgresql:// URL", file=sys.stderr)
        return 2
    if is_postgres(team.db_path):
        print("switchboard: the team already uses PostgreSQL; migrate-store copies a SQLite database "
              "(set [storage] path or SWITCHBOARD_DB to the SQLite file)", file=sys.stderr)
        return 2
    if not os.path.exists(team.db_path):
        print(f"switchboard: no SQLite database at {team.db_path}", file=sys.stderr)
        return 1
    lock = InstanceLock(team.db_path)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(f"switchboard: {exc}; stop the bot before copying its database", file=sys.stderr)
        return 1
    try:
        copied = asyncio.run(_copy(team.db_path, args.to))
    except StoreError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 1
    finally:
        lock.release()
    print(f"copied {sum(copied.values())} row(s) into {redacted(args.to)}: "
          + ", ".join(f"{name} {n}" for name, n in copied.items()))
    print(f"Next: set SWITCHBOARD_DB={redacted(args.to)} (or [storage] url) and start the instances.")
    return 0


async def _copy(sqlite_path: str, url: str) -> dict[str, int]:
    from storage.copy import copy_sqlite_to_postgres
    from storage.postgres import PostgresStore

    target = PostgresStore(url)
    await target.open()
    try:
        return await copy_sqlite_to_postgres(sqlite_path, target)
    finally:
        await target.close()
