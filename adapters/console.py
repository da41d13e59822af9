"""A terminal chat on the same engine: `switchboard chat` and `switchboard demo`.

On a terminal it shows a thinking spinner and one live line per sub-assistant at work (rich), with the answer
streaming below them; Ctrl-C at the prompt or mid-turn stops cleanly (an unfinished turn resumes at the next
start). With piped standard input it reads one message per line, waits for each answer, prints answers on standard
output (separated by a blank line, or one JSON object per line with `jsonl`) and progress on standard error, and
exits 1 when any turn failed, so it can be scripted.

Each line is its own turn: `chat` sends a line only once the previous line's answer was printed, and knows that
answer by the line's event id, which the line's route carries into the turn (`TurnRef.route`). Any other answer
is to a message from before a restart (a resumed turn, or one accepted but never started): it is printed on its
own, after a label quoting that message, and never taken for the answer to a new line. With piped input, work
left from before the restart is let finish before the first line is sent, and answers are separated by a blank line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from bot.types import (
    BotLike,
    Delegated,
    Done,
    Failed,
    HandedOff,
    Inbound,
    InvalidInbound,
    Platform,
    Progress,
    Reply,
    Retrying,
    Started,
    SubFinished,
    TextDelta,
    TurnRef,
    Withdrawn,
)

log = logging.getLogger("switchboard.console")

PLATFORM: Platform = "console"
PROMPT = "you> "
ROUTE_LINE = "line"  # the event id of the line a turn answers (its newest message)
ROUTE_PREVIEW = "preview"  # the start of that line, to label its answer should it come after a restart
PREVIEW_CHARS = 60
EXIT_TURN_FAILED = 1


@dataclass(slots=True)
class _SubLine:
    task: str
    state: str = "working"  # working | done | failed


@dataclass(slots=True)
class _TurnView:
    subs: dict[str, _SubLine] = field(default_factory=dict)  # by call id
    retry: str = ""
    text: str = ""  # the answer so far, as it streams


class ConsoleSurface:
    """Renders progress and answers. `expect(event_id)` before sending a line gives the future its answer resolves;
    answers nobody expects are labelled as answers to earlier messages. `separate` puts a blank line between
    answers (for piped output; a terminal has the prompt between them); `jsonl` prints one JSON object per answer
    instead. `failures` counts the failure replies printed."""

    platform: Platform = PLATFORM

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, live: bool | None = None,
                 separate: bool = True, jsonl: bool = False) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.live_mode = self.err.isatty() if live is None else live
        self.separate = separate
        self.jsonl = jsonl
        self.failures = 0
        self.console = Console(file=self.err, highlight=False)
        self._expected: dict[str, asyncio.Future[Reply]] = {}
        self._printed = False
        self._views: dict[str, _TurnView] = {}
        self._live: Live | None = None

    def expect(self, event_id: str) -> asyncio.Future[Reply]:
        """Register a line about to be sent; the future resolves once its answer was printed."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._expected[event_id] = future
        return future

    def forget(self, event_id: str) -> None:
        """The line was not sent after all."""
        future = self._expected.pop(event_id, None)
        if future is not None:
            future.cancel()

    async def progress(self, turn: TurnRef, event: Progress) -> None:
        view = self._views.setdefault(turn.id, _TurnView())
        if isinstance(event, Delegated):
            view.subs[event.call_id] = _SubLine(event.task)
            self._line(f"… asking {event.sub}: {_short(event.task)}")
            view.subs[event.call_id].task = f"{event.sub}: {_short(event.task)}"
        elif isinstance(event, SubFinished):
            line = view.subs.get(event.call_id)
            if line:
                line.state = "done" if event.ok else "failed"
            self._line(f"{'✓' if event.ok else '✗'} {event.sub} {'finished' if event.ok else 'failed'}")
        elif isinstance(event, HandedOff):
            self._line(f"→ handed to {event.to_agent}" + (f": {_short(event.reason)}" if event.reason else ""))
        elif isinstance(event, Retrying):
            view.retry = f"{event.words}; retrying {event.who} (attempt {event.attempt})"
            view.text = ""  # the retried attempt streams its answer again from the start
            self._line(f"↻ {view.retry}")
        elif isinstance(event, TextDelta):
            view.text += event.text
        elif isinstance(event, Started):
            self._line("… thinking")
        elif isinstance(event, Done | Failed | Withdrawn):
            self._stop_live()
            self._views.pop(turn.id, None)
            return
        self._render(view)

    async def deliver(self, turn: TurnRef, reply: Reply) -> str:
        self._stop_live()
        self._views.pop(turn.id, None)
        waiter = self._expected.pop(str(turn.route.get(ROUTE_LINE, "")), None)
        if reply.kind == "failure":
            self.failures += 1
        try:
            print(self._format(turn, reply, earlier=waiter is None), file=self.out, flush=True)
            self._printed = True
        finally:  # even when printing failed, the line must not wait for ever
            if waiter is not None and not waiter.done():
                waiter.set_result(reply)
        return f"console:{turn.id}"

    def _format(self, turn: TurnRef, reply: Reply, earlier: bool) -> str:
        if self.jsonl:
            record: dict[str, object] = {"kind": reply.kind, "text": reply.text}
            if earlier:
                record["earlier"] = _earlier_label(turn)
            return json.dumps(record, ensure_ascii=False)
        prefix = {"answer": "", "failure": "[failed] ", "notice": "[notice] "}[reply.kind]
        lines = [""] if self.separate and self._printed else []
        if earlier:
            lines.append(_earlier_label(turn))
        lines.append(f"{prefix}{reply.text}")
        return "\n".join(lines)

    def stop(self) -> None:
        """Leave the screen clean (no live display half drawn), e.g. on Ctrl-C."""
        self._stop_live()

    async def find_delivery(self, turn: TurnRef) -> str | None:
        return None  # a terminal keeps no history to look in: a reply interrupted by a crash is printed again

    # ---- rendering ----

    def _line(self, text: str) -> None:
        if not self.live_mode:
            print(text, file=self.err, flush=True)

    def _render(self, view: _TurnView) -> None:
        if not self.live_mode:
            return
        rows: list[Spinner | Text] = [Spinner("dots", text="thinking")]
        for line in view.subs.values():
            if line.state == "working":
                rows.append(Spinner("dots", text=line.task))
            else:
                rows.append(Text(f"{'✓' if line.state == 'done' else '✗'} {line.task}"))
        if view.retry:
            rows.append(Text(f"↻ {view.retry}", style="yellow"))
        if view.text:
            rows.append(Text(view.text))
        if self._live is None:
            self._live = Live(Group(*rows), console=self.console, refresh_per_second=8, transient=True,
                              vertical_overflow="visible")
            self._live.start()
        else:
            self._live.update(Group(*rows))

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _earlier_label(turn: TurnRef) -> str:
    preview = turn.route.get(ROUTE_PREVIEW)
    if isinstance(preview, str) and preview:
        return f'(answer to your earlier message "{preview}", interrupted by a restart)'
    return "(answer to an earlier message, interrupted by a restart)"


async def chat(bot: BotLike, surface: ConsoleSurface, conversation: str, user: str = "you",
               stdin: TextIO | None = None, settle: Callable[[], Awaitable[None]] | None = None) -> int:
    """Read messages until end of input; each is answered before the next is sent. Returns an exit code.

    `settle` (the engine's `idle`) is awaited before the first line of piped input: the answers to messages from
    before a restart come first, and no new line joins one of their turns.
    """
    stdin = stdin or sys.stdin
    interactive = stdin.isatty()
    lines = _LineReader(stdin)
    if settle is not None and not interactive:
        await settle()
    while True:
        if interactive:
            print(PROMPT, end="", file=surface.err, flush=True)
        line = await lines.next()
        if not line:
            return EXIT_TURN_FAILED if surface.failures and not interactive else 0
        text = line.strip()
        if not text:
            continue
        event_id = f"console-{uuid.uuid4().hex}"
        inbound = Inbound(
            platform=PLATFORM,
            event_id=event_id,
            conversation=conversation,
            channel=f"{PLATFORM}:local",
            user=user,
            text=text,
            route={ROUTE_LINE: event_id, ROUTE_PREVIEW: _short(text, PREVIEW_CHARS)},
        )
        answer = surface.expect(event_id)
        try:
            await bot.accept(inbound)
        except InvalidInbound as exc:
            surface.forget(event_id)
            print(f"[not sent] {exc}", file=surface.err, flush=True)
            continue
        except Exception as exc:  # the engine could not store it (database full or read-only)
            surface.forget(event_id)
            log.exception("accepting a console message failed")
            print(f"[not sent] the message could not be stored ({exc}); please try again in a moment.",
                  file=surface.err, flush=True)
            continue
        await answer


class _LineReader:
    """Lines of `stdin` read by a daemon thread, one at a time on request. Not the loop's executor: a thread blocked
    in `readline` there would hold up the shutdown after Ctrl-C until Enter was pressed."""

    def __init__(self, stdin: TextIO) -> None:
        self._stdin = stdin
        self._loop = asyncio.get_running_loop()
        self._wanted = threading.Semaphore(0)
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        threading.Thread(target=self._read, name="console-stdin", daemon=True).start()

    async def next(self) -> str:
        """The next line, or "" at the end of input."""
        self._wanted.release()
        return await self._lines.get()

    def _read(self) -> None:
        while True:
            self._wanted.acquire()
            try:
                line = self._stdin.readline()
            except (OSError, ValueError):  # closed under us
                line = ""
            try:
                self._loop.call_soon_threadsafe(self._lines.put_nowait, line)
            except RuntimeError:  # the loop is gone: the chat ended
                return
            if not line:
                return
