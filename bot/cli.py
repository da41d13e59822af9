"""The `switchboard` command line. Each subcommand lives in the module that owns the feature."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    emu = sub.add_parser("emulator", help="run the local OpenAI-compatible emulator")
    emu.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    emu.add_argument("--port", type=int, default=8765, help="port to listen on (0 picks a free one)")
    emu.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    emu.add_argument("--token-delay", type=float, default=0.0, help="seconds between streamed text deltas")
    emu.add_argument("--scripts", help="YAML file with scripted assistants")
    emu.set_defaults(handler=_emulator)
    return parser


def _emulator(args: argparse.Namespace) -> int:
    from bot.emulator.cli import run_from_args

    return run_from_args(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
