"""Issue 14's measurements, one section each: `context` (what a sub-assistant receives under each context mode, and
the input tokens it costs) and `handoff` (turn time and provider requests of a turn with one transfer versus the same
answer without one). Prints the figures as Markdown tables and stores them in benchmarks/results/handover.json.

    python -m benchmarks.handover                      # every section
    python -m benchmarks.handover --section context    # one section
    python -m benchmarks.handover --facts 8,32 --fillers 2 --backends responses,chat
    python -m benchmarks.handover --section handoff --turns 10 --latencies 0,0.05

Context: each conversation states K facts in earlier turns (one per turn, each followed by `--fillers` small-talk
turns), then asks the proxy for delegated work that needs all of them. For each context mode and two proxies (a
*terse* one that hands over only the task, and the emulator's default one that also passes every earlier user
message as `context`), it reads from the emulator what the sub-assistant's run was given and counts the facts in
it, and reads the input tokens (cached ones apart) the delegated turn spent, from the engine's token accounting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, temp_db
from bot.config import AgentConfig, Limits, TeamConfig
from bot.context import ContextMode, parse_context
from bot.engine import Bot
from bot.types import Inbound, Progress, Reply, TurnRef
from emulator import Emulator, Plan, PlannedCall, Rule, Script, ToolCall, Turn, default_plan, run_emulator

RESULTS = REPO / "benchmarks" / "results" / "handover.json"
MODES = ("brief", "recent:1", "recent:4", "fork")
BACKENDS = ("responses", "assistants", "chat")
DEFAULT_FACTS = (8, 32)
DEFAULT_FILLERS = 1
WAIT_SECONDS = 60.0
FILLER = "Thanks, noted. Anything else on your side before we move on?"
ASK = "researcher: write the launch brief; it must use every fact I gave you."
# Three proxies, from the complaint ("sometimes it sends half of the information to the sub-assistant") to
# the ideal: `terse` hands over the bare task; `half` passes the later half of the earlier user messages (what a
# model tends to keep: the recent part); `full` passes every earlier user message (the emulator's default proxy).
TERSE_PROXY = Script(rules=[
    Rule(on="message", match="researcher", calls=[ToolCall("ask_researcher", {"task": "{input}", "context": ""})]),
    Rule(on="tool_outputs", reply="Team: {outputs}"),
])


def _half_context(turn: Turn) -> Plan:
    if turn.tool_outputs or "ask_researcher" not in turn.tools or "researcher" not in turn.text:
        return default_plan(turn)
    kept = turn.earlier[len(turn.earlier) // 2:]
    arguments = json.dumps({"task": turn.text, "context": "\n".join(kept)})
    return Plan(calls=[PlannedCall("ask_researcher", arguments)])


PROXIES: dict[str, Script | None] = {"terse": TERSE_PROXY, "half": Script(fallback=_half_context), "full": None}


def facts(count: int) -> list[str]:
    return [f"Fact {i}: the code word for item {i} is KW{i:03d}X." for i in range(1, count + 1)]


def fact_marker(i: int) -> str:
    return f"KW{i:03d}X"


# ---------------------------------------------------------------------------------------------- context section


@dataclass(slots=True)
class ContextResult:
    backend: str
    proxy: str
    mode: str
    facts: int
    facts_received: int
    sub_input_tokens: int  # the sub-assistant's runs in the delegated turn
    sub_cached_tokens: int
    turn_input_tokens: int  # the delegated turn, proxy included
    turn_cached_tokens: int

    @property
    def share(self) -> float:
        return self.facts_received / self.facts


class _Surface:
    platform = "console"

    def __init__(self) -> None:
        self.replies: list[tuple[TurnRef, Reply]] = []
        self._changed = asyncio.Condition()

    async def progress(self, turn: TurnRef, event: Progress) -> None:
        return None

    async def deliver(self, turn: TurnRef, reply: Reply) -> str:
        async with self._changed:
            self.replies.append((turn, reply))
            self._changed.notify_all()
        return turn.id

    async def find_delivery(self, turn: TurnRef) -> str | None:
        return None

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(WAIT_SECONDS), self._changed:
            await self._changed.wait_for(lambda: len(self.replies) >= count)


def context_team(base_url: str, backend: str, mode: ContextMode) -> TeamConfig:
    return TeamConfig(
        backend=backend,  # type: ignore[arg-type]
        proxy=AgentConfig(name="proxy", instructions="You are the proxy.", model="bench"),
        subs=(AgentConfig(name="researcher", instructions="You research.", model="bench",
                          description="Finds and writes things up.", context=mode),),
        limits=Limits(max_parallel=4),
        db_path=temp_db(),
        base_url=base_url,
        api_key="bench",
    )


def received_texts(emu: Emulator, agent: str) -> list[str]:
    """Every message the agent's runs were given, read from the emulator: a response's conversation and input, a
    run's thread, a chat completion's messages."""
    texts: list[str] = []
    for response in emu.responses.values():
        if response.agent == agent:
            texts += response.seen_texts
    for run in emu.runs.values():
        if run.agent == agent:
            texts += run.seen_texts
    for completion in emu.chat_completions.values():
        if completion.agent == agent:
            texts += [str(m.get("content") or "") for m in completion.messages]
    return texts


async def context_case(backend: str, proxy: str, mode: str, k: int, fillers: int) -> ContextResult:
    script = PROXIES[proxy]
    async with run_emulator(scripts={"proxy": script} if script else None) as emu:
        bot = Bot.from_config(context_team(emu.base_url, backend, parse_context(mode)))
        surface = _Surface()
        bot.add_surface(surface)
        messages = [text for fact in facts(k) for text in (fact, *[FILLER] * fillers)] + [ASK]
        async with bot.running():
            for i, text in enumerate(messages, 1):
                await bot.accept(Inbound("console", f"e{i}", "console:bench:context", "console:bench", "u", text))
                await surface.wait_for(i)
                await bot.idle()
            last_turn = surface.replies[-1][0].id
            rows = [r for r in await bot.store.token_rows() if r.turn_id == last_turn]
        received = "\n".join(received_texts(emu, "researcher"))
        sub = [r for r in rows if r.agent == "researcher"]
        return ContextResult(
            backend=backend, proxy=proxy, mode=mode, facts=k,
            facts_received=sum(fact_marker(i) in received for i in range(1, k + 1)),
            sub_input_tokens=sum(r.tokens.input for r in sub),
            sub_cached_tokens=sum(r.tokens.cached_input for r in sub),
            turn_input_tokens=sum(r.tokens.input for r in rows),
            turn_cached_tokens=sum(r.tokens.cached_input for r in rows),
        )


async def run_context(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    for k in args.facts:
        for backend in args.backends:
            for proxy in PROXIES:
                for mode in MODES:
                    results.append(await context_case(backend, proxy, mode, k, args.fillers))
    print(f"\n## Context for sub-assistants: {args.fillers} filler turn(s) after each fact\n")
    print("| K | backend | proxy | context | facts received | sub-assistant input tokens (cached) "
          "| delegated turn input tokens (cached) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.facts} | {r.backend} | {r.proxy} | `{r.mode}` | {r.facts_received}/{r.facts} ({r.share:.0%}) "
              f"| {r.sub_input_tokens} ({r.sub_cached_tokens}) | {r.turn_input_tokens} ({r.turn_cached_tokens}) |")
    return {"fillers": args.fillers, "results": [asdict(r) for r in results]}


# ---------------------------------------------------------------------------------------------- handoff section
# The same answer three ways, one new conversation per turn: `plain` (a team without handoffs: the proxy answers),
# `direct` (a handoff team whose entry, the editor, answers: the briefing and the handoff bookkeeping, no transfer)
# and `transfer` (the greeter hands the conversation to the editor, who answers: one transfer within the turn).
# Turn time is from `accept` to the delivered reply; provider requests are the emulator's HTTP requests in the turn,
# of which "model runs" create a response / run / chat completion. `--latency` adds that many seconds to every
# emulator request, standing in for a provider's per-request time (0 shows the engine's own overhead).

HANDOFF_CASES = ("plain", "direct", "transfer")
HANDOFF_TEXT = "editor please: tighten the opening paragraph, page_id=7"
DEFAULT_HANDOFF_TURNS = 10
DEFAULT_LATENCIES = (0.0, 0.05)
RUN_CREATE = {"responses": "/v1/responses", "assistants": "/v1/threads/*/runs", "chat": "/v1/chat/completions"}


@dataclass(slots=True)
class HandoffResult:
    backend: str
    latency: float
    case: str
    turns: int
    median_ms: float
    p90_ms: float
    requests_per_turn: float
    model_runs_per_turn: float
    answer: str  # the first reply, to show that every case gives the same answer


def handoff_case_team(base_url: str, backend: str, case: str) -> TeamConfig:
    def member(name: str, handoffs: tuple[str, ...] = ()) -> AgentConfig:
        return AgentConfig(name=name, instructions=f"You are the {name}.", model="bench", description=f"The {name}.",
                           handoffs=handoffs)

    if case == "plain":
        proxy, subs, entry = member("editor"), (), ""
    else:
        proxy, subs = member("greeter", ("editor",)), (member("editor", ("greeter",)),)
        entry = "editor" if case == "direct" else ""
    return TeamConfig(backend=backend, proxy=proxy, subs=subs, entry=entry,  # type: ignore[arg-type]
                      limits=Limits(max_parallel=4), db_path=temp_db(), base_url=base_url, api_key="bench")


async def handoff_case(backend: str, case: str, turns: int, latency: float) -> HandoffResult:
    import fnmatch
    import statistics

    async with run_emulator(latency=latency) as emu:
        bot = Bot.from_config(handoff_case_team(emu.base_url, backend, case))
        surface = _Surface()
        bot.add_surface(surface)
        times: list[float] = []
        requests = runs = 0
        async with bot.running():
            for i in range(turns + 1):  # the first turn warms up (agent sync, connections) and is not counted
                before = len(emu.log)
                started = time.perf_counter()
                await bot.accept(Inbound("console", f"h{i}", f"console:bench:h{i}", "console:bench", "u",
                                         HANDOFF_TEXT))
                await surface.wait_for(i + 1)
                elapsed = time.perf_counter() - started
                await bot.idle()
                if i == 0:
                    continue
                times.append(elapsed)
                entries = list(emu.log)[before:]
                requests += len(entries)
                runs += sum(e.method == "POST" and fnmatch.fnmatchcase(e.path, RUN_CREATE[backend]) for e in entries)
        times.sort()
        answer = surface.replies[0][1].text.replace(HANDOFF_TEXT, "<text>")
        return HandoffResult(backend=backend, latency=latency, case=case, turns=turns,
                             median_ms=statistics.median(times) * 1000,
                             p90_ms=times[min(len(times) - 1, int(len(times) * 0.9))] * 1000,
                             requests_per_turn=requests / turns, model_runs_per_turn=runs / turns, answer=answer)


async def run_handoff(args: argparse.Namespace) -> dict[str, Any]:
    results = [await handoff_case(backend, case, args.turns, latency)
               for latency in args.latencies for backend in args.backends for case in HANDOFF_CASES]
    print(f"\n## Handoffs: a turn with one transfer versus the same answer without one ({args.turns} turns each)\n")
    print("| emulator latency | backend | case | turn median ms | p90 ms | provider requests / turn "
          "| model runs / turn | answer |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.latency * 1000:.0f} ms | {r.backend} | {r.case} | {r.median_ms:.0f} | {r.p90_ms:.0f} "
              f"| {r.requests_per_turn:.1f} | {r.model_runs_per_turn:.1f} | `{r.answer}` |")
    return {"turns": args.turns, "text": HANDOFF_TEXT, "results": [asdict(r) for r in results]}


SECTIONS: dict[str, Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]] = {
    "context": run_context, "handoff": run_handoff}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", choices=[*SECTIONS, "all"], default="all")
    parser.add_argument("--facts", type=lambda s: [int(k) for k in s.split(",")], default=list(DEFAULT_FACTS),
                        help="K, comma-separated: facts stated in earlier turns (one conversation per K)")
    parser.add_argument("--fillers", type=int, default=DEFAULT_FILLERS, help="small-talk turns after each fact")
    parser.add_argument("--backends", type=lambda s: s.split(","), default=list(BACKENDS))
    parser.add_argument("--turns", type=int, default=DEFAULT_HANDOFF_TURNS, help="handoff: turns measured per case")
    parser.add_argument("--latencies", type=lambda s: [float(x) for x in s.split(",")],
                        default=list(DEFAULT_LATENCIES), help="handoff: emulator seconds per request, comma-separated")
    parser.add_argument("--no-save", action="store_true", help=f"print only; do not update {RESULTS.name}")
    return parser.parse_args(argv)


async def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    chosen = list(SECTIONS) if args.section == "all" else [args.section]
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in chosen:
        started = time.perf_counter()
        stored[name] = await SECTIONS[name](args)
        print(f"\n({name}: {time.perf_counter() - started:.1f} s)")
    if not args.no_save:
        await asyncio.to_thread(Path(RESULTS).write_text, json.dumps(stored, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
