"""switchboard: a team of AI assistants behind Slack, Discord or a terminal.

Commands: run (the platforms enabled in the team file), chat (terminal), demo (offline, no keys), status,
reset, cancel, audit, doctor, sync (assistants backend), migrate --to (switch backends), emulator.
Every command takes --help.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from bot.config import ConfigError, TeamConfig, load_config
from storage.base import StoreError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default), ERROR")
    parser.add_argument("--log-json", action="store_true", help="log JSON lines instead of text")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="team file (default: $SWITCHBOARD_CONFIG or ./switchboard.toml)")
        return p

    run = with_config(sub.add_parser("run", help="start the platforms enabled in the team file"))
    run.set_defaults(handler=_run)

    chat = with_config(sub.add_parser("chat", help="chat with the team in this terminal (or via a pipe)"))
    chat.add_argument("--conversation", default="default", help="conversation name, to keep several apart")
    chat.set_defaults(handler=_chat)

    demo = sub.add_parser("demo", help="offline demo on the bundled emulator; no keys needed")
    demo.add_argument("--token-delay", type=float, default=0.02, help="seconds between streamed words")
    demo.add_argument("--work-seconds", type=float, default=0.6, help="how long each sub-assistant 'works'")
    demo.set_defaults(handler=_demo)

    status = with_config(sub.add_parser("status", help="list conversations and in-flight turns"))
    status.set_defaults(handler=_status)

    reset = with_config(sub.add_parser("reset", help="reset a conversation, a channel or everything (admin)"))
    target = reset.add_mutually_exclusive_group(required=True)
    target.add_argument("--conversation", help="conversation key, e.g. slack:T1:C1:1700000000.000100")
    target.add_argument("--channel", help="channel key, e.g. slack:T1:C1 or discord:123:456")
    target.add_argument("--all", action="store_true", help="every conversation (asks for confirmation)")
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    reset.set_defaults(handler=_reset)

    cancel = with_config(sub.add_parser("cancel", help="cancel the running turn of a conversation (admin)"))
    cancel.add_argument("--conversation", required=True, help="conversation key")
    cancel.set_defaults(handler=_cancel)

    audit = with_config(sub.add_parser("audit", help="show the recent admin actions"))
    audit.set_defaults(handler=_audit)

    doctor = with_config(sub.add_parser("doctor", help="check the team file, database and credentials"))
    doctor.set_defaults(handler=_doctor)

    from bot.migrate import add_commands  # sync (assistants backend) and migrate (between backends)

    add_commands(sub, with_config)
    from switchboard.storage_cli import add_commands as add_storage_commands  # prune, migrate-store

    add_storage_commands(sub, with_config)

    emu = sub.add_parser("emulator", help="run the local OpenAI-compatible emulator")
    emu.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    emu.add_argument("--port", type=int, default=8765, help="port to listen on (0 picks a free one)")
    emu.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    emu.add_argument("--token-delay", type=float, default=0.0, help="seconds between streamed text deltas")
    emu.add_argument("--scripts", help="YAML file with scripted assistants")
    emu.add_argument("--manual-clock", action="store_true", help="time moves only via POST /_emulator/clock/advance")
    emu.add_argument("--expiry-seconds", type=float, default=600.0, help="Assistants run expiry window")
    emu.add_argument("--seed", type=int, help="seed for random fault mode")
    emu.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds sent with injected 429s")
    emu.set_defaults(handler=_emulator)
    return parser


def _load(args: argparse.Namespace) -> TeamConfig:
    return load_config(getattr(args, "config", None))


# ---- commands ----


def _run(args: argparse.Namespace) -> int:
    from switchboard.runner import run_platforms

    return asyncio.run(run_platforms(_load(args)))


def _chat(args: argparse.Namespace) -> int:
    from switchboard.runner import run_console

    team = _load(args)
    return asyncio.run(run_console(team, f"console:local:{args.conversation}"))


def _demo(args: argparse.Namespace) -> int:
    from switchboard.demo import run_demo

    return asyncio.run(run_demo(args.token_delay, args.work_seconds))


def _status(args: argparse.Namespace) -> int:
    return asyncio.run(_print_status(_load(args)))


async def _print_status(team: TeamConfig) -> int:
    from storage.select import redacted, store_for

    store = store_for(team.db_path)
    await store.open()
    try:
        conversations = await store.conversations()
        print(f"{len(conversations)} conversation(s) in {redacted(team.db_path)}")
        for conv in conversations:
            turns = await store.unfinished_turns(conv.key)
            waiting = len(await store.pending_inbound(conv.key))
            state = ", ".join(f"{t.id} {t.state}" for t in turns) or "idle"
            print(f"  {conv.key}  generation {conv.generation}  {state}  {waiting} waiting")
    finally:
        await store.close()
    return 0


def _admin(args: argparse.Namespace, texts: list[str], channel: str = "", conversation: str | None = None) -> int:
    from bot.admin_cli import run_admin

    result = asyncio.run(run_admin(_load(args), texts, channel=channel, conversation=conversation))
    print(result.text, file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


def _reset(args: argparse.Namespace) -> int:
    from bot.admin_cli import confirm_reset_all

    if args.all:
        if not confirm_reset_all(args.yes):
            return 1
        return _admin(args, ["reset all", "reset all confirm"])
    if args.channel:
        return _admin(args, ["reset channel"], channel=args.channel)
    return _admin(args, ["reset"], conversation=args.conversation)


def _cancel(args: argparse.Namespace) -> int:
    return _admin(args, ["cancel"], conversation=args.conversation)


def _audit(args: argparse.Namespace) -> int:
    return _admin(args, ["audit"])


def _doctor(args: argparse.Namespace) -> int:
    from switchboard.doctor import run_doctor

    findings = asyncio.run(run_doctor(args.config))
    for finding in findings:
        print(finding.line())
    problems = [f for f in findings if not f.ok]
    print(f"{len(problems)} problem(s) found." if problems else "Everything checks out.")
    return 1 if problems else 0


def _emulator(args: argparse.Namespace) -> int:
    from emulator.cli import run_from_args

    return run_from_args(args)


def main(argv: Sequence[str] | None = None) -> int:
    from bot.logs import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_json)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(f"switchboard: configuration problem: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"switchboard: database problem: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
