"""Split a long answer into messages within a platform's limit, losing nothing, in time linear in its length.
Chunk bodies are consecutive slices of the text, and every chunk, with any code fence a split adds, fits the limit.

Platforms differ only in a `Splitter`'s parameters: how length is counted (`utf16`, as Slack counts) and what a
split inside a fenced code block does (`reopen_fences`).

A split prefers, in order: a paragraph or code-block boundary, a line end, a sentence end, a space; only a single
unbroken run longer than a message is cut mid-word. With `reopen_fences` (Discord), a split inside a code block
closes the fence at the end of its chunk and re-opens it (with the same language) at the start of the next, so every
chunk renders as valid markdown, and `unsplit` undoes exactly what was added. Without it (Slack, whose parts must
concatenate back exactly), a split inside a code block is taken only when no boundary outside one fits.

The boundaries and code blocks are found once, by a few scans of the whole text; each chunk then costs a binary
search per tier, never a rescan of the text before it.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

FENCE = "```"
#: take a lower-quality boundary rather than a better one that fills less than this share of a chunk
MIN_FILL = 0.5
#: a fence's language tag longer than this is not carried over when the fence is re-opened
LANG_MAX = 32
#: the smallest limit that leaves room for text between a re-opened fence line and a closing fence
MIN_LIMIT_WITH_FENCES = 2 * (len(FENCE) + LANG_MAX)

_PARAGRAPH = 4
_LINE = 3
_SENTENCE = 2
_WORD = 1
_TIERS = (_PARAGRAPH, _LINE, _SENTENCE, _WORD)
#: without re-opened fences, every boundary inside a code block ranks below every boundary outside one
_INSIDE_CODE_PENALTY = len(_TIERS)

_PARAGRAPH_END = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)*")  # after a run of blank lines
_LINE_END = re.compile(r"\n")
_SENTENCE_END = re.compile(r"[.!?;:][\"')\]]*\s")
_SPACES = re.compile(r"[ \t]+")
_LANG = re.compile(r"[\w+#.-]*")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")  # two UTF-16 code units each


@dataclass(frozen=True, slots=True)
class Chunk:
    prefix: str  # a re-opened code fence, or ""
    body: str  # a slice of the original text
    suffix: str  # a closing code fence, or ""

    @property
    def text(self) -> str:
        return self.prefix + self.body + self.suffix


@dataclass(frozen=True, slots=True)
class Splitter:
    """One platform's way of splitting: its message `limit`, whether length is counted in UTF-16 code units
    (`utf16`) rather than code points, and whether a code block cut by a split is closed and re-opened
    (`reopen_fences`)."""

    limit: int
    utf16: bool = False
    reopen_fences: bool = True

    def __post_init__(self) -> None:
        self._check(self.limit)

    def _check(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be positive")
        if self.reopen_fences and limit < MIN_LIMIT_WITH_FENCES:
            raise ValueError(f"limit {limit} is too small to split code blocks")

    def length(self, text: str) -> int:
        """The length of `text` as the platform counts it."""
        return len(text) + (len(_ASTRAL.findall(text)) if self.utf16 else 0)

    def fitting_prefix(self, text: str, limit: int) -> int:
        """The largest `i` such that `text[:i]` is at most `limit` long (never splits a character)."""
        return _Layout(text, self.utf16, reopen_fences=False, boundaries=False).fitting_end(0, max(limit, 0))

    def chunks(
        self, text: str, *, limit: int | None = None, first_limit: int | None = None, first_min: int = 0
    ) -> list[Chunk]:
        """The chunks of `text` (none for an empty text), each at most `limit` (default: the splitter's) long, the
        first at most `first_limit`. `first_min`: the first chunk's body keeps at least that many characters when
        they fit (a prefix already on screen that must stay part of the first message)."""
        limit = self.limit if limit is None else limit
        first = limit if first_limit is None else first_limit
        self._check(limit)
        self._check(first)
        if not text:
            return []
        return _plan(_Layout(text, self.utf16, self.reopen_fences), limit, first, first_min)

    def split(
        self, text: str, *, limit: int | None = None, first_limit: int | None = None, first_min: int = 0
    ) -> list[str]:
        """The messages to post, in order (see `chunks`)."""
        return [chunk.text for chunk in self.chunks(text, limit=limit, first_limit=first_limit, first_min=first_min)]


def unsplit(chunks: list[Chunk]) -> str:
    """The original text back (inverse of `Splitter.chunks`)."""
    return "".join(chunk.body for chunk in chunks)


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
        if line.count(FENCE) % 2 == 1:
            if open_start is None:
                after = line[line.index(FENCE) + len(FENCE) :].strip()
                lang = after if len(after) <= LANG_MAX and _LANG.fullmatch(after) else ""
                open_start = pos + len(line)
            else:
                spans.append(_CodeSpan(open_start, pos, lang))
                open_start = None
        pos += len(line)
    if open_start is not None:
        spans.append(_CodeSpan(open_start, len(text), lang))
    return spans


class _Layout:
    """One text's boundaries (by quality tier), code blocks and length measure, found once. `work` counts the
    elementary steps taken (characters scanned, candidates looked at, search steps): a test holds it to linear."""

    def __init__(self, text: str, utf16: bool, reopen_fences: bool, *, boundaries: bool = True) -> None:
        self.text = text
        self.reopen_fences = reopen_fences
        self.work = 0
        self.astral = self._scan_positions(_ASTRAL) if utf16 else []
        self.spans: list[_CodeSpan] = []
        self.span_starts: list[int] = []
        self.tiers: tuple[int, ...] = ()
        self.at_least: dict[int, list[int]] = {}  # tier -> sorted positions whose quality is at least that tier
        if boundaries:
            self.work += len(text)
            self.spans = _code_spans(text)
            self.span_starts = [span.body_start for span in self.spans]
            self._collect()

    def _scan_positions(self, pattern: re.Pattern[str], end: bool = False) -> list[int]:
        self.work += len(self.text)
        return [m.end() if end else m.start() for m in pattern.finditer(self.text)]

    def _collect(self) -> None:
        text = self.text
        quality: dict[int, int] = {}

        def add(positions: list[int], tier: int) -> None:
            self.work += len(positions)
            for pos in positions:
                if 0 < pos < len(text) and quality.get(pos, -1) < tier:
                    quality[pos] = tier

        add(self._scan_positions(_PARAGRAPH_END, end=True), _PARAGRAPH)
        add(self._scan_positions(_LINE_END, end=True), _LINE)
        add(self._scan_positions(_SENTENCE_END, end=True), _SENTENCE)
        add(self._scan_positions(_SPACES, end=True), _WORD)
        around_code = []
        for span in self.spans:
            around_code.append(text.rfind("\n", 0, span.body_start - 1) + 1)  # just before the opening fence line
            close_end = text.find("\n", span.body_end)
            if close_end != -1:
                around_code.append(close_end + 1)  # just after the closing fence line
        add(around_code, _PARAGRAPH)
        # right after an opening fence line or right before a closing one: an empty code block on one side
        for span in self.spans:
            quality.pop(span.body_start, None)
            quality.pop(span.body_end, None)
        # inside code, only line ends and (for huge lines) spaces: never a "paragraph" there
        self.work += len(quality)
        for pos, tier in quality.items():
            if self.span_at(pos) is not None:
                inside = min(tier, _LINE)
                quality[pos] = inside if self.reopen_fences else inside - _INSIDE_CODE_PENALTY
        ordered = sorted(quality)
        self.tiers = tuple(sorted(set(quality.values()), reverse=True))
        self.work += len(ordered) * (1 + len(self.tiers))
        self.at_least = {tier: [p for p in ordered if quality[p] >= tier] for tier in self.tiers}

    def units(self, start: int, end: int) -> int:
        """The length of text[start:end] as the platform counts it."""
        if not self.astral:
            return end - start
        self.work += 1
        return end - start + bisect.bisect_left(self.astral, end) - bisect.bisect_left(self.astral, start)

    def fitting_end(self, start: int, budget: int) -> int:
        """The largest `end` such that text[start:end] is at most `budget` long."""
        hi = min(len(self.text), start + budget)
        if self.units(start, hi) <= budget:
            return hi
        lo = start  # units(start, lo) <= budget < units(start, hi)
        while hi - lo > 1:
            self.work += 1
            mid = (lo + hi) // 2
            if self.units(start, mid) <= budget:
                lo = mid
            else:
                hi = mid
        return lo

    def span_at(self, pos: int) -> _CodeSpan | None:
        """The code block a split at `pos` would fall inside (anywhere from its body's start to its closing line)."""
        i = bisect.bisect_right(self.span_starts, pos) - 1
        if i >= 0 and pos <= self.spans[i].body_end and pos < len(self.text):
            return self.spans[i]
        return None

    def prefix(self, start: int) -> str:
        span = self.span_at(start) if self.reopen_fences and start > 0 else None
        return f"{FENCE}{span.lang}\n" if span is not None else ""

    def suffix(self, end: int) -> str:
        if not self.reopen_fences or end >= len(self.text) or self.span_at(end) is None:
            return ""
        return FENCE if self.text[end - 1] == "\n" else "\n" + FENCE

    def furthest(self, tier: int, start: int, hard: int, room: int, lowest: int) -> int | None:
        """The last boundary of at least `tier` in [lowest, hard] whose chunk from `start`, with its closing fence,
        takes at most `room`."""
        positions = self.at_least[tier]
        i = bisect.bisect_right(positions, hard) - 1
        # only the few boundaries within a closing fence's length of `hard` can fail to fit: a bounded walk back
        while i >= 0 and positions[i] >= lowest:
            self.work += 1
            end = positions[i]
            if self.units(start, end) + len(self.suffix(end)) <= room:
                return end
            i -= 1
        return None

    def choose(self, start: int, room: int, limit: int, lowest: int) -> int:
        """Where the chunk starting at `start` ends, given `room` for its body and closing fence."""
        hard = self.fitting_end(start, room)
        best_any: int | None = None
        for tier in self.tiers:
            end = self.furthest(tier, start, hard, room, lowest)
            if end is None:
                continue
            if best_any is None:
                best_any = end
            if self.units(start, end) >= MIN_FILL * limit:
                return end
        if best_any is not None:
            return best_any
        # one unbroken run longer than a message: cut it, as late as fits
        end = hard
        while end > start + 1 and self.units(start, end) + len(self.suffix(end)) > room:
            self.work += 1
            end -= 1
        return max(end, start + 1)


def _plan(layout: _Layout, limit: int, first_limit: int, first_min: int) -> list[Chunk]:
    text = layout.text
    chunks: list[Chunk] = []
    start, budget, floor = 0, first_limit, first_min
    while True:
        prefix = layout.prefix(start)
        room = budget - len(prefix)
        if layout.units(start, len(text)) <= room:
            chunks.append(Chunk(prefix, text[start:], ""))
            layout.work += len(text) - start
            return chunks
        end = layout.choose(start, room, budget, start + max(floor, 1))
        chunks.append(Chunk(prefix, text[start:end], layout.suffix(end)))
        layout.work += end - start
        if end == len(text):  # a last character wider than the limit, cut alone
            return chunks
        start, budget, floor = end, limit, 0
