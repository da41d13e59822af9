"""`switchboard usage | grant | forget | reload`: the operator's side of access, budgets and deletion.

Each is the admin command of the same name, sent to the running bot through its admin socket (`bot.admin_cli`),
or run on the database directly when no bot is running; `reload` needs a running bot (a stopped one reads the team
file when it starts).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from bot import admin_socket
from bot.config import TeamConfig, load_config
from bot.types import CommandResult

WithConfig = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], with_config: WithConfig) -> None:
    usage = with_config(sub.add_parser("usage", help="today's token use per user, channel and the whole bot"))
    usage.set_defaults(handler=lambda args: _admin(args, "usage"))

    grant = with_config(sub.add_parser(
        "grant", help="more tokens (or cost, as $N) for today: grant user slack:U123 50000 | grant bot 100000",
    ))
    grant.add_argument("words", nargs="+", metavar="WORD", help="user PLATFORM:ID N, channel KEY N, or bot N")
    grant.set_defaults(handler=lambda args: _admin(args, "grant " + " ".join(args.words)))

    forget = with_config(sub.add_parser(
        "forget", help="delete everything a user wrote and the answers built on it (database and provider)",
    ))
    forget.add_argument("--user", required=True, help="the user's platform id, e.g. U0123ABCD or 80351110224678912")
    forget.add_argument("--platform", choices=("slack", "discord", "console"),
                        help="only this platform's user with that id (default: every platform)")
    forget.set_defaults(handler=lambda args: _admin(args, f"forget user {args.platform or '*'}:{args.user}"))

    reload = with_config(sub.add_parser(
        "reload", help="make the running bot re-read the team file's access lists and budgets (or send it SIGHUP)",
    ))
    reload.set_defaults(handler=_reload)


def _admin(args: argparse.Namespace, text: str) -> int:
    from bot.admin_cli import run_admin

    result = asyncio.run(run_admin(load_config(args.config), [text]))
    print(result.text, file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


def _reload(args: argparse.Namespace) -> int:
    team = load_config(args.config)  # a broken file is reported here, before the bot is asked
    from storage.select import is_postgres

    if is_postgres(team.db_path):
        print("switchboard: instances on PostgreSQL have no admin socket: send SIGHUP to each instance to reload",
              file=sys.stderr)
        return 1
    result = asyncio.run(_send_reload(team))
    if result is None:
        print("switchboard: no bot is running on this database; it reads the team file when it starts",
              file=sys.stderr)
        return 1
    print(result.text, file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


async def _send_reload(team: TeamConfig) -> CommandResult | None:
    return await admin_socket.send(admin_socket.socket_path(team.db_path), "reload", "")
