"""The floor a client can reach on this emulator: the peers workload sent by the least client that can send it, so
the time any real client spends over the provider's delays can be split into the emulator's share and its own.

    python -m benchmarks.bare_client [--turns 10] [--proxy-seconds 0.5] [--sub-seconds 1.0] [--subs 4]

One aiohttp session, no storage, no retries, no SDK: each response is created as the engine creates it (`stream`,
`background`, `store`) and read until `response.completed` (a line scan, only that event parsed); the proxy's calls
go to the sub-assistants all at once, their answers back to the proxy chained with `previous_response_id`. Same team
and `metadata.agent` as the engine's benchmarks, so the emulator applies the same scripted latencies. Prints the
turn time over the floor (the sum of the delays on the critical path), p50 and range, for follow-up turns one at a
time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import aiohttp

from benchmarks.common import emulator_process, make_team
from benchmarks.naive_bot import tool
from bot.config import AgentConfig

TEXT = "ask the team to check the plan"
COMPLETED = b'"type":"response.completed"'


class BareClient:
    """The peers workload with nothing but HTTP and the one stream event that carries the finished response."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, proxy: AgentConfig,
                 subs: dict[str, AgentConfig]) -> None:
        self.session, self.url = session, base_url.rstrip("/") + "/responses"
        self.proxy, self.subs = proxy, subs
        self.tools = [tool(sub) for sub in subs.values()]

    async def turn(self, text: str, previous: str | None) -> dict[str, Any]:
        response = await self.create(self.proxy, text, self.tools, previous)
        while calls := [item for item in response["output"] if item["type"] == "function_call"]:
            answers = await asyncio.gather(*(self.ask_sub(call) for call in calls))
            outputs = [{"type": "function_call_output", "call_id": call["call_id"], "output": answer}
                       for call, answer in zip(calls, answers, strict=True)]
            response = await self.create(self.proxy, outputs, self.tools, response["id"])
        return response

    async def ask_sub(self, call: dict[str, Any]) -> str:
        args = json.loads(call["arguments"])
        answer = await self.create(self.subs[call["name"].removeprefix("ask_")], args["task"], None, None)
        return "".join(part.get("text", "") for item in answer["output"] if item["type"] == "message"
                       for part in item["content"])

    async def create(self, agent: AgentConfig, input: Any, tools: list[dict[str, Any]] | None,
                     previous: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": agent.model, "instructions": agent.instructions, "input": input,
                                "stream": True, "background": True, "store": True, "metadata": {"agent": agent.name}}
        if tools:
            body["tools"] = tools
            body["parallel_tool_calls"] = True
        if previous:
            body["previous_response_id"] = previous
        async with self.session.post(self.url, json=body, headers={"Authorization": "Bearer bench"}) as reply:
            reply.raise_for_status()
            async for line in reply.content:
                if line.startswith(b"data:") and COMPLETED in line:
                    return dict(json.loads(line[5:])["response"])
        raise RuntimeError("the stream ended before response.completed")


async def over_floor(url: str, turns: int, floor: float, subs: int = 4) -> list[float]:
    """Seconds over `floor` of `turns` follow-up turns one at a time, on the emulator at `url` (scripted already)."""
    async with aiohttp.ClientSession() as session:
        team = make_team(url, ":memory:", subs=subs)
        client = BareClient(session, url, team.proxy, {sub.name: sub for sub in team.subs})
        previous = (await client.turn(TEXT, None))["id"]  # first turn and warm-up
        over: list[float] = []
        for _ in range(turns):
            started = time.perf_counter()
            response = await client.turn(TEXT, previous)
            over.append(time.perf_counter() - started - floor)
            previous = response["id"]
    return over


async def measure(turns: int, proxy_seconds: float, sub_seconds: float, subs: int) -> list[float]:
    scripts = {"proxy": [{"delay": proxy_seconds}], **{f"s{i}": [{"delay": sub_seconds}] for i in range(1, subs + 1)}}
    async with emulator_process(scripts) as url:
        return await over_floor(url, turns, 2 * proxy_seconds + sub_seconds, subs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--proxy-seconds", type=float, default=0.5)
    parser.add_argument("--sub-seconds", type=float, default=1.0)
    parser.add_argument("--subs", type=int, default=4)
    args = parser.parse_args()
    over = asyncio.run(measure(args.turns, args.proxy_seconds, args.sub_seconds, args.subs))
    print(f"bare client, {args.turns} follow-up turns: over the floor p50 {statistics.median(over) * 1000:.1f} ms "
          f"({min(over) * 1000:.1f} - {max(over) * 1000:.1f})")


if __name__ == "__main__":
    main()
