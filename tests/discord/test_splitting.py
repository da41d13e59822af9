"""Answers longer than 2,000 characters: split on paragraph and code-block boundaries, fences closed and re-opened,
nothing lost."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.discord.constants import MESSAGE_CONTENT_LIMIT, MESSAGE_TEXT
from adapters.splitting import FENCE, unsplit
from bot.types import Reply
from tests.discord.conftest import StartAdapter, World

CODE = "```python\n" + "\n".join(f"result_{i} = compute({i})  # step {i} of the pipeline" for i in range(90)) + "\n```"
PROSE = "\n\n".join(f"Paragraph {i}. " + "Some explanatory words here. " * 12 for i in range(8))
LONG_ANSWER = f"Here is the plan.\n\n{PROSE}\n\n{CODE}\n\nAnd that is all."


def _content(text: str) -> str:
    """What a reader sees, independent of the splitter: every non-whitespace character outside fence lines, in order
    (fence lines are dropped because a split adds some: a closing one and a re-opening one with the language)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith(FENCE)]
    return "".join("".join(lines).split())


def _rejoin(messages: list[str]) -> str:
    return "\n".join(messages)


def test_short_text_is_one_message() -> None:
    assert MESSAGE_TEXT.split("hello") == ["hello"]
    assert MESSAGE_TEXT.split("x" * MESSAGE_CONTENT_LIMIT) == ["x" * MESSAGE_CONTENT_LIMIT]


def test_long_answer_splits_on_boundaries_and_keeps_code_valid() -> None:
    chunks = MESSAGE_TEXT.chunks(LONG_ANSWER)
    messages = [c.text for c in chunks]
    assert len(messages) >= 3
    assert all(len(m) <= MESSAGE_CONTENT_LIMIT for m in messages)
    assert unsplit(chunks) == LONG_ANSWER  # nothing lost or repeated
    assert all(m.count(FENCE) % 2 == 0 for m in messages)  # every message renders its code block closed
    reopened = [m for m in messages if m.startswith("```python\n")]
    assert reopened, "a split inside the code block re-opens it with its language"
    for chunk in chunks:  # prose is cut only after a paragraph or a line, never inside a word
        if not chunk.suffix:
            assert chunk.body.endswith(("\n", "all.")), repr(chunk.body[-30:])
    assert _content(_rejoin(messages)) == _content(LONG_ANSWER)  # checked without the splitter's own inverse


def test_unbroken_run_is_cut_but_not_lost() -> None:
    text = "a" * 4500
    messages = MESSAGE_TEXT.split(text)
    assert [len(m) for m in messages] == [2000, 2000, 500] and "".join(messages) == text


def test_huge_code_line_is_cut_inside_the_block() -> None:
    text = "```\n" + "x" * 3000 + "\n```"
    chunks = MESSAGE_TEXT.chunks(text)
    assert all(len(c.text) <= MESSAGE_CONTENT_LIMIT for c in chunks)
    assert unsplit(chunks) == text and all(c.text.count(FENCE) % 2 == 0 for c in chunks)


_word = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="`\n\r"), min_size=1, max_size=40)
_line = st.lists(_word, min_size=1, max_size=30).map(" ".join)
_paragraph = st.lists(_line, min_size=1, max_size=8).map("\n".join)
_code = st.tuples(st.sampled_from(["", "python", "js"]), st.lists(_line, min_size=1, max_size=60)).map(
    lambda t: f"```{t[0]}\n" + "\n".join(t[1]) + "\n```"
)
_document = st.lists(st.one_of(_paragraph, _code, st.just("z" * 2500)), min_size=1, max_size=12).map("\n\n".join)


@settings(max_examples=60, deadline=None)
@given(_document, st.sampled_from([200, 500, MESSAGE_CONTENT_LIMIT]))
def test_split_properties(text: str, limit: int) -> None:
    chunks = MESSAGE_TEXT.chunks(text, limit=limit)
    assert unsplit(chunks) == text
    assert all(len(c.text) <= limit for c in chunks)
    assert all(c.text.count(FENCE) % 2 == 0 for c in chunks)  # the generated documents have balanced fences
    assert all(c.body for c in chunks)
    assert _content(_rejoin([c.text for c in chunks])) == _content(text)


async def test_long_answer_reaches_the_channel_in_order_and_in_full(world: World, start_adapter: StartAdapter) -> None:
    adapter, bot = await start_adapter()
    fake = world.fake
    question = await fake.user_message(world.general, world.alice, f"<@{fake.bot_id}> explain at length")
    inbound = await bot.next_inbound()
    mark = fake.mark()
    delivered = await adapter.surface.deliver(bot.turn(inbound), Reply(LONG_ANSWER))

    posted = fake.bot_messages(world.general)
    expected = MESSAGE_TEXT.split(LONG_ANSWER)
    assert [m["content"] for m in posted] == expected
    assert posted[0]["id"] == delivered
    assert posted[0]["message_reference"]["message_id"] == question["id"]  # the head answers the question
    assert all("message_reference" not in m for m in posted[1:])
    # the head is a placeholder first and gets its text last: a complete head means a complete answer
    writes = [c for c in fake.calls[mark:] if c.route.startswith(("POST /channels", "PATCH /channels"))]
    assert writes[0].route == "POST /channels/{channel_id}/messages" and writes[0].body.get("embeds")
    assert writes[-1].route == "PATCH /channels/{channel_id}/messages/{message_id}"
    assert writes[-1].body["content"] == expected[0]
    assert _content(_rejoin([m["content"] for m in posted])) == _content(LONG_ANSWER)
