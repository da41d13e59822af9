"""Scripts (rules, YAML, the default plan) and the manual clock, without HTTP."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from emulator import ManualClock, Rule, Script, ToolResult, Turn, default_plan, load_scripts
from emulator.scripts import script_for


def _turn(text: str, **fields: object) -> Turn:
    return Turn(agent=str(fields.pop("agent", "proxy")), text=text, **fields)  # type: ignore[arg-type]


def test_default_plan_sub_assistant_uses_the_task_field() -> None:
    plan = default_plan(_turn(json.dumps({"task": "check", "context": "x"}), agent="critic", earlier=["a", "b"]))
    assert plan.text == "critic: done with 'check' (I remember 2 earlier requests)"
    assert default_plan(_turn("[1, 2]", agent="critic")).text == "critic: done with '[1, 2]'"


def test_default_plan_proxy_everyone_and_outputs() -> None:
    tools = ["ask_critic", "ask_planner", "other"]
    plan = default_plan(_turn("Everyone, please", tools=tools, earlier=["first", "second"]))
    assert [call.name for call in plan.calls] == ["ask_critic", "ask_planner"]
    assert json.loads(plan.calls[0].arguments) == {"task": "Everyone, please", "context": "first\nsecond"}
    results = [ToolResult("call_1", "ask_critic", "bad"), ToolResult("call_2", "ask_planner", "plan")]
    plan = default_plan(_turn("Everyone, please", tools=tools, tool_outputs=results, outputs_since_user=results))
    assert plan.text == "Here is what the team found:\n- critic: bad\n- planner: plan"


def test_rule_only_delay_keeps_default_behaviour() -> None:
    script = Script([Rule(delay=3)])
    plan = script.plan(_turn("hello", agent="critic"))
    assert (plan.text, plan.delay) == ("critic: done with 'hello'", 3)


def test_rule_times_and_on() -> None:
    script = Script([Rule(fail="server_error", times=1), Rule(on="tool_outputs", reply="done")])
    assert script.plan(_turn("x")).fail == "server_error"
    assert script.plan(_turn("x")).fail is None
    outputs = [ToolResult("c", "ask_x", "o")]
    assert script.plan(_turn("x", tool_outputs=outputs)).text == "done"


def test_script_lookup_falls_back_to_default_entry() -> None:
    special, fallback = Script([Rule(reply="special")]), Script([Rule(reply="fallback")])
    scripts = {"critic": special, "default": fallback}
    assert script_for(scripts, "critic") is special
    assert script_for(scripts, "someone") is fallback
    assert script_for({}, "someone").plan(_turn("hi", agent="someone")).text == "someone: done with 'hi'"


def test_load_scripts_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "scripts.yaml"
    path.write_text(
        """
critic:
  rules:
    - match: "(?i)slow"
      delay: 5
    - match: boom
      fail: rate_limit_exceeded
    - reply: "critic says: {input}"
proxy:
  - on: message
    calls:
      - name: ask_critic
        arguments: {task: "{input}", context: ""}
""",
        encoding="utf-8",
    )
    scripts = load_scripts(path)
    assert scripts["critic"].plan(_turn("SLOW one", agent="critic")).delay == 5
    assert scripts["critic"].plan(_turn("boom", agent="critic")).fail == "rate_limit_exceeded"
    assert scripts["critic"].plan(_turn("hey", agent="critic")).text == "critic says: hey"
    call = scripts["proxy"].plan(_turn("go")).calls[0]
    assert (call.name, json.loads(call.arguments)) == ("ask_critic", {"task": "go", "context": ""})
    path.write_text("critic: {rules: [{unknown: 1}]}", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown"):
        load_scripts(path)


async def test_manual_clock_wakes_sleepers_in_order_including_chained_sleeps() -> None:
    clock = ManualClock(start=100.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, *delays: float) -> None:
        for delay in delays:
            await clock.sleep(delay)
            woke.append((name, clock.now()))

    tasks = [asyncio.create_task(sleeper("a", 3)), asyncio.create_task(sleeper("b", 1, 1))]
    await clock.wait_for_sleepers(2)
    await clock.advance(2.5)
    assert woke == [("b", 101.0), ("b", 102.0)]
    assert clock.now() == 102.5
    await clock.advance(0.5)
    assert woke[-1] == ("a", 103.0)
    await asyncio.gather(*tasks)
    with pytest.raises(ValueError):
        await clock.advance(-1)


async def test_manual_clock_sleep_until_a_past_deadline_returns_at_once() -> None:
    clock = ManualClock(start=10.0)
    await clock.sleep_until(5.0)
    clock.advance_nowait(1)
    assert clock.now() == 11.0 and clock.sleepers == 0
