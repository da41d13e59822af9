"""The naive baseline: a team bot written the way forum posts do it.

    python -m benchmarks.naive_bot --base-url http://127.0.0.1:PORT/v1 [--subs 4] [--turns 2] [--json] "ask the team"

Synchronous `openai` client, one turn at a time, no persistence (the conversation lives in a variable as a
`previous_response_id`): create a background response, poll it every 0.5 s until it is done; when the proxy calls
sub-assistants, ask them one after another (each: create, poll), hand all outputs back in a new response chained to
the proxy's, and poll that too. Same team as the engine's benchmarks (`benchmarks.common.make_team`): the proxy,
sub-assistants s1..sN, their instructions, models and `ask_<sub>` tools. `metadata.agent` names the assistant so
the emulator applies the same scripted latencies to it as to the engine.

With `--json` it prints one line `{"seconds": [...]}` (each turn's wall time); otherwise the answers.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import openai

from benchmarks.common import make_team
from bot.config import AgentConfig

POLL_SECONDS = 0.5


def tool(sub: AgentConfig) -> dict[str, Any]:
    return {
        "type": "function",
        "name": f"ask_{sub.name}",
        "description": f"Ask the {sub.name} assistant. {sub.description}",
        "parameters": {
            "type": "object",
            "properties": {"task": {"type": "string"}, "context": {"type": "string"}},
            "required": ["task", "context"],
            "additionalProperties": False,
        },
        "strict": True,
    }


def ask(client: openai.OpenAI, agent: AgentConfig, input: Any, tools: list[dict[str, Any]] | None = None,
        previous: str | None = None) -> Any:
    response = client.responses.create(
        model=agent.model,
        instructions=agent.instructions,
        input=input,
        tools=tools or openai.NOT_GIVEN,
        previous_response_id=previous or openai.NOT_GIVEN,
        background=True,
        metadata={"agent": agent.name},
    )
    while response.status in ("queued", "in_progress"):
        time.sleep(POLL_SECONDS)
        response = client.responses.retrieve(response.id)
    return response


def turn(client: openai.OpenAI, proxy: AgentConfig, subs: dict[str, AgentConfig], text: str,
         previous: str | None) -> Any:
    tools = [tool(sub) for sub in subs.values()]
    response = ask(client, proxy, text, tools, previous)
    while calls := [item for item in response.output if item.type == "function_call"]:
        outputs = []
        for call in calls:  # one after another
            args = json.loads(call.arguments)
            sub = subs[call.name.removeprefix("ask_")]
            answer = ask(client, sub, f"{args['task']}\n\n{args.get('context', '')}")
            outputs.append({"type": "function_call_output", "call_id": call.call_id, "output": answer.output_text})
        response = ask(client, proxy, outputs, tools, response.id)
    return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--subs", type=int, default=4)
    parser.add_argument("--turns", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("text")
    args = parser.parse_args()
    team = make_team(args.base_url, ":memory:", subs=args.subs)
    client = openai.OpenAI(base_url=args.base_url, api_key="bench", max_retries=0)
    subs = {sub.name: sub for sub in team.subs}
    previous = None
    seconds = []
    for _ in range(args.turns):
        started = time.perf_counter()
        response = turn(client, team.proxy, subs, args.text, previous)
        seconds.append(time.perf_counter() - started)
        previous = response.id
        if not args.json:
            print(response.output_text, flush=True)
    if args.json:
        print(json.dumps({"seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
