"""Splitting a long reply: the time one split takes (all of it event-loop time) at 10k, 100k and 1M characters.

    python -m benchmarks.splitting [--sizes 10000 100000 1000000] [--replies mixed emoji code] [--before GIT_REV]

Prints one line per kind of reply, platform and size for the shared splitter (adapters/splitting.py); with
`--before`, also the per-platform splitters of that revision (adapters/slack/splitting.py,
adapters/discord/splitting.py), read with `git show`. Each figure is the best of a few runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from collections.abc import Callable

from adapters.discord.constants import MESSAGE_CONTENT_LIMIT
from adapters.discord.constants import MESSAGE_TEXT as DISCORD
from adapters.slack.constants import MESSAGE_PART_MAX_CHARS
from adapters.slack.constants import MESSAGE_TEXT as SLACK
from benchmarks.common import REPO

SIZES = (10_000, 100_000, 1_000_000)
#: runs per figure (the best is printed); a run longer than this many seconds is not repeated
RUNS = 3
SLOW_RUN_SECONDS = 2.0


def mixed_reply(size: int) -> str:
    """A long answer: prose paragraphs, a code block every few of them, an emoji now and then."""
    prose = "Here is what the researcher found 🙂, in more detail than anyone asked for. " * 6
    code = "```python\n" + "".join(f"result_{i} = compute({i})  # step {i}\n" for i in range(40)) + "```"
    block = f"{prose}\n\n{prose}\n\n{code}\n\n"
    return (block * (size // len(block) + 1))[:size]


def emoji_reply(size: int) -> str:
    """Emoji between short words, no line breaks: many space boundaries, each emoji two UTF-16 units."""
    return ("ok 🙂 " * (size // 5 + 1))[:size]


def code_reply(size: int) -> str:
    """One code block as long as the reply: every boundary is inside code."""
    return ("```python\n" + "".join(f"x_{i} = {i}\n" for i in range(size // 6 + 1)))[:size]


REPLIES: dict[str, Callable[[int], str]] = {"mixed": mixed_reply, "emoji": emoji_reply, "code": code_reply}


def best_seconds(split: Callable[[str], list[str]], text: str) -> float:
    best = float("inf")
    for _ in range(RUNS):
        start = time.perf_counter()
        split(text)
        best = min(best, time.perf_counter() - start)
        if best > SLOW_RUN_SECONDS:
            break
    return best


def old_module(rev: str, path: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, check=True, capture_output=True, text=True)
    module = types.ModuleType(f"before_{rev}." + path.replace("/", ".").removesuffix(".py"))
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(source.stdout, path, "exec"), module.__dict__)
    return module


def splitters(before: str | None) -> dict[str, Callable[[str], list[str]]]:
    found: dict[str, Callable[[str], list[str]]] = {"discord": DISCORD.split, "slack": SLACK.split}
    if before is not None:
        old_discord = old_module(before, "adapters/discord/splitting.py")
        old_slack = old_module(before, "adapters/slack/splitting.py")
        found[f"discord @{before}"] = lambda text: old_discord.split_message(text, MESSAGE_CONTENT_LIMIT)
        found[f"slack @{before}"] = lambda text: old_slack.split_text(text, MESSAGE_PART_MAX_CHARS)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="reply lengths in characters")
    parser.add_argument("--before", metavar="GIT_REV", help="also time the per-platform splitters of this revision")
    parser.add_argument("--replies", nargs="+", choices=list(REPLIES), default=list(REPLIES), help="kinds of reply")
    args = parser.parse_args()
    print(f"{'reply':<8}{'splitter':<22}{'characters':>12}{'parts':>8}{'seconds':>10}")
    for kind in args.replies:
        for name, split in splitters(args.before).items():
            for size in args.sizes:
                text = REPLIES[kind](size)
                seconds = best_seconds(split, text)
                print(f"{kind:<8}{name:<22}{size:>12,}{len(split(text)):>8}{seconds:>10.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
