"""The team file (TOML): who is on the team, which backend runs them, and the engine's limits.

`load_config(path)` validates everything at start and raises `ConfigError` naming the key and the problem.
Secrets and endpoints come from the environment with the ecosystem's usual names (see `ENV_*`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bot.context import BRIEF, ContextMode, ContextValueError, parse_context
from bot.errors import SwitchboardError
from storage.base import RetentionPolicy

ENV_API_KEY = "OPENAI_API_KEY"
ENV_BASE_URL = "OPENAI_BASE_URL"
ENV_DB = "SWITCHBOARD_DB"
ENV_CONFIG = "SWITCHBOARD_CONFIG"
ENV_OPS_PORT = "SWITCHBOARD_OPS_PORT"
ENV_INSTANCE = "SWITCHBOARD_INSTANCE"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
DEFAULT_CONFIG_PATH = "switchboard.toml"
DEFAULT_DB_PATH = "switchboard.db"
DEFAULT_MODEL = "gpt-5-mini"
BACKENDS = ("responses", "assistants", "chat")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
TOOL_PREFIX = "ask_"
MAX_INSTRUCTIONS_CHARS = 256_000

Backend = Literal["responses", "assistants", "chat"]
#: What a new thread is on the `responses` backend: a chain of stored responses linked by `previous_response_id`
#: (the default: nothing to create, so a first turn with k delegations sends k + 1 fewer requests; a create whose
#: answer was lost is sent again) or a Conversation (created before its first run, and read back to adopt a lost
#: create instead of repeating its work)
ResponseThreads = Literal["conversations", "chains"]
RESPONSE_THREADS = ("conversations", "chains")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MIN_CONTEXT_TOKENS = 1024  # below this a system prompt and one exchange hardly fit: surely a typo


class ConfigError(SwitchboardError, ValueError):
    """The team file is invalid. The message names the key and what is wrong with it."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    name: str
    instructions: str
    model: str
    description: str = ""
    delegates: tuple[str, ...] = ()  # sub-assistants this one may ask (the proxy asks every sub by default)
    tools: tuple[Mapping[str, Any], ...] = ()  # provider tools passed through as-is (e.g. {type = "web_search"})
    # Its own provider, each defaulting to the team's: a team may mix providers (see `TeamConfig.provider_of`).
    backend: Backend | None = None
    base_url: str | None = None
    api_key_env: str | None = None  # the environment variable holding its key (default OPENAI_API_KEY)
    api_version: str | None = None  # Azure OpenAI's `api-version` query parameter, for deployment URLs
    max_context_tokens: int | None = None  # `chat` backend: fold the oldest turns into a summary beyond this
    max_output_tokens: int | None = None  # the provider's cap on each of this assistant's runs (None: its default)
    max_delegations: int | None = None  # `ask_*` calls this assistant may make in one turn (None: no cap)
    handoffs: tuple[str, ...] = ()  # team members it may hand the main conversation to (`transfer_to_<name>`)
    context: ContextMode = BRIEF  # what it sees of its caller's conversation when asked (`bot.context`)

    @property
    def tool_name(self) -> str:
        return TOOL_PREFIX + self.name


@dataclass(frozen=True, slots=True)
class Provider:
    """Where and how an assistant's runs go: the backend kind, the endpoint and the key's environment variable.
    Assistants with equal providers share one client (and, unless `chat`, one backend)."""

    backend: Backend
    base_url: str | None
    api_key_env: str
    api_version: str | None = None

    @property
    def key(self) -> str:
        return f"{self.backend}|{self.base_url or 'api.openai.com'}|{self.api_key_env}|{self.api_version or ''}"

    @property
    def where(self) -> str:
        return self.base_url or "api.openai.com"


@dataclass(frozen=True, slots=True)
class Limits:
    max_parallel: int = 4  # concurrent sub-assistant calls per step
    max_depth: int = 1  # 1: only the proxy delegates; 2: its subs may delegate once more; ...
    retry_budget: int = 6  # recoveries (retries, recreations) allowed per run scope before giving up
    run_timeout: float = 900.0  # seconds one sub-assistant invocation may take, recoveries and delegations included
    turn_timeout: float = 1800.0  # seconds a whole turn may take before the user is told it was stopped
    queued_timeout: float = 120.0  # seconds a run may sit in `queued` before we cancel and recreate it
    lock_wait: float = 60.0  # seconds to wait for a locked thread before giving up
    backoff_base: float = 0.5  # first retry delay; doubles per attempt
    backoff_max: float = 30.0
    poll_interval: float = 1.0  # polling fallback when a stream cannot be used
    stream_idle_timeout: float = 120.0  # no stream event for this long: treat the stream as dropped
    max_handoffs_per_turn: int = 3  # `transfer_to_*` calls that may switch the active assistant in one turn


@dataclass(frozen=True, slots=True)
class PlatformConfig:
    """One platform's table. Ids are the platform's own (Slack `U…`/`C…`/`S…` user group, Discord snowflakes);
    an empty `allowed_*` list allows everyone, a `blocked_*` entry always refuses (admins excepted)."""

    enabled: bool = False
    admins: tuple[str, ...] = ()
    allowed_channels: tuple[str, ...] = ()
    blocked_channels: tuple[str, ...] = ()
    allowed_users: tuple[str, ...] = ()
    blocked_users: tuple[str, ...] = ()
    allowed_roles: tuple[str, ...] = ()  # Discord role ids; Slack user group ids
    blocked_roles: tuple[str, ...] = ()
    dms: bool = True


ACCESS_LISTS = ("allowed_channels", "blocked_channels", "allowed_users", "blocked_users", "allowed_roles",
                "blocked_roles")


@dataclass(frozen=True, slots=True)
class Budgets:
    """`[budgets]`: 0 means no limit. Message rates are per clock minute, token and cost budgets per
    UTC day; cost needs `[prices]` and is in the price table's currency."""

    user_messages_per_minute: int = 0
    conversation_messages_per_minute: int = 0
    user_tokens_per_day: int = 0
    channel_tokens_per_day: int = 0
    bot_tokens_per_day: int = 0
    user_cost_per_day: float = 0.0
    channel_cost_per_day: float = 0.0
    bot_cost_per_day: float = 0.0


@dataclass(frozen=True, slots=True)
class Price:
    """What a model costs per million input and output tokens (`[prices."model"] input = 0.25, output = 2.0`)."""

    input: float
    output: float


@dataclass(frozen=True, slots=True)
class OpsConfig:
    port: int | None = None  # None: no ops endpoint
    host: str = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Options of the PostgreSQL store (ignored by SQLite): pool size, and the lease of each conversation when
    several instances share the database."""

    pool_size: int = 30
    lease_seconds: float = 15.0  # a dead instance's conversations are taken over within this (plus a heartbeat)
    instance: str = ""  # this instance's id in leases; empty: host name, process id and a random suffix
    prune_every_hours: float = 24.0  # the running bot prunes by `[retention]` this often; 0: only `switchboard prune`


@dataclass(frozen=True, slots=True)
class TeamConfig:
    proxy: AgentConfig
    subs: tuple[AgentConfig, ...]
    backend: Backend = "responses"
    limits: Limits = Limits()
    db_path: str = DEFAULT_DB_PATH
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    platforms: Mapping[str, PlatformConfig] = field(default_factory=dict)
    ops: OpsConfig = OpsConfig()
    api_keys: Mapping[str, str] = field(default_factory=dict, repr=False)  # api_key_env name -> key, per agent
    budgets: Budgets = Budgets()
    prices: Mapping[str, Price] = field(default_factory=dict)
    source: str | None = None  # the team file it was read from, for `reload`
    storage: StorageConfig = StorageConfig()
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    entry: str = ""  # the assistant a conversation starts with (handoffs); "" means the proxy
    response_threads: ResponseThreads = "chains"  # `[openai] threads`: see `ResponseThreads`

    @property
    def entry_agent(self) -> AgentConfig:
        return self.member(self.entry) or self.proxy

    def member(self, name: str) -> AgentConfig | None:
        return next((a for a in self.members if a.name == name), None)

    @property
    def uses_handoffs(self) -> bool:
        return any(a.handoffs for a in self.members) or self.entry_agent is not self.proxy

    def sub(self, name: str) -> AgentConfig | None:
        return next((s for s in self.subs if s.name == name), None)

    @property
    def members(self) -> tuple[AgentConfig, ...]:
        return (self.proxy, *self.subs)

    def provider_of(self, agent: AgentConfig) -> Provider:
        """The agent's own provider settings, each falling back to the team's (backend, [openai] base_url,
        OPENAI_API_KEY)."""
        return Provider(
            backend=agent.backend or self.backend,
            base_url=agent.base_url or self.base_url,
            api_key_env=agent.api_key_env or ENV_API_KEY,
            api_version=agent.api_version,
        )

    def providers(self) -> dict[str, Provider]:
        """Every distinct provider of the team, by key, the proxy's first."""
        return {p.key: p for p in (self.provider_of(a) for a in self.members)}

    def key_for(self, provider: Provider) -> str | None:
        """The API key of a provider, from its environment variable (read when the team file was loaded)."""
        if provider.api_key_env == ENV_API_KEY:
            return self.api_key
        return self.api_keys.get(provider.api_key_env)

    def delegates_of(self, agent: AgentConfig) -> list[AgentConfig]:
        if agent.name == self.proxy.name and not agent.delegates:
            # by default the proxy asks every sub-assistant except those the conversation is handed to
            targets = {name for member in self.members for name in member.handoffs}
            return [s for s in self.subs if s.name not in targets]
        return [s for s in self.subs if s.name in agent.delegates]

    def admins(self, platform: str) -> tuple[str, ...]:
        cfg = self.platforms.get(platform)
        return cfg.admins if cfg else ()


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> TeamConfig:
    """Read and validate the team file; `env` defaults to `os.environ`."""
    env = os.environ if env is None else env
    path = Path(path or env.get(ENV_CONFIG) or DEFAULT_CONFIG_PATH)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"team file {path} not found: run `switchboard init` to write one here, or set {ENV_CONFIG}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except OSError as exc:  # a directory, no permission...
        raise ConfigError(f"{path}: cannot read the team file ({exc.strerror or exc})") from None
    return dataclasses.replace(parse_config(raw, env=env), source=str(path))


def parse_config(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> TeamConfig:
    env = os.environ if env is None else env
    _only_keys(raw, "", {"backend", "proxy", "assistants", "limits", "openai", "storage", "slack", "discord", "ops",
                         "budgets", "prices", "entry", "retention"})
    backend = raw.get("backend", "responses")
    if backend not in BACKENDS:
        raise ConfigError(f"backend: must be one of {', '.join(BACKENDS)}, not {backend!r}")

    proxy = _agent(_table(raw, "proxy", required=True), "proxy")
    subs_raw = raw.get("assistants", [])
    if not isinstance(subs_raw, list):
        raise ConfigError("assistants: must be an array of tables ([[assistants]])")
    subs = tuple(_agent(s, f"assistants[{i}]", sub=True) for i, s in enumerate(subs_raw))
    names = [proxy.name, *(s.name for s in subs)]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"assistants[{i - 1}].name: {name!r} is used twice")
    for i, sub in enumerate(subs):
        for d in sub.delegates:
            if d not in names[1:]:
                raise ConfigError(f"assistants[{i}].delegates: {d!r} is not a sub-assistant on this team")
            if d == sub.name:
                raise ConfigError(f"assistants[{i}].delegates: an assistant cannot delegate to itself")
    for d in proxy.delegates:
        if d not in names[1:]:
            raise ConfigError(f"proxy.delegates: {d!r} is not a sub-assistant on this team")

    limits = _limits(_table(raw, "limits"))
    openai_table = _table(raw, "openai")
    _only_keys(openai_table, "openai", {"base_url", "threads"})
    response_threads = openai_table.get("threads", "chains")
    if response_threads not in RESPONSE_THREADS:
        raise ConfigError(f"openai.threads: must be one of {', '.join(RESPONSE_THREADS)}, not {response_threads!r}")
    storage_table = _table(raw, "storage")
    _only_keys(storage_table, "storage", {"path", "url", "pool_size", "lease_seconds", "prune_every_hours"})
    platforms = {name: _platform(_table(raw, name), name) for name in ("slack", "discord")}
    ops = _ops(_table(raw, "ops"), env)
    budgets = _budgets(_table(raw, "budgets"))
    prices = _prices(_table(raw, "prices"))
    if any(getattr(budgets, k) for k in ("user_cost_per_day", "channel_cost_per_day", "bot_cost_per_day")):
        for agent in (proxy, *subs):
            if agent.model not in prices:
                raise ConfigError(f"prices: a cost budget is set but model {agent.model!r} has no price")

    base_url = env.get(ENV_BASE_URL) or _opt_str(openai_table, "base_url", "openai")
    if base_url and not re.match(r"^https?://", base_url):
        raise ConfigError(f"openai.base_url / {ENV_BASE_URL}: must start with http:// or https://")
    for where, agent in (("proxy", proxy), *((f"assistants[{i}]", s) for i, s in enumerate(subs))):
        if (agent.backend or backend) == "chat" and agent.tools:
            raise ConfigError(f"{where}.tools: the chat backend (Chat Completions) takes no provider tools; "
                              "remove them or give this assistant another backend")
    key_envs = {a.api_key_env for a in (proxy, *subs) if a.api_key_env}
    team = TeamConfig(
        proxy=proxy,
        subs=subs,
        backend=backend,
        limits=limits,
        db_path=_db_location(storage_table, env),
        base_url=base_url,
        api_key=env.get(ENV_API_KEY) or None,
        platforms=platforms,
        ops=ops,
        api_keys={name: env[name] for name in sorted(key_envs) if env.get(name)},
        budgets=budgets,
        prices=prices,
        storage=_storage(storage_table, env),
        retention=_retention(_table(raw, "retention")),
        response_threads=response_threads,
    )
    return _with_handoffs(team, raw.get("entry"))


def _with_handoffs(team: TeamConfig, entry: Any) -> TeamConfig:
    """Check `entry` and every `handoffs` list: members of the team, on the entry's provider (they share one
    thread), never the assistant itself."""
    if entry is not None and (not isinstance(entry, str) or team.member(entry) is None):
        raise ConfigError(f"entry: must name an assistant of this team, not {entry!r}")
    team = dataclasses.replace(team, entry=entry or "")
    where_of = {team.proxy.name: "proxy", **{s.name: f"assistants[{i}]" for i, s in enumerate(team.subs)}}
    main_provider = team.provider_of(team.entry_agent)
    for agent in team.members:
        for name in agent.handoffs:
            target = team.member(name)
            if target is None:
                raise ConfigError(f"{where_of[agent.name]}.handoffs: {name!r} is not an assistant on this team")
            if name == agent.name:
                raise ConfigError(f"{where_of[agent.name]}.handoffs: an assistant cannot hand off to itself")
            for member in (agent, target):
                if team.provider_of(member) != main_provider:
                    raise ConfigError(f"{where_of[agent.name]}.handoffs: {member.name!r} uses another provider than "
                                      f"{team.entry_agent.name!r}; assistants sharing the main thread need one")
    return team


def _db_location(table: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """SWITCHBOARD_DB, else `[storage] url` (PostgreSQL), else `[storage] path` (SQLite), else the default file."""
    path, url = _opt_str(table, "path", "storage"), _opt_str(table, "url", "storage")
    if path and url:
        raise ConfigError("storage: set either path (SQLite) or url (PostgreSQL), not both")
    if url and not url.startswith(POSTGRES_SCHEMES):
        raise ConfigError("storage.url: must be a postgresql:// URL (use storage.path for a SQLite file)")
    return env.get(ENV_DB) or url or path or DEFAULT_DB_PATH


def _positive(table: Mapping[str, Any], key: str, where: str, default: float, unit: str, *,
              zero: bool = False) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0 or (
            value == 0 and not zero):
        kind = "zero or a positive" if zero else "a positive"
        raise ConfigError(f"{where}.{key}: must be {kind} number of {unit}, not {value!r}")
    return float(value)


def _storage(table: Mapping[str, Any], env: Mapping[str, str]) -> StorageConfig:
    defaults = StorageConfig()
    pool_size = table.get("pool_size", defaults.pool_size)
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or not 1 <= pool_size <= 1000:
        raise ConfigError("storage.pool_size: must be a whole number from 1 to 1000")
    return StorageConfig(
        pool_size=pool_size,
        lease_seconds=_positive(table, "lease_seconds", "storage", defaults.lease_seconds, "seconds"),
        instance=env.get(ENV_INSTANCE, ""),
        prune_every_hours=_positive(table, "prune_every_hours", "storage", defaults.prune_every_hours,
                                    "hours", zero=True),
    )


def _retention(table: Mapping[str, Any]) -> RetentionPolicy:
    """`[retention]`: days each kind of finished record is kept; 0 keeps it forever."""
    defaults = RetentionPolicy()
    keys = ("inbox_days", "runs_days", "transcript_days", "audit_days", "usage_days")
    _only_keys(table, "retention", set(keys))
    return RetentionPolicy(**{key: _positive(table, key, "retention", getattr(defaults, key), "days", zero=True)
                              for key in keys})


def _table(raw: Mapping[str, Any], key: str, required: bool = False) -> Mapping[str, Any]:
    value = raw.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{key}: missing; the team file needs a [{key}] table")
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: must be a table ([{key}])")
    return value


def _only_keys(table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            prefix = f"{where}." if where else ""
            raise ConfigError(f"{prefix}{key}: unknown key (allowed: {', '.join(sorted(allowed))})")


def _opt_str(table: Mapping[str, Any], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}.{key}: must be a non-empty string")
    return value


def _agent(table: Any, where: str, sub: bool = False) -> AgentConfig:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table")
    _only_keys(table, where, {"name", "description", "instructions", "model", "delegates", "tools",
                              "max_output_tokens", "max_delegations", "context", "handoffs", *PROVIDER_KEYS})
    name = table.get("name", None if sub else "proxy")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(
            f"{where}.name: must be 1-40 characters of lowercase letters, digits and _, starting with a letter"
            f" (it becomes the tool name {TOOL_PREFIX}<name>), not {name!r}"
        )
    instructions = table.get("instructions")
    if not isinstance(instructions, str) or not instructions.strip():
        raise ConfigError(f"{where}.instructions: required, a non-empty string")
    if len(instructions) > MAX_INSTRUCTIONS_CHARS:
        raise ConfigError(f"{where}.instructions: longer than {MAX_INSTRUCTIONS_CHARS} characters")
    description = table.get("description", "")
    if not isinstance(description, str) or (sub and not description.strip()):
        raise ConfigError(f"{where}.description: required for a sub-assistant: the proxy reads it to decide")
    model = table.get("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"{where}.model: must be a non-empty string")
    delegates = table.get("delegates", [])
    if not isinstance(delegates, list) or not all(isinstance(d, str) for d in delegates):
        raise ConfigError(f"{where}.delegates: must be a list of sub-assistant names")
    tools = table.get("tools", [])
    if not isinstance(tools, list) or not all(
        isinstance(t, Mapping) and isinstance(t.get("type"), str) and t["type"].strip() for t in tools
    ):
        raise ConfigError(f"{where}.tools: must be a list of tables with a `type` (e.g. {{type = \"web_search\"}})")
    handoffs = table.get("handoffs", [])
    if not isinstance(handoffs, list) or not all(isinstance(h, str) for h in handoffs):
        raise ConfigError(f"{where}.handoffs: must be a list of assistant names")
    for t in tools:
        if t["type"] == "function":
            raise ConfigError(f"{where}.tools: function tools are reserved for delegation; use `delegates`")
    return AgentConfig(
        name=name,
        instructions=instructions,
        model=model,
        description=description,
        delegates=tuple(delegates),
        tools=tuple(dict(t) for t in tools),
        max_output_tokens=_opt_count(table, "max_output_tokens", where, minimum=16),
        max_delegations=_opt_count(table, "max_delegations", where, minimum=0),
        handoffs=tuple(handoffs),
        context=_context(table, where, sub),
        **_provider_keys(table, where),
    )


def _context(table: Mapping[str, Any], where: str, sub: bool) -> ContextMode:
    if "context" not in table:
        return BRIEF
    if not sub:
        raise ConfigError(f"{where}.context: only a sub-assistant has one (what it sees when it is asked)")
    try:
        return parse_context(table["context"])
    except ContextValueError as exc:
        raise ConfigError(f"{where}.context: {exc}") from None


PROVIDER_KEYS = ("backend", "base_url", "api_key_env", "api_version", "max_context_tokens")


def _provider_keys(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """An assistant's own provider settings (see `AgentConfig`), validated."""
    found: dict[str, Any] = {}
    backend = table.get("backend")
    if backend is not None:
        if backend not in BACKENDS:
            raise ConfigError(f"{where}.backend: must be one of {', '.join(BACKENDS)}, not {backend!r}")
        found["backend"] = backend
    base_url = _opt_str(table, "base_url", where)
    if base_url is not None:
        if not re.match(r"^https?://", base_url):
            raise ConfigError(f"{where}.base_url: must start with http:// or https://")
        found["base_url"] = base_url
    env_name = _opt_str(table, "api_key_env", where)
    if env_name is not None:
        if not ENV_NAME_PATTERN.match(env_name):
            raise ConfigError(f"{where}.api_key_env: the name of an environment variable (e.g. AZURE_OPENAI_API_KEY), "
                              "not the key itself")
        found["api_key_env"] = env_name
    api_version = _opt_str(table, "api_version", where)
    if api_version is not None:
        found["api_version"] = api_version
    limit = table.get("max_context_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < MIN_CONTEXT_TOKENS:
            raise ConfigError(f"{where}.max_context_tokens: a whole number of tokens, at least {MIN_CONTEXT_TOKENS}")
        found["max_context_tokens"] = limit
    return found


def _opt_count(table: Mapping[str, Any], key: str, where: str, minimum: int) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}.{key}: must be a whole number of at least {minimum}")
    return value


def _limits(table: Mapping[str, Any]) -> Limits:
    defaults = Limits()
    _only_keys(table, "limits", set(Limits.__dataclass_fields__))
    values: dict[str, Any] = {}
    for key, default in ((k, getattr(defaults, k)) for k in Limits.__dataclass_fields__):
        if key not in table:
            continue
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"limits.{key}: must be a number")
        if not math.isfinite(value):  # TOML has inf and nan; a nan delay or timeout breaks every turn at runtime
            raise ConfigError(f"limits.{key}: must be a finite number, not {value}")
        if isinstance(default, int) and not isinstance(value, int):
            raise ConfigError(f"limits.{key}: must be a whole number")
        if (value <= 0 and key != "retry_budget") or value < 0:
            raise ConfigError(f"limits.{key}: must be positive")
        values[key] = value
    if values.get("max_depth", 1) > 5:
        raise ConfigError("limits.max_depth: at most 5")
    return Limits(**values)


def _platform(table: Mapping[str, Any], name: str) -> PlatformConfig:
    _only_keys(table, name, {"enabled", "admins", "dms", *ACCESS_LISTS})
    flags: dict[str, Any] = {}
    for key, default in (("enabled", False), ("dms", True)):
        flags[key] = table.get(key, default)
        if not isinstance(flags[key], bool):
            raise ConfigError(f"{name}.{key}: must be true or false")
    lists: dict[str, Any] = {}
    for key in ("admins", *ACCESS_LISTS):
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(a, str) and a.strip() for a in value):
            raise ConfigError(f"{name}.{key}: must be a list of ids (strings)")
        lists[key] = tuple(v.strip() for v in value)
    return PlatformConfig(**flags, **lists)


def _budgets(table: Mapping[str, Any]) -> Budgets:
    _only_keys(table, "budgets", set(Budgets.__dataclass_fields__))
    values: dict[str, Any] = {}
    for key, value in table.items():
        whole = isinstance(getattr(Budgets(), key), int)
        if isinstance(value, bool) or not isinstance(value, int | float) or (whole and not isinstance(value, int)):
            raise ConfigError(f"budgets.{key}: must be a {'whole ' if whole else ''}number (0: no limit)")
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"budgets.{key}: must be 0 (no limit) or more")
        values[key] = value
    return Budgets(**values)


def _prices(table: Mapping[str, Any]) -> dict[str, Price]:
    prices = {}
    for model, entry in table.items():
        where = f"prices.{model}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: must be a table such as {{ input = 0.25, output = 2.0 }} (per 1M tokens)")
        _only_keys(entry, where, {"input", "output"})
        numbers = []
        for key in ("input", "output"):
            value = entry.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{where}.{key}: required, a price per million tokens (0 or more)")
            numbers.append(float(value))
        prices[model] = Price(*numbers)
    return prices


def _ops(table: Mapping[str, Any], env: Mapping[str, str]) -> OpsConfig:
    _only_keys(table, "ops", {"port", "host"})
    port: Any = table.get("port")
    if env.get(ENV_OPS_PORT):
        try:
            port = int(env[ENV_OPS_PORT])
        except ValueError:
            raise ConfigError(f"{ENV_OPS_PORT}: must be a port number, not {env[ENV_OPS_PORT]!r}") from None
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
        raise ConfigError("ops.port: must be a port number (0-65535)")
    host = table.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise ConfigError("ops.host: must be an address such as 127.0.0.1")
    return OpsConfig(port=port, host=host)
