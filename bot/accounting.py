"""Token accounting: the provider's usage of every run (input, cached input, output), by assistant, turn and
conversation, for the per-turn log line, the Prometheus counters and `switchboard status`.

Each run's usage is recorded on its row when it settles (`Supervisor._settled`), so the figures per turn, assistant
and conversation are sums of runs (`Store.token_rows`); the daily budget rows of `bot.access` get the same totals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bot.metrics import Metrics
from bot.types import Usage
from storage.base import Store, TokenRow

TOKEN_KINDS = ("input", "cached_input", "output")
MAX_STATUS_TURNS = 5  # turns listed per conversation by `switchboard status` (the newest)


def tokens_text(usage: Usage) -> str:
    return f"{usage.input_tokens} input ({usage.cached_input_tokens} cached) + {usage.output_tokens} output tokens"


def by_agent_text(by_agent: Mapping[str, Usage]) -> str:
    """`proxy 120/40/30, researcher 80/0/12` (input/cached/output), in the order the assistants first ran."""
    return ", ".join(f"{name} {u.input_tokens}/{u.cached_input_tokens}/{u.output_tokens}" for name, u in
                     by_agent.items())


def log_fields(usage: Usage, by_agent: Mapping[str, Usage]) -> dict[str, object]:
    """The token fields of the per-turn JSON log line."""
    return {
        "input_tokens": usage.input_tokens, "cached_input_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
        "tokens_by_assistant": {name: [u.input_tokens, u.cached_input_tokens, u.output_tokens]
                                for name, u in by_agent.items()},
    }


def count(metrics: Metrics, by_agent: Mapping[str, Usage]) -> None:
    """Add a turn's usage to `switchboard_tokens_total{kind}` and `switchboard_assistant_tokens_total`."""
    for name, usage in by_agent.items():
        for kind, value in zip(TOKEN_KINDS, _figures(usage), strict=True):
            if value:
                metrics.tokens.labels(kind).inc(value)
                metrics.assistant_tokens.labels(name, kind).inc(value)


def _figures(usage: Usage) -> tuple[int, int, int]:
    return usage.input_tokens, usage.cached_input_tokens, usage.output_tokens


def _usage(row: TokenRow) -> Usage:
    return Usage(row.tokens.input, row.tokens.output, row.tokens.cached_input)


@dataclass(slots=True)
class Totals:
    """Sums of recorded runs: the whole database, per conversation, per assistant, per turn."""

    total: Usage
    runs: int
    conversations: dict[str, Usage]
    assistants: dict[str, Usage]
    turns: dict[str, dict[str, Usage]]  # conversation -> turn id -> usage, oldest turn first


def totals(rows: list[TokenRow]) -> Totals:
    result = Totals(Usage(), 0, {}, {}, {})
    for row in rows:
        used = _usage(row)
        result.total += used
        result.runs += row.runs
        result.conversations[row.conversation] = result.conversations.get(row.conversation, Usage()) + used
        result.assistants[row.agent] = result.assistants.get(row.agent, Usage()) + used
        turns = result.turns.setdefault(row.conversation, {})
        turns[row.turn_id] = turns.get(row.turn_id, Usage()) + used
    return result


async def status_lines(store: Store) -> list[str]:
    """The token section of `switchboard status`."""
    found = totals(await store.token_rows())
    if not found.runs:
        return ["tokens: no run has recorded usage yet"]
    lines = [f"tokens (input (cached) + output), {found.runs} run(s): {tokens_text(found.total)}", "  by assistant:"]
    lines += [f"    {name}: {tokens_text(u)}" for name, u in sorted(found.assistants.items())]
    lines.append("  by conversation (and its newest turns):")
    for conversation, used in found.conversations.items():
        lines.append(f"    {conversation}: {tokens_text(used)}")
        turns = list(found.turns[conversation].items())[-MAX_STATUS_TURNS:]
        lines += [f"      turn {turn}: {tokens_text(u)}" for turn, u in turns]
    return lines
