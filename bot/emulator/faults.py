"""Fault injection: one-shot (or counted) faults and a seeded random mode, shared by every surface.

Faults are consumed where they apply:
- HTTP faults (`http_error`) when a matching request arrives, before its handler runs;
- object faults (`fail`, `cancel`, `stay_queued`, `expire`, `delete_conversation`, `delete_thread`) when a new
  response or run is created for a matching agent;
- `drop_stream` when a matching stream connection starts (create, resume or submit_tool_outputs).
Every fault that fires is recorded in `Faults.injected` so a soak test can report what it met.
"""

from __future__ import annotations

import fnmatch
import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bot.emulator.errors import FAILURE_CODES, APIError, http_fault, invalid_request

if TYPE_CHECKING:
    from bot.emulator.server import Emulator

Api = Literal["responses", "assistants"]
FAULT_KINDS = (
    "http_error",
    "fail",
    "cancel",
    "drop_stream",
    "stay_queued",
    "expire",
    "delete_conversation",
    "delete_thread",
)
# Kinds the random mode can mix; `server_error` etc. are `fail` with that code, `http_429`/`http_500` HTTP faults.
RANDOM_KINDS = (
    "http_429",
    "http_500",
    "server_error",
    "rate_limit_exceeded",
    "invalid_prompt",
    "cancel",
    "drop_stream",
    "stay_queued",
    "expire",
)
DEFAULT_RANDOM_KINDS = ("http_429", "http_500", "server_error", "rate_limit_exceeded", "cancel", "drop_stream")
RANDOM_MAX_EVENTS = 6  # random cancel/drop faults trigger after 1..this many stream events


@dataclass
class Fault:
    """One armed fault. `count` None means it never wears out; `agent`/`api` None match everything."""

    kind: str
    agent: str | None = None
    api: Api | None = None
    method: str | None = None
    path: str | None = None
    status: int = 500
    code: str = "server_error"
    message: str | None = None
    after_seconds: float | None = None
    after_events: int | None = None
    retry_after: float | None = None
    count: int | None = 1
    id: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if self.kind == "fail" and self.code not in FAILURE_CODES:
            raise ValueError(f"unknown failure code {self.code!r}; expected one of {', '.join(FAILURE_CODES)}")
        if self.kind == "drop_stream" and self.after_events is None:
            raise ValueError("drop_stream needs after_events")

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.fired >= self.count

    def targets(self, agent: str | None, api: Api | None) -> bool:
        return (self.agent is None or self.agent == agent) and (self.api is None or self.api == api)

    def matches_request(self, method: str, path: str) -> bool:
        if self.method not in (None, "*") and self.method.upper() != method.upper():
            return False
        return self.path is None or fnmatch.fnmatchcase(path, self.path)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ObjectFaults:
    """The faults that apply to one new response or run."""

    fail: Fault | None = None
    cancel: Fault | None = None
    stay_queued: bool = False
    expire: Fault | None = None
    delete_container: bool = False
    drop_after_events: int | None = None


@dataclass
class Injection:
    kind: str
    fault_id: int | None
    random: bool
    agent: str | None = None
    target: str | None = None
    method: str | None = None
    path: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RandomMode:
    rate: float
    seed: int
    kinds: tuple[str, ...]
    rng: random.Random


class Faults:
    def __init__(self, emulator: Emulator, *, retry_after: float = 1.0) -> None:
        self._emu = emulator
        self.retry_after = retry_after
        self.active: list[Fault] = []
        self.injected: list[Injection] = []
        self.random_mode: RandomMode | None = None
        self._ids = itertools.count(1)

    # --- arming ------------------------------------------------------------------------------------------------

    def add(self, fault: Fault) -> Fault:
        fault.id = next(self._ids)
        self.active.append(fault)
        return fault

    def http_error(
        self,
        status: int = 500,
        *,
        method: str | None = None,
        path: str | None = None,
        count: int | None = 1,
        retry_after: float | None = None,
    ) -> Fault:
        """Answer the next `count` requests matching `method` and `path` (a glob, e.g. ``/v1/responses*``)."""
        return self.add(
            Fault("http_error", method=method, path=path, status=status, count=count, retry_after=retry_after)
        )

    def fail(
        self,
        code: str = "server_error",
        *,
        agent: str | None = None,
        api: Api | None = None,
        message: str | None = None,
        after_seconds: float | None = None,
        count: int | None = 1,
    ) -> Fault:
        """The next response/run (for `agent`) fails with `code` (after `after_seconds` on the emulator clock)."""
        return self.add(
            Fault("fail", agent=agent, api=api, code=code, message=message, after_seconds=after_seconds, count=count)
        )

    def cancel(
        self,
        target_id: str | None = None,
        *,
        agent: str | None = None,
        api: Api | None = None,
        after_seconds: float | None = None,
        after_events: int | None = None,
        count: int | None = 1,
    ) -> Fault | None:
        """Provider-side cancel: now (`target_id`), or of the next response/run after a delay or N events."""
        if target_id is not None:
            self._emu.provider_cancel(target_id)
            self._record(Injection("cancel", None, False, target=target_id))
            return None
        return self.add(
            Fault("cancel", agent=agent, api=api, after_seconds=after_seconds, after_events=after_events, count=count)
        )

    def drop_stream(
        self, after_events: int, *, agent: str | None = None, api: Api | None = None, count: int | None = 1
    ) -> Fault:
        """Close the next matching stream connection after `after_events` events (no terminal event)."""
        return self.add(Fault("drop_stream", agent=agent, api=api, after_events=after_events, count=count))

    def stay_queued(self, *, agent: str | None = None, api: Api | None = None, count: int | None = 1) -> Fault:
        """The next response/run never leaves `queued` (until cancelled)."""
        return self.add(Fault("stay_queued", agent=agent, api=api, count=count))

    def expire(
        self,
        run_id: str | None = None,
        *,
        agent: str | None = None,
        after_seconds: float | None = None,
        count: int | None = 1,
    ) -> Fault | None:
        """Expire a run now (`run_id`), or the next run for `agent` once it waits for tool outputs (or after
        `after_seconds` on the emulator clock)."""
        if run_id is not None:
            self._emu.expire_run(run_id)
            self._record(Injection("expire", None, False, target=run_id))
            return None
        return self.add(Fault("expire", agent=agent, api="assistants", after_seconds=after_seconds, count=count))

    def delete_conversation(
        self, conversation_id: str | None = None, *, agent: str | None = None, count: int | None = 1
    ) -> Fault | None:
        """Delete a conversation behind the client's back: now, or the one the next response for `agent` uses."""
        if conversation_id is not None:
            self._emu.delete_conversation(conversation_id)
            self._record(Injection("delete_conversation", None, False, target=conversation_id))
            return None
        return self.add(Fault("delete_conversation", agent=agent, api="responses", count=count))

    def delete_thread(
        self, thread_id: str | None = None, *, agent: str | None = None, count: int | None = 1
    ) -> Fault | None:
        """Delete a thread behind the client's back: now, or the one the next run for `agent` uses."""
        if thread_id is not None:
            self._emu.delete_thread(thread_id)
            self._record(Injection("delete_thread", None, False, target=thread_id))
            return None
        return self.add(Fault("delete_thread", agent=agent, api="assistants", count=count))

    def random(self, rate: float, seed: int, kinds: Sequence[str] | None = None) -> None:
        """Inject a fault into a fraction `rate` of requests/new objects, chosen reproducibly from `seed`."""
        chosen = tuple(kinds) if kinds else DEFAULT_RANDOM_KINDS
        unknown = [kind for kind in chosen if kind not in RANDOM_KINDS]
        if unknown or not 0 <= rate <= 1:
            raise ValueError(f"rate must be in [0, 1] and kinds among {', '.join(RANDOM_KINDS)}")
        self.random_mode = RandomMode(rate, seed, chosen, random.Random(seed))

    def stop_random(self) -> None:
        self.random_mode = None

    def remove(self, fault_id: int) -> bool:
        before = len(self.active)
        self.active = [fault for fault in self.active if fault.id != fault_id]
        return len(self.active) != before

    def clear(self) -> None:
        """Disarm everything (the record of what was injected stays until `reset`)."""
        self.active.clear()
        self.random_mode = None

    def reset(self) -> None:
        self.clear()
        self.injected.clear()

    # --- consumption (used by the surfaces) --------------------------------------------------------------------

    def _record(self, injection: Injection) -> None:
        self.injected.append(injection)
        self._emu.counters.faults[injection.kind] += 1

    def _fire(self, fault: Fault) -> None:
        fault.fired += 1
        if fault.exhausted:
            self.active = [other for other in self.active if other is not fault]

    def _take(self, kind: str, agent: str | None, api: Api | None) -> Fault | None:
        for fault in self.active:
            if fault.kind == kind and fault.targets(agent, api):
                self._fire(fault)
                return fault
        return None

    def _roll(self, applicable: Iterable[str]) -> str | None:
        mode = self.random_mode
        if mode is None:
            return None
        hit = mode.rng.random() < mode.rate
        options = [kind for kind in mode.kinds if kind in set(applicable)]
        if not hit or not options:
            return None
        return mode.rng.choice(options)

    def check_request(self, method: str, path: str) -> APIError | None:
        """An injected HTTP error for this request, if any."""
        for fault in self.active:
            if fault.kind == "http_error" and fault.matches_request(method, path):
                self._fire(fault)
                self._record(
                    Injection("http_error", fault.id, False, method=method, path=path, detail={"status": fault.status})
                )
                return http_fault(fault.status, self._retry_after(fault))
        kind = self._roll(("http_429", "http_500"))
        if kind is None:
            return None
        status = 429 if kind == "http_429" else 500
        self._record(Injection("http_error", None, True, method=method, path=path, detail={"status": status}))
        return http_fault(status, self.retry_after)

    def _retry_after(self, fault: Fault) -> float:
        return fault.retry_after if fault.retry_after is not None else self.retry_after

    def for_new_object(self, *, agent: str, api: Api, target: str, stream: bool) -> ObjectFaults:
        """Consume the faults that apply to a new response/run and say what to do."""
        result = ObjectFaults()
        fail = self._take("fail", agent, api)
        if fail is not None:
            result.fail = fail
            self._record(Injection("fail", fail.id, False, agent, target, detail={"code": fail.code}))
        cancel = self._take("cancel", agent, api)
        if cancel is not None:
            result.cancel = cancel
            detail = {"after_seconds": cancel.after_seconds, "after_events": cancel.after_events}
            self._record(Injection("cancel", cancel.id, False, agent, target, detail=detail))
        if self._take("stay_queued", agent, api) is not None:
            result.stay_queued = True
            self._record(Injection("stay_queued", None, False, agent, target))
        if api == "assistants":
            expire = self._take("expire", agent, api)
            if expire is not None:
                result.expire = expire
                self._record(Injection("expire", expire.id, False, agent, target))
        container_kind = "delete_conversation" if api == "responses" else "delete_thread"
        if self._take(container_kind, agent, api) is not None:
            result.delete_container = True
            self._record(Injection(container_kind, None, False, agent, target))
        self._random_object_fault(result, agent=agent, api=api, target=target, stream=stream)
        return result

    def _random_object_fault(self, result: ObjectFaults, *, agent: str, api: Api, target: str, stream: bool) -> None:
        applicable = ["server_error", "rate_limit_exceeded", "invalid_prompt", "cancel", "stay_queued"]
        if stream:
            applicable.append("drop_stream")
        if api == "assistants":
            applicable.append("expire")
        kind = self._roll(applicable)
        if kind is None:
            return
        mode = self.random_mode
        assert mode is not None
        events = mode.rng.randint(1, RANDOM_MAX_EVENTS)
        if result != ObjectFaults():  # an armed fault already hit this object: the random one stands down
            return
        detail: dict[str, Any] = {}
        if kind in FAILURE_CODES:
            result.fail = Fault("fail", code=kind)
            detail = {"code": kind}
        elif kind == "cancel":
            result.cancel = Fault("cancel", after_events=events)
            detail = {"after_events": events}
        elif kind == "drop_stream":
            result.drop_after_events = events
            detail = {"after_events": events}
        elif kind == "stay_queued":
            result.stay_queued = True
        elif kind == "expire":
            result.expire = Fault("expire", api="assistants")
        self._record(Injection(kind if kind not in FAILURE_CODES else "fail", None, True, agent, target, detail=detail))

    def take_drop(self, *, agent: str | None, api: Api, target: str) -> int | None:
        """The event count after which the stream starting now must be dropped, if a drop fault applies."""
        fault = self._take("drop_stream", agent, api)
        if fault is None:
            return None
        self._record(
            Injection("drop_stream", fault.id, False, agent, target, detail={"after_events": fault.after_events})
        )
        return fault.after_events

    # --- HTTP control form -------------------------------------------------------------------------------------

    def add_from_json(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Arm (or apply now) a fault described as JSON, as the control endpoint receives it."""
        data = dict(data)
        kind = data.pop("kind", None)
        target = data.pop("target_id", None) or data.pop("id", None)
        try:
            if target is not None:
                immediate = {
                    "cancel": self.cancel,
                    "expire": self.expire,
                    "delete_conversation": self.delete_conversation,
                    "delete_thread": self.delete_thread,
                }
                if kind not in immediate:
                    raise invalid_request(f"'target_id' is not supported for fault kind {kind!r}.", param="kind")
                immediate[kind](target)
                return {"applied": kind, "target_id": target}
            fault = self.add(Fault(kind=str(kind), **data))
        except TypeError as exc:
            raise invalid_request(f"Invalid fault: {exc}.") from None
        except ValueError as exc:
            raise invalid_request(str(exc), param="kind") from None
        return fault.to_json()

    def to_json(self) -> dict[str, Any]:
        mode = self.random_mode
        return {
            "active": [fault.to_json() for fault in self.active],
            "random": None if mode is None else {"rate": mode.rate, "seed": mode.seed, "kinds": list(mode.kinds)},
            "injected": [injection.to_json() for injection in self.injected],
        }
