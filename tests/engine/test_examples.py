"""The example team files, one per pattern (delegation, handoffs, both), load and work end to end in the terminal:
`switchboard demo --config examples/<pattern>.toml` on the bundled emulator, answers on standard output (JSON lines)
named by the assistant that wrote them and progress lines ("handed to ...", "asking ...") on standard error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.config import load_config
from tests.engine.test_first_run import cli

REPO = Path(__file__).resolve().parents[2]
PATTERNS = ("delegation", "handoffs", "both")


@pytest.mark.parametrize("pattern", PATTERNS)
def test_each_example_team_file_loads_with_its_pattern(pattern):
    team = load_config(REPO / "examples" / f"{pattern}.toml", env={})
    assert team.uses_handoffs == (pattern != "delegation")
    asks = any(team.delegates_of(member) for member in team.members)
    assert asks == (pattern != "handoffs")


async def _demo(tmp_path: Path, pattern: str, lines: list[str], backend: str = "responses") -> tuple[list[str], str]:
    code, out, err = await cli(tmp_path, "demo", "--config", str(REPO / "examples" / f"{pattern}.toml"), "--jsonl",
                               "--token-delay", "0", "--work-seconds", "0", "--backend", backend,
                               stdin="".join(line + "\n" for line in lines))
    assert code == 0, err
    return [json.loads(line)["text"] for line in out.splitlines() if line.strip()], err


async def test_the_handoffs_example_in_the_terminal_hands_the_conversation_on_and_keeps_it(tmp_path):
    answers, err = await _demo(tmp_path, "handoffs", [
        "hello", "I have a billing question, invoice=1042", "my card was charged twice", "support please: it crashes"])
    assert len(answers) == 4  # one answer per message
    assert [a.split(":")[0] for a in answers] == ["triage", "billing", "billing", "support"]
    assert "→ handed to billing: the user asked for billing" in err
    assert "→ handed to support" in err
    code, out, _ = await cli(tmp_path, "status")  # the demo's database: who holds the conversation, and its state
    assert code == 0 and "held by support (state: invoice=1042)" in out, out


@pytest.mark.parametrize("backend", ["responses", "assistants", "chat"])
async def test_the_both_example_hands_over_and_the_holder_still_asks_specialists(tmp_path, backend):
    answers, err = await _demo(tmp_path, "both", [
        "the editor please, page=3", "ask the fact_checker about it", "back to the writer please"], backend)
    assert [a.split(":")[0] for a in answers] == ["editor", "editor", "writer"]
    assert answers[1].startswith("editor: Here is what the team found:") and "- fact_checker:" in answers[1]
    assert "→ handed to editor" in err and "asking fact_checker" in err and "→ handed to writer" in err


async def test_the_delegation_example_asks_specialists_and_answers_without_names(tmp_path):
    answers, err = await _demo(tmp_path, "delegation", ["ask the researcher and the critic about our launch"])
    assert len(answers) == 1 and answers[0].startswith("Here is what the team found:")
    assert "asking researcher" in err and "asking critic" in err and "handed" not in err


async def test_a_demo_with_a_broken_team_file_says_what_is_wrong(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('entry = "nobody"\n[proxy]\ninstructions = "x"\n')
    code, _, err = await cli(tmp_path, "demo", "--config", str(bad), stdin="")
    assert code != 0 and "entry: must name an assistant of this team, not 'nobody'" in err
