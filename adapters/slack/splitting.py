"""Split long text into pieces below Slack's limits without losing a character.

The pieces concatenate back to the original exactly. Boundaries are chosen, in order of preference, at a
paragraph break, a line break, a sentence end or a space, outside fenced code blocks when possible; only a single
word longer than the limit is cut mid-word. Lengths are counted in UTF-16 code units (what Slack counts), so an
emoji-heavy text never slips over a limit.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)
_SENTENCE_END = re.compile(r"[.!?](\s)")


def slack_len(text: str) -> int:
    """Length as Slack counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def _prefix_fitting(text: str, limit: int) -> int:
    """Largest index i such that slack_len(text[:i]) <= limit (never splits a character)."""
    if slack_len(text) <= limit:
        return len(text)
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return i
    return len(text)


def _inside_fence(text: str, index: int) -> bool:
    """True when position `index` lies inside a fenced code block opened before it."""
    return len(_FENCE.findall(text, 0, index)) % 2 == 1


def _best_boundary(text: str, hard: int, lowest: int) -> int:
    """Pick a split index in (lowest, hard] for text[:hard]; hard when nothing better exists."""
    window = text[:hard]
    candidates: list[int] = []
    for pattern in ("\n\n", "\n"):
        pos = window.rfind(pattern)
        while pos > lowest:
            candidates.append(pos + len(pattern))
            pos = window.rfind(pattern, 0, pos)
        if candidates:
            break
    sentence = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() > lowest]
    spaces = [m.end() for m in re.finditer(r"\s", window) if m.end() > lowest]
    for group in (candidates, sorted(sentence, reverse=True), sorted(spaces, reverse=True)):
        outside = [i for i in group if not _inside_fence(text, i)]
        if outside:
            return max(outside)
    for group in (candidates, sentence, spaces):
        if group:
            return max(group)
    return hard


def split_text(text: str, limit: int, *, first_limit: int | None = None, first_min: int = 0) -> list[str]:
    """Split `text` into pieces of at most `limit` (the first at most `first_limit`) UTF-16 units.

    `first_min` forces the first piece to be at least that many characters long (used when a prefix of the text
    is already on screen and must stay part of the first piece). ``"".join(result) == text`` always holds.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    pieces: list[str] = []
    rest = text
    current_limit = first_limit if first_limit is not None else limit
    minimum = first_min
    while rest:
        hard = _prefix_fitting(rest, current_limit)
        if hard >= len(rest):
            pieces.append(rest)
            break
        if hard < 1:
            hard = 1
        lowest = max(minimum - 1, hard // 2)
        cut = _best_boundary(rest, hard, lowest) if minimum <= hard else hard
        cut = max(cut, min(minimum, hard), 1)
        pieces.append(rest[:cut])
        rest = rest[cut:]
        current_limit = limit
        minimum = 0
    return pieces
