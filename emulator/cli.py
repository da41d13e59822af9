"""``switchboard emulator``: run the emulator in the foreground until interrupted.

Prints one line ``emulator listening on http://HOST:PORT/v1`` (flushed) once the socket is bound, so a parent
process started with ``--port 0`` can read the address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
from typing import Any

import yaml

from emulator.clock import ManualClock
from emulator.scripts import load_scripts
from emulator.server import Emulator


async def serve(emulator: Emulator, host: str, port: int, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await emulator.start(host, port)
    print(f"emulator listening on {emulator.base_url}", flush=True)
    print(f"control endpoint at {emulator.control_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def run_from_args(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM. Uses args.host, .port, .latency, .token_delay, .scripts, and, when the parser
    defines them, .manual_clock (bool), .expiry_seconds, .seed, .retry_after."""
    try:
        scripts = load_scripts(args.scripts) if getattr(args, "scripts", None) else None
    except (OSError, yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError, re.error) as exc:
        problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())
        print(f"emulator: --scripts {args.scripts}: {problem or type(exc).__name__}", file=sys.stderr)
        return 2
    options: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("expiry_seconds", "seed", "retry_after")
        if getattr(args, name, None) is not None
    }
    clock = ManualClock() if getattr(args, "manual_clock", False) else None
    emulator = Emulator(clock=clock, latency=args.latency, token_delay=args.token_delay, scripts=scripts, **options)
    try:
        asyncio.run(serve(emulator, args.host, args.port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
