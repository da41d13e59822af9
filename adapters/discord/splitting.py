"""Split a long answer into Discord messages of at most 2,000 characters without losing a character.

Chunks are slices of the original text. A split prefers, in order: a paragraph or code-block boundary, a line
end, a sentence end, a space; only a single unbroken run longer than a message is cut mid-word. A split inside a
fenced code block closes the fence at the end of the chunk and re-opens it (with the same language) at the start
of the next, so every chunk renders as valid markdown. `unsplit` undoes exactly what was added.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from adapters.discord.constants import MESSAGE_CONTENT_LIMIT

FENCE = "```"
#: take a lower-quality boundary rather than a better one that fills less than this share of a chunk
MIN_FILL = 0.5

_PARAGRAPH = 4
_LINE = 3
_SENTENCE = 2
_WORD = 1
_TIERS = (_PARAGRAPH, _LINE, _SENTENCE, _WORD)
_SENTENCE_END = re.compile(r"[.!?;:][\"')\]]*\s")


@dataclass(frozen=True, slots=True)
class Chunk:
    prefix: str  # a re-opened code fence, or ""
    body: str  # a slice of the original text
    suffix: str  # a closing code fence, or ""

    @property
    def text(self) -> str:
        return self.prefix + self.body + self.suffix


@dataclass(frozen=True, slots=True)
class _CodeSpan:
    body_start: int  # first character after the opening fence line
    body_end: int  # first character of the closing fence line (len(text) if unclosed)
    lang: str


def _code_spans(text: str) -> list[_CodeSpan]:
    spans: list[_CodeSpan] = []
    pos = 0
    open_start: int | None = None
    lang = ""
    for line in text.splitlines(keepends=True):
        toggles = line.count(FENCE) % 2 == 1
        if toggles:
            if open_start is None:
                after = line[line.index(FENCE) + len(FENCE) :].strip()
                lang = after if re.fullmatch(r"[\w+#.-]*", after) else ""
                open_start = pos + len(line)
            else:
                spans.append(_CodeSpan(open_start, pos, lang))
                open_start = None
        pos += len(line)
    if open_start is not None:
        spans.append(_CodeSpan(open_start, len(text), lang))
    return spans


class _Layout:
    def __init__(self, text: str) -> None:
        self.text = text
        self.spans = _code_spans(text)
        self.candidates: dict[int, int] = {}  # split position -> quality
        self._collect()

    def span_at(self, pos: int) -> _CodeSpan | None:
        """The code block a split at `pos` would fall inside (anywhere from its body's start to its closing line)."""
        for span in self.spans:
            if span.body_start <= pos <= span.body_end and pos < len(self.text):
                return span
        return None

    def _add(self, pos: int, quality: int) -> None:
        if 0 < pos < len(self.text) and self.candidates.get(pos, -1) < quality:
            self.candidates[pos] = quality

    def _collect(self) -> None:
        text = self.text
        for match in re.finditer(r"\n[ \t]*\n(?:[ \t]*\n)*", text):  # after a run of blank lines
            self._add(match.end(), _PARAGRAPH)
        for match in re.finditer(r"\n", text):
            self._add(match.end(), _LINE)
        for match in _SENTENCE_END.finditer(text):
            self._add(match.end(), _SENTENCE)
        for match in re.finditer(r"[ \t]+", text):
            self._add(match.end(), _WORD)
        for span in self.spans:
            fence_line_start = text.rfind("\n", 0, span.body_start - 1) + 1
            self._add(fence_line_start, _PARAGRAPH)  # just before the opening fence line
            close_end = text.find("\n", span.body_end)
            if close_end != -1:
                self._add(close_end + 1, _PARAGRAPH)  # just after the closing fence line
        # right after an opening fence line or right before a closing one: an empty code block on one side
        for span in self.spans:
            self.candidates.pop(span.body_start, None)
            self.candidates.pop(span.body_end, None)
        # inside code, only line ends and (for huge lines) spaces: never a "paragraph" there
        for pos, quality in list(self.candidates.items()):
            if self.span_at(pos) is not None and quality == _PARAGRAPH:
                self.candidates[pos] = _LINE

    def prefix(self, start: int) -> str:
        span = self.span_at(start) if start > 0 else None
        return f"{FENCE}{span.lang}\n" if span is not None else ""

    def suffix(self, end: int) -> str:
        if end >= len(self.text) or self.span_at(end) is None:
            return ""
        return FENCE if self.text[end - 1] == "\n" else "\n" + FENCE

    def size(self, start: int, end: int) -> int:
        return len(self.prefix(start)) + (end - start) + len(self.suffix(end))


def split_chunks(text: str, limit: int = MESSAGE_CONTENT_LIMIT) -> list[Chunk]:
    if limit < 2 * (len(FENCE) + 32):
        raise ValueError(f"limit {limit} is too small to split code blocks")
    if len(text) <= limit:
        return [Chunk("", text, "")]
    layout = _Layout(text)
    ordered = sorted(layout.candidates)
    chunks: list[Chunk] = []
    start = 0
    while len(text) - start + len(layout.prefix(start)) > limit:
        window = ordered[bisect.bisect_right(ordered, start) : bisect.bisect_right(ordered, start + limit)]
        fitting = [p for p in window if layout.size(start, p) <= limit]
        end = _choose(layout, start, fitting, limit)
        chunks.append(Chunk(layout.prefix(start), text[start:end], layout.suffix(end)))
        start = end
    chunks.append(Chunk(layout.prefix(start), text[start:], ""))
    return chunks


def _choose(layout: _Layout, start: int, fitting: list[int], limit: int) -> int:
    best_any: int | None = None
    for tier in _TIERS:
        in_tier = [p for p in fitting if layout.candidates[p] >= tier]
        if not in_tier:
            continue
        furthest = in_tier[-1]
        if best_any is None:
            best_any = furthest
        if furthest - start >= MIN_FILL * limit:
            return furthest
    if best_any is not None:
        return best_any
    # one unbroken run longer than a message: cut it, as late as fits
    end = start + 1
    while end < len(layout.text) and layout.size(start, end + 1) <= limit:
        end += 1
    return end


def split_message(text: str, limit: int = MESSAGE_CONTENT_LIMIT) -> list[str]:
    """The messages to post, in order; each at most `limit` characters."""
    return [chunk.text for chunk in split_chunks(text, limit)]


def unsplit(chunks: list[Chunk]) -> str:
    """The original text back (inverse of `split_chunks`)."""
    return "".join(chunk.body for chunk in chunks)
