"""switchboard: a team of AI assistants behind Slack, Discord or a terminal.

Commands: init (write switchboard.toml and .env), run (the platforms enabled in the team file), chat (terminal),
demo (offline, no keys), status, reset, cancel, audit, doctor, sync (assistants backend), migrate --to (switch
backends), emulator. Secrets come from the environment or ./.env. Every command takes --help.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.config import (
    BACKENDS,
    DEFAULT_CONFIG_PATH,
    DEFAULT_DB_PATH,
    ENV_CONFIG,
    ENV_DB,
    AgentConfig,
    ConfigError,
    TeamConfig,
    load_config,
)
from storage.base import StoreError
from switchboard.demo import DEMO_DB_PATH

EXIT_NOT_READY = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default), ERROR")
    parser.add_argument("--log-json", action="store_true", help="log JSON lines instead of text")
    parser.add_argument("--env-file", default=".env", help="secrets file read at start; the environment wins "
                        "(default: ./.env)")
    parser.add_argument("--version", action="version", version=f"switchboard {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="team file (default: $SWITCHBOARD_CONFIG or ./switchboard.toml)")
        return p

    init = sub.add_parser("init", help="write switchboard.toml and a .env template here, and print next steps")
    init.add_argument("--slack", action="store_true", help="enable Slack (no questions asked)")
    init.add_argument("--discord", action="store_true", help="enable Discord (no questions asked)")
    init.add_argument("--no-platform", action="store_true", help="enable neither (no questions asked)")
    init.add_argument("--manifest", action="store_true", help="also write the Slack app manifest (manifest.yml)")
    init.add_argument("--force", action="store_true", help="overwrite files that already exist")
    init.add_argument("--dir", default=".", help="where to write (default: here)")
    init.set_defaults(handler=_init)

    run = with_config(sub.add_parser("run", help="start the platforms enabled in the team file"))
    run.set_defaults(handler=_run)

    chat = with_config(sub.add_parser("chat", help="chat with the team in this terminal (or via a pipe)"))
    chat.add_argument("--conversation", default="default", help="conversation name, to keep several apart")
    chat.add_argument("--jsonl", action="store_true", help="answers as JSON lines: one object per message")
    chat.set_defaults(handler=_chat)

    demo = sub.add_parser("demo", help="offline demo on the bundled emulator; no keys needed")
    demo.add_argument("--token-delay", type=float, default=0.02, help="seconds between streamed words")
    demo.add_argument("--work-seconds", type=float, default=0.6, help="how long each sub-assistant 'works'")
    demo.add_argument("--jsonl", action="store_true", help="answers as JSON lines: one object per message")
    demo.add_argument("--db", default=DEMO_DB_PATH, help=f"the demo's database (default: {DEMO_DB_PATH}, apart from "
                      "the bot's)")
    demo.add_argument("--config", help="a team file to run instead of the built-in team (e.g. examples/handoffs.toml); "
                      "its provider settings are replaced by the emulator's")
    demo.add_argument("--backend", choices=BACKENDS, default=None,
                      help="the API the demo team runs on (chat: Chat Completions, as local model servers speak)")
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

    from bot.access_cli import add_commands as add_access_commands  # usage, grant, forget, reload

    add_access_commands(sub, with_config)

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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("switchboard")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _load(args: argparse.Namespace) -> TeamConfig:
    return load_config(getattr(args, "config", None))


def _load_for_database(args: argparse.Namespace) -> TeamConfig:
    """The team file when there is one; else just enough to reach the database (status, audit, reset, cancel
    work right after `switchboard demo`, before any team file exists): $SWITCHBOARD_DB, else the bot's default
    database, else the demo's when only it exists."""
    if args.config or os.environ.get(ENV_CONFIG) or Path(DEFAULT_CONFIG_PATH).exists():
        return _load(args)
    db_path = os.environ.get(ENV_DB) or DEFAULT_DB_PATH
    if not os.environ.get(ENV_DB) and not Path(DEFAULT_DB_PATH).exists() and Path(DEMO_DB_PATH).exists():
        db_path = DEMO_DB_PATH
    proxy = AgentConfig(name="proxy", instructions="(no team file)", model="unused")
    return TeamConfig(proxy=proxy, subs=(), db_path=db_path,
                      base_url=os.environ.get("OPENAI_BASE_URL") or None,
                      api_key=os.environ.get("OPENAI_API_KEY") or None)


# ---- commands ----


def _init(args: argparse.Namespace) -> int:
    from switchboard.init import PLATFORMS, ask_platforms, next_steps, run_init

    chosen = tuple(name for name in PLATFORMS if getattr(args, name))
    if not chosen and not args.no_platform and sys.stdin.isatty():
        chosen = ask_platforms(input)
    folder = Path(args.dir)
    if not folder.is_dir():
        print(f"switchboard: {folder} is not a folder", file=sys.stderr)
        return EXIT_NOT_READY
    result = run_init(folder, chosen, force=args.force, manifest=args.manifest)
    print(next_steps(result, manifest_written=args.manifest))
    return 0


def _run(args: argparse.Namespace) -> int:
    from switchboard.preflight import missing_pieces
    from switchboard.runner import run_platforms

    team, problems = missing_pieces(args.config, os.environ)
    if problems or team is None:
        print("switchboard: cannot start yet; fix these first (`switchboard doctor` checks them too):",
              file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_NOT_READY
    return asyncio.run(run_platforms(team))


def _chat(args: argparse.Namespace) -> int:
    from switchboard.runner import run_console

    team = _load(args)
    return asyncio.run(run_console(team, f"console:local:{args.conversation}", jsonl=args.jsonl))


def _demo(args: argparse.Namespace) -> int:
    from switchboard.demo import run_demo

    return asyncio.run(run_demo(args.token_delay, args.work_seconds, args.db, jsonl=args.jsonl, backend=args.backend,
                                config=args.config))


def _status(args: argparse.Namespace) -> int:
    return asyncio.run(_print_status(_load_for_database(args)))


async def _print_status(team: TeamConfig) -> int:
    from bot import accounting
    from bot.handoffs import state_line
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
            held = await store.handoff_state(conv.key, conv.generation)  # handoffs: who holds it now
            holder = f"  held by {held.active} (state: {state_line(held.state)})" if held.active else ""
            print(f"  {conv.key}  generation {conv.generation}  {state}  {waiting} waiting{holder}")
        for line in await accounting.status_lines(store):
            print(line)
    finally:
        await store.close()
    return 0


def _admin(args: argparse.Namespace, texts: list[str], channel: str = "", conversation: str | None = None) -> int:
    from bot.admin_cli import run_admin

    result = asyncio.run(run_admin(_load_for_database(args), texts, channel=channel, conversation=conversation))
    print(result.text, file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


def _reset(args: argparse.Namespace) -> int:
    from bot.admin_cli import confirm_reset_all

    if args.all:
        if not confirm_reset_all(args.yes):
            print("switchboard: nothing was reset.", file=sys.stderr)
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


def _load_env_file(path: str) -> None:
    """Secrets from a .env file; a variable already set in the environment wins."""
    from dotenv import load_dotenv

    if Path(path).is_file():
        load_dotenv(path, override=False)


def main(argv: Sequence[str] | None = None) -> int:
    from bot.logs import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_json)
    _load_env_file(args.env_file)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        unreachable = type(exc).__name__ == "ProviderUnreachable"  # switchboard.runner, not imported for every command
        print(f"switchboard: {'' if unreachable else 'configuration problem: '}{exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"switchboard: database problem: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
