"""What the emulator saw: a bounded request log and counters, readable from tests and over HTTP.

Contract: one `LogEntry` per `/v1` request, appended when its answer is complete (a stream: when it closed), with
the status the client got (599: the connection closed without a complete answer), the error it carried, how many
stream events were sent and which injected fault (if any) decided the outcome.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, overload

MAX_LOG_ENTRIES = 50_000  # the oldest entries are dropped beyond this (benchmarks make many requests)


@dataclass(slots=True)
class LogEntry:
    """One HTTP request. Times are on the emulator clock; ticks order entries against object lifetimes."""

    method: str
    path: str
    template: str
    status: int
    t_start: float
    t_end: float
    tick_start: int
    tick_end: int
    request_id: str
    agent: str | None = None
    object_id: str | None = None
    fault: str | None = None  # http_error | lock | reset | timeout | hang | drop_stream: an injected fault decided it
    events: int | None = None  # stream events sent (None: not a stream)
    error_code: str | None = None
    error: str | None = None  # the error message the client got

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RequestLog:
    """A list-like log of `LogEntry` (index, slice, iterate, len) with a couple of filters."""

    def __init__(self, limit: int = MAX_LOG_ENTRIES) -> None:
        self._entries: list[LogEntry] = []
        self._limit = limit
        self.dropped = 0

    def append(self, entry: LogEntry) -> None:
        self._entries.append(entry)
        if len(self._entries) > self._limit:
            cut = len(self._entries) - self._limit // 2
            del self._entries[:cut]
            self.dropped += cut

    def clear(self) -> None:
        self._entries.clear()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[LogEntry]:
        return iter(self._entries)

    @overload
    def __getitem__(self, index: int) -> LogEntry: ...

    @overload
    def __getitem__(self, index: slice) -> list[LogEntry]: ...

    def __getitem__(self, index: int | slice) -> LogEntry | list[LogEntry]:
        return self._entries[index]

    def filter(
        self,
        *,
        method: str | None = None,
        template: str | None = None,
        agent: str | None = None,
        status: int | None = None,
        where: Callable[[LogEntry], bool] | None = None,
    ) -> list[LogEntry]:
        return [
            entry
            for entry in self._entries
            if (method is None or entry.method == method)
            and (template is None or entry.template == template)
            and (agent is None or entry.agent == agent)
            and (status is None or entry.status == status)
            and (where is None or where(entry))
        ]

    def to_json(self, since: int = 0) -> list[dict[str, Any]]:
        return [entry.to_json() for entry in self._entries[since:]]


@dataclass
class Counters:
    """`requests` by (method, path template); `statuses` by HTTP status; `responses` and `runs` by final status
    (plus "created"); `faults` by injected kind."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    responses: Counter[str] = field(default_factory=Counter)
    runs: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)

    def clear(self) -> None:
        for counter in (self.requests, self.statuses, self.responses, self.runs, self.faults):
            counter.clear()

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": [
                {"method": method, "path": path, "count": count} for (method, path), count in self.requests.items()
            ],
            "statuses": {str(status): count for status, count in self.statuses.items()},
            "responses": dict(self.responses),
            "runs": dict(self.runs),
            "faults": dict(self.faults),
        }
