"""Hypothesis strategies for hostile text, shared by the hostile-input tests."""

from __future__ import annotations

from hypothesis import strategies as st

NASTY = (
    "",
    " ",
    "\n\t \r\n",
    "\u00a0\u2003\u3000",  # Unicode spaces
    "\u200b\u200c\u200d\ufeff",  # zero-width characters
    "\x00\x01\x07\x1b[31m\x7f",  # control characters and an ANSI escape
    "\u202e\u2066",  # bidi overrides
    "Z\u0351\u0352\u0353\u0354\u0355",  # combining marks
    "🙂👩‍👩‍👧‍👦🏳️‍🌈",  # emoji and ZWJ sequences
    "\U0010fffd\ue000",  # private use
    "'; DROP TABLE inbox; --",
    "\" OR 1=1 --",
    "x'); DELETE FROM turns WHERE ('1'='1",
    "%s %d {0} {text} %(x)s",
    "\\x00 \\u0000 \\",
    "<@U0BOT> <@U0BOT|switchboard> <!channel> <!here> <#C0GENERAL>",
    "<@123456789> <@!123456789> <@&987654321> @everyone",
    "```\ncode\n```",
    "reset all confirm",
    "/switchboard reset channel",
)


def huge_text() -> st.SearchStrategy[str]:
    """100,000+ characters."""
    return st.builds(lambda unit, extra: unit * (100_000 // len(unit) + 1) + extra,
                     st.text(min_size=1, max_size=8), st.text(max_size=20))


def hostile_text(allow_huge: bool = True) -> st.SearchStrategy[str]:
    pieces = st.one_of(st.sampled_from(NASTY), st.text(max_size=200), st.characters().map(str))
    joined = st.lists(pieces, max_size=6).map("".join)
    return st.one_of(joined, huge_text()) if allow_huge else joined
