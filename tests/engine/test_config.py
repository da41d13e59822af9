"""The team file: valid files load, invalid ones fail at start naming the key and the problem."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"proxy": {"instructions": "Be helpful."}}


def test_example_team_file_loads():
    cfg = load_config(REPO / "switchboard.example.toml", env={})
    assert cfg.backend == "responses"
    assert [s.name for s in cfg.subs] == ["researcher", "critic", "planner"]
    assert cfg.sub("planner").delegates == ("researcher",)
    assert cfg.api_key is None and cfg.db_path == "switchboard.db"


def test_responses_threads_default_to_chains_and_conversations_are_chosen_in_the_openai_table():
    assert parse_config(MINIMAL, env={}).response_threads == "chains"
    assert parse_config({**MINIMAL, "openai": {"threads": "conversations"}}, env={}).response_threads == (
        "conversations")


def test_environment_overrides_secrets_and_endpoints(tmp_path):
    cfg = parse_config(MINIMAL, env={"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                                     "SWITCHBOARD_DB": str(tmp_path / "x.db")})
    assert cfg.api_key == "sk-test"
    assert cfg.base_url == "http://127.0.0.1:9/v1"
    assert cfg.db_path == str(tmp_path / "x.db")
    assert "sk-test" not in repr(cfg)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({}, "proxy: missing"),
        ({"proxy": {}}, "proxy.instructions"),
        ({"proxy": {"instructions": "x"}, "backend": "threads"}, "backend"),
        ({**MINIMAL, "assistants": [{"name": "Bad Name", "instructions": "x", "description": "d"}]},
         "assistants[0].name"),
        ({**MINIMAL, "assistants": [{"name": "a", "instructions": "x"}]}, "assistants[0].description"),
        ({**MINIMAL, "assistants": [{"name": "a", "instructions": "x", "description": "d", "delegates": ["zz"]}]},
         "assistants[0].delegates"),
        ({**MINIMAL, "limits": {"max_parallel": 0}}, "limits.max_parallel"),
        ({**MINIMAL, "limits": {"max_parallel": 1.5}}, "limits.max_parallel"),
        ({**MINIMAL, "limits": {"retries": 3}}, "limits.retries"),
        ({**MINIMAL, "slack": {"admins": "U1"}}, "slack.admins"),
        ({**MINIMAL, "colour": "blue"}, "colour"),
        ({**MINIMAL, "assistants": [{"name": "a", "instructions": "x", "description": "d",
                                     "tools": [{"type": "function"}]}]}, "assistants[0].tools"),
        ({**MINIMAL, "openai": {"threads": "chain"}}, "openai.threads"),
    ],
)
def test_invalid_config_names_the_key(raw, key):
    with pytest.raises(ConfigError) as err:
        parse_config(raw, env={})
    assert str(err.value).startswith(key)


def test_missing_and_broken_files_are_explained(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[proxy\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken, env={})


def test_duplicate_names_are_refused():
    raw = tomllib.loads('[proxy]\ninstructions="x"\n[[assistants]]\nname="a"\ninstructions="x"\ndescription="d"\n'
                        '[[assistants]]\nname="a"\ninstructions="y"\ndescription="e"\n')
    with pytest.raises(ConfigError, match="used twice"):
        parse_config(raw, env={})


def _sub(**keys: object) -> dict[str, object]:
    return {**MINIMAL, "assistants": [{"name": "critic", "description": "d", "instructions": "x", **keys}]}


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (_sub(backend="ollama"), "assistants[0].backend"),
        (_sub(base_url="localhost:11434"), "assistants[0].base_url"),
        (_sub(api_key_env="sk-live-abc123"), "assistants[0].api_key_env"),
        (_sub(max_context_tokens=100), "assistants[0].max_context_tokens"),
        (_sub(max_context_tokens=True), "assistants[0].max_context_tokens"),
        (_sub(backend="chat", tools=[{"type": "web_search"}]), "assistants[0].tools"),
        ({"proxy": {"instructions": "x", "api_version": 3}}, "proxy.api_version"),
    ],
)
def test_invalid_provider_keys_name_the_key_and_never_echo_a_key(raw, key):
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, env={})
    assert str(caught.value).startswith(key)
    assert "sk-live-abc123" not in str(caught.value)


def test_each_assistant_may_use_its_own_provider():
    raw = _sub(backend="chat", base_url="http://127.0.0.1:11434/v1", api_key_env="LOCAL_KEY", model="llama3",
               max_context_tokens=8192)
    cfg = parse_config(raw, env={"OPENAI_API_KEY": "sk-a", "LOCAL_KEY": "sk-b", "OTHER": "sk-c"})
    proxy, critic = cfg.provider_of(cfg.proxy), cfg.provider_of(cfg.sub("critic"))
    assert (proxy.backend, proxy.base_url, proxy.api_key_env) == ("responses", None, "OPENAI_API_KEY")
    assert (critic.backend, critic.base_url, critic.api_key_env) == ("chat", "http://127.0.0.1:11434/v1", "LOCAL_KEY")
    assert cfg.key_for(proxy) == "sk-a" and cfg.key_for(critic) == "sk-b"
    assert list(cfg.providers()) == [proxy.key, critic.key]
    assert cfg.sub("critic").max_context_tokens == 8192
    assert "sk-b" not in repr(cfg) and "sk-c" not in str(cfg.api_keys)  # only the variables the team names


def test_storage_url_selects_postgres_and_the_environment_overrides_it():
    url = "postgresql://bot:pw@db:5432/sb"
    cfg = parse_config({**MINIMAL, "storage": {"url": url, "lease_seconds": 5, "pool_size": 4}}, env={})
    assert (cfg.db_path, cfg.storage.lease_seconds, cfg.storage.pool_size) == (url, 5.0, 4)
    env = {"SWITCHBOARD_DB": "/tmp/x.db", "SWITCHBOARD_INSTANCE": "web-1"}
    cfg = parse_config({**MINIMAL, "storage": {"url": url}}, env=env)
    assert (cfg.db_path, cfg.storage.instance) == ("/tmp/x.db", "web-1")
    cfg = parse_config({**MINIMAL, "retention": {"inbox_days": 7, "audit_days": 0}}, env={})
    assert (cfg.retention.inbox_days, cfg.retention.audit_days, cfg.retention.runs_days) == (7.0, 0.0, 30.0)


@pytest.mark.parametrize(
    ("storage", "where"),
    [
        ({"storage": {"path": "a.db", "url": "postgresql://h/db"}}, "storage: set either path"),
        ({"storage": {"url": "mysql://h/db"}}, "storage.url: must be a postgresql://"),
        ({"storage": {"lease_seconds": 0}}, "storage.lease_seconds"),
        ({"storage": {"pool_size": 0}}, "storage.pool_size"),
        ({"retention": {"inbox_days": -1}}, "retention.inbox_days"),
        ({"retention": {"forever": 1}}, "retention.forever: unknown key"),
    ],
)
def test_bad_storage_and_retention_settings_name_the_key(storage, where):
    with pytest.raises(ConfigError, match=where):
        parse_config({**MINIMAL, **storage}, env={})


def _handoff_team(**extra: object) -> dict[str, object]:
    return {
        "proxy": {"name": "greeter", "instructions": "x", "handoffs": ["editor"]},
        "assistants": [
            {"name": "editor", "instructions": "x", "description": "Edits.", "handoffs": ["greeter"]},
            {"name": "researcher", "instructions": "x", "description": "Finds."},
        ],
        **extra,
    }


def test_a_handoff_team_loads_with_its_entry_and_the_proxy_asks_only_the_others():
    cfg = parse_config({**_handoff_team(entry="editor"), "limits": {"max_handoffs_per_turn": 2}}, env={})
    assert cfg.entry_agent.name == "editor" and cfg.uses_handoffs
    assert cfg.member("greeter").handoffs == ("editor",)  # type: ignore[union-attr]
    assert [s.name for s in cfg.delegates_of(cfg.proxy)] == ["researcher"]  # not the assistant it hands to
    assert cfg.limits.max_handoffs_per_turn == 2
    plain = parse_config(MINIMAL, env={})
    assert plain.entry_agent is plain.proxy and not plain.uses_handoffs


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"entry": "nobody"}, "entry: must name an assistant of this team, not 'nobody'"),
        ({"entry": 3}, "entry: must name an assistant of this team, not 3"),
        ({"proxy": {"name": "greeter", "instructions": "x", "handoffs": ["edtor"]}},
         "proxy.handoffs: 'edtor' is not an assistant on this team"),
        ({"proxy": {"name": "greeter", "instructions": "x", "handoffs": ["greeter"]}},
         "proxy.handoffs: an assistant cannot hand off to itself"),
        ({"proxy": {"name": "greeter", "instructions": "x", "handoffs": "editor"}},
         "proxy.handoffs: must be a list of assistant names"),
        ({"limits": {"max_handoffs_per_turn": 0}}, "limits.max_handoffs_per_turn: must be positive"),
        ({"assistants": [{"name": "editor", "instructions": "x", "description": "d", "handoffs": ["greeter"],
                          "backend": "chat", "base_url": "http://127.0.0.1:9/v1"}]},
         "proxy.handoffs: 'editor' uses another provider than 'greeter'"),
    ],
)
def test_a_bad_handoff_setting_is_refused_with_a_clear_error(change, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(_handoff_team(**change), env={})
    assert str(caught.value).startswith(message), str(caught.value)
