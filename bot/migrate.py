"""Switching a team between backends, and keeping Assistants-backend assistants in step with the team file.

`switchboard migrate --to responses` (or `--to assistants`, `--to chat`) moves every live conversation to another
backend without users losing context (every assistant moves: a team that mixes backends is mixed again by editing
the team file after the move; the threads of assistants whose backend changed are then rebuilt on their first run):

1. Stop the bot (the command takes the database's instance lock and refuses while a bot runs).
2. `switchboard migrate --to responses`: for each conversation, its main thread and every sub-assistant thread
   (one per conversation and sub-assistant, nested ones included) is recreated on the target backend from the
   local transcript in SQLite (the same history a thread lost by the provider is rebuilt from), and the
   conversation's mappings are pointed at the new threads. Threads already on the target are left as they are,
   so the command can be run again; a conversation with a turn still unfinished is skipped (say so, run it again
   once the turn is done). The old remote threads are not deleted.
3. Set `backend = "responses"` in the team file and start the bot: the next turn of every conversation runs on
   the new backend and sees the earlier history (proxy and sub-assistants alike).

`switchboard sync` creates or updates the team's assistants for the `assistants` backend now (the bot also does
it on start) and prints, per team member, whether its assistant was created, updated or unchanged.

Both take `--config` like every command; the database and provider come from the team file and environment.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.config import BACKENDS, TeamConfig, load_config

Target = Literal["responses", "assistants", "chat"]
# How each backend's thread ids start (OpenAI conversations and threads, the emulator does the same; our chains of
# responses and chat threads).
THREAD_ID_PREFIX = {"responses": ("conv_", "chain_"), "assistants": ("thread_",), "chat": ("chat_",)}
MAIN_THREAD = "main"  # bot.orchestrator.MAIN_THREAD (not imported: keeps `switchboard --help` light)


@dataclass(frozen=True, slots=True)
class MovedThread:
    conversation: str
    path: str
    old_id: str
    new_id: str
    messages: int


@dataclass(slots=True)
class MigrationReport:
    target: str
    moved: list[MovedThread] = field(default_factory=list)
    already: list[tuple[str, str]] = field(default_factory=list)  # (conversation, thread path) on the target
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (conversation, why)
    conversations: int = 0


def thread_paths(team: TeamConfig) -> list[str]:
    """Every thread path a conversation of this team can have: "main", then "<sub>", "<sub>/<sub>"... as the
    orchestrator names them, down to `limits.max_depth`."""
    paths = [MAIN_THREAD]

    def walk(agent: Any, prefix: str, depth: int) -> None:
        if depth >= team.limits.max_depth:
            return
        for sub in team.delegates_of(agent):
            path = f"{prefix}/{sub.name}" if prefix else sub.name
            if path not in paths:
                paths.append(path)
                walk(sub, path, depth + 1)

    walk(team.proxy, "", 0)
    return paths


def on_backend(team: TeamConfig, target: str) -> TeamConfig:
    """The team with every assistant on `target` (their own `backend` keys dropped; endpoints and keys kept)."""
    return dataclasses.replace(
        team,
        backend=target,  # type: ignore[arg-type]
        proxy=dataclasses.replace(team.proxy, backend=None),
        subs=tuple(dataclasses.replace(s, backend=None) for s in team.subs),
    )


async def migrate(team: TeamConfig, target: Target, store: Any = None, backend: Any = None) -> MigrationReport:
    """Move every conversation's threads to the `target` backend (see the module docstring). `store` and
    `backend` default to the team's database and a `target` backend; given ones must already be open."""
    from bot.backends.base import TranscriptItem
    from bot.engine import make_backend
    from storage.select import store_for

    if target not in BACKENDS:
        raise ValueError(f"unknown backend {target!r} (choose from {', '.join(BACKENDS)})")
    own_store = store is None
    own_backend = backend is None
    if own_store:
        store = store_for(team.db_path)
        await store.open()
    try:
        if own_backend:
            backend = make_backend(on_backend(team, target))
            bind = getattr(backend, "bind_store", None)
            if bind is not None:
                bind(store)
            await backend.open()
        report = MigrationReport(target)
        for conv in await store.conversations():
            report.conversations += 1
            if await store.unfinished_turns(conv.key):
                report.skipped.append((conv.key, "a turn is still unfinished; run migrate again once it is done"))
                continue
            for path in thread_paths(team):
                if path == MAIN_THREAD:
                    old = conv.main_thread
                else:
                    old = await store.get_sub_thread(conv.key, conv.generation, path)
                if not old:
                    continue  # never used: the next turn creates it on whatever backend runs then
                if old.startswith(THREAD_ID_PREFIX[target]):
                    report.already.append((conv.key, path))
                    continue
                entries = await store.transcript(conv.key, conv.generation, path)
                seed = [TranscriptItem(e.role, e.text) for e in entries]
                metadata = {"conversation": conv.key[:500], "thread": path[:500]}
                new = await backend.create_thread(seed, metadata)
                if path == MAIN_THREAD:
                    await store.set_main_thread(conv.key, conv.generation, new)
                else:
                    await store.set_sub_thread(conv.key, conv.generation, path, new)
                report.moved.append(MovedThread(conv.key, path, old, new, len(seed)))
        return report
    finally:
        if own_backend and backend is not None:
            await backend.close()
        if own_store:
            await store.close()


async def sync_assistants(team: TeamConfig) -> list[Any]:
    """Create or update the assistants of the team members on the `assistants` backend now (each on its own
    provider); returns one `SyncChange` per such member."""
    from bot.backends.assistants import AssistantsBackend, quiet_deprecation
    from bot.backends.providers import Clients
    from storage.select import store_for

    store = store_for(team.db_path)
    await store.open()
    clients = Clients(team)
    quiet_deprecation()
    changes: list[Any] = []
    try:
        for key, provider in team.providers().items():
            if provider.backend != "assistants":
                continue
            members = {a.name for a in team.members if team.provider_of(a).key == key}
            backend = AssistantsBackend(clients.for_provider(provider), team, store, members=members)
            changes += await backend.sync()
        return changes
    finally:
        await clients.close()
        await store.close()


# ---- the command line (registered by switchboard.cli) ----


def add_commands(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    sync = with_config(sub.add_parser(
        "sync", help="create or update the team's assistants (assistants backend) and print what changed"))
    sync.set_defaults(handler=sync_command)
    migrate_parser = with_config(sub.add_parser(
        "migrate", help="move live conversations to another backend, rebuilt from the local transcript",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    migrate_parser.add_argument("--to", required=True, choices=BACKENDS, help="the backend to move to")
    migrate_parser.set_defaults(handler=migrate_command)


def sync_command(args: argparse.Namespace) -> int:
    from bot.backends.base import BackendError

    team = load_config(getattr(args, "config", None))
    if all(team.provider_of(a).backend != "assistants" for a in team.members):
        print(f"The team uses the {team.backend} backend, which keeps no assistants at the provider: nothing to "
              "sync. (Set backend = \"assistants\" to use them.)")
        return 0
    try:
        changes = asyncio.run(sync_assistants(team))
    except BackendError as exc:
        print(f"switchboard: the provider refused the sync: {exc}", file=sys.stderr)
        return 1
    width = max((len(c.name) for c in changes), default=0)
    for change in changes:
        print(f"{change.action:<9}  {change.name:<{width}}  {change.assistant_id}")
    counts = {action: sum(c.action == action for c in changes) for action in ("created", "updated", "unchanged")}
    print(f"{len(changes)} assistant(s): " + ", ".join(f"{n} {action}" for action, n in counts.items()))
    return 0


def migrate_command(args: argparse.Namespace) -> int:
    from bot.admin_socket import AlreadyRunning, InstanceLock
    from bot.backends.base import BackendError

    team = load_config(getattr(args, "config", None))
    from storage.select import is_postgres

    # PostgreSQL: several instances may run; the operator stops them all first (README, "Scaling out")
    lock = InstanceLock(team.db_path) if team.db_path != ":memory:" and not is_postgres(team.db_path) else None
    try:
        if lock is not None:
            lock.acquire()
        report = asyncio.run(migrate(team, args.to))
    except AlreadyRunning as exc:
        print(f"switchboard: {exc}; stop the bot before migrating", file=sys.stderr)
        return 1
    except BackendError as exc:
        print(f"switchboard: the provider refused the migration: {exc} (run it again: finished threads are kept)",
              file=sys.stderr)
        return 1
    finally:
        if lock is not None:
            lock.release()
    for moved in report.moved:
        print(f"moved    {moved.conversation}  {moved.path}  {moved.old_id} -> {moved.new_id}"
              f"  ({moved.messages} messages)")
    for conversation, why in report.skipped:
        print(f"skipped  {conversation}: {why}")
    print(f"{len(report.moved)} thread(s) of {report.conversations} conversation(s) moved to the {args.to} backend"
          f"; {len(report.already)} already there, {len(report.skipped)} conversation(s) skipped.")
    if team.backend != args.to:
        print(f'Now set backend = "{args.to}" in the team file and start the bot.')
    return 0
