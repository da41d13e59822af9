"""The shared splitter (adapters/splitting.py) under both platforms' parameters: nothing lost, every part within the
limit, code blocks balanced, and work linear in the text's length.

The linear-time check counts the splitter's elementary steps (`_Layout.work`: characters scanned, boundaries looked
at, search steps) for the same kind of text at 10k and 100k characters; it never measures time.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.discord.constants import MESSAGE_TEXT as DISCORD
from adapters.slack.constants import MESSAGE_TEXT as SLACK
from adapters.splitting import FENCE, MIN_LIMIT_WITH_FENCES, Splitter, _Layout, _plan, unsplit

_REOPENED = re.compile(r"```[\w+#.-]*\n")

_word = st.text(alphabet=st.characters(exclude_characters="`\n\r", exclude_categories=["Cs"]), min_size=1,
                max_size=40)
_line = st.lists(_word, min_size=1, max_size=30).map(" ".join)
_paragraph = st.lists(_line, min_size=1, max_size=8).map("\n".join)
_code = st.tuples(st.sampled_from(["", "python", "js"]), st.lists(_line, min_size=1, max_size=60)).map(
    lambda t: f"```{t[0]}\n" + "\n".join(t[1]) + "\n```"
)
_run = st.sampled_from(["z", "🙂"]).flatmap(lambda ch: st.integers(1, 2500).map(lambda k: ch * k))
_document = st.lists(st.one_of(_paragraph, _code, _run), min_size=1, max_size=12).flatmap(
    lambda blocks: st.sampled_from(["\n\n", "\n"]).map(lambda sep: sep.join(blocks))  # fences open lines
)


@settings(max_examples=80, deadline=None)
@given(_document, st.sampled_from([MIN_LIMIT_WITH_FENCES, 200, 2_000]), st.booleans())
def test_reopened_fences_keep_every_chunk_balanced_and_within_the_limit(text: str, limit: int, utf16: bool) -> None:
    splitter = Splitter(limit, utf16=utf16)
    chunks = splitter.chunks(text)
    assert unsplit(chunks) == text  # the bodies are the text, in order
    assert all(c.body for c in chunks)
    assert all(splitter.length(c.text) <= limit for c in chunks)
    assert all(c.prefix == "" or _REOPENED.fullmatch(c.prefix) for c in chunks)  # all the splitter adds: fences
    assert all(c.suffix in ("", FENCE, "\n" + FENCE) for c in chunks)
    assert all(c.text.count(FENCE) % 2 == 0 for c in chunks)  # the generated documents have balanced fences


@settings(max_examples=80, deadline=None)
@given(_document, st.integers(min_value=1, max_value=3_000), st.booleans())
def test_parts_without_reopened_fences_concatenate_to_the_text(text: str, limit: int, utf16: bool) -> None:
    splitter = Splitter(limit, utf16=utf16, reopen_fences=False)
    parts = splitter.split(text)
    assert "".join(parts) == text
    assert all(parts)
    # only a single character wider than the limit (an emoji counted as 2 against a limit of 1) may exceed it
    assert all(splitter.length(p) <= limit or len(p) == 1 for p in parts)


def test_lengths_are_counted_the_platform_s_way() -> None:
    assert SLACK.length("a🙂é") == 4 and DISCORD.length("a🙂é") == 3
    assert SLACK.fitting_prefix("ab🙂c", 3) == 2 and DISCORD.fitting_prefix("ab🙂c", 3) == 3
    assert DISCORD.split("") == [] and SLACK.split("") == []


def test_without_reopened_fences_a_split_avoids_code_while_a_boundary_outside_fits() -> None:
    splitter = Splitter(100, reopen_fences=False)
    code = "```\n" + "\n".join(f"line {i}" for i in range(8)) + "\n```"
    text = "Some words before the code, " * 2 + code + " and after."
    parts = splitter.split(text)
    assert parts[0] == "Some words before the code, " * 2  # a space outside beats every line end inside
    assert parts[1].startswith(code)


def test_a_code_block_longer_than_a_message_is_cut_at_a_line_inside_it() -> None:
    code = "```js\n" + "\n".join(f"let x{i} = {i};" for i in range(40)) + "\n```"
    reopened = Splitter(200).chunks(code)
    assert len(reopened) > 1 and all(c.body.endswith("\n") for c in reopened[:-1])
    assert all(c.prefix == "```js\n" for c in reopened[1:])
    plain = Splitter(200, reopen_fences=False).split(code)
    assert len(plain) > 1 and all(p.endswith("\n") for p in plain[:-1])


def _prose(n: int) -> str:
    paragraph = "A sentence of explanation, with words. " * 10 + "\n\n"
    return (paragraph * (n // len(paragraph) + 1))[:n]


def _code_heavy(n: int) -> str:
    block = "Then:\n\n```python\n" + "value = compute(1)  # step\n" * 30 + "```\n\n"
    return (block * (n // len(block) + 1))[:n]


def _tiny_code_blocks(n: int) -> str:
    return ("`` ```\nx\n``` \n" * (n // 15 + 1))[:n]


def _one_long_code_block(n: int) -> str:
    return ("```\n" + "x = 1 " * n)[:n]


def _unbroken(n: int) -> str:
    return "z" * n


def _emoji(n: int) -> str:
    return ("🙂 " * n)[:n]


SHAPES: dict[str, Callable[[int], str]] = {
    "prose": _prose,
    "code-heavy": _code_heavy,
    "tiny code blocks": _tiny_code_blocks,
    "one long code block": _one_long_code_block,
    "unbroken": _unbroken,
    "emoji": _emoji,
}
#: elementary steps per character: a dozen scans and a few per boundary; a rescan per chunk would be ~n / limit
WORK_PER_CHAR = 20


def _work(splitter: Splitter, text: str) -> int:
    layout = _Layout(text, splitter.utf16, splitter.reopen_fences)
    chunks = _plan(layout, splitter.limit, splitter.limit, 0)
    assert unsplit(chunks) == text
    assert all(splitter.length(c.text) <= splitter.limit for c in chunks)
    return layout.work


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("splitter", [DISCORD, SLACK], ids=["discord", "slack"])
def test_a_100k_character_reply_splits_in_linear_work(shape: str, splitter: Splitter) -> None:
    small, large = (_work(splitter, SHAPES[shape](n)) for n in (10_000, 100_000))
    assert large <= WORK_PER_CHAR * 100_000, large
    assert large <= 12 * small, (small, large)  # ten times the text, about ten times the work
