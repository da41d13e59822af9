"""Hostile team files: `parse_config` and `load_config` either return a sane TeamConfig or raise ConfigError with
a message naming the key; nothing else escapes (a traceback at start is not "a clear error")."""

from __future__ import annotations

import math
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.config import NAME_PATTERN, ConfigError, Limits, TeamConfig, load_config, parse_config
from tests.reliability.conftest import fuzz_settings
from tests.reliability.hostile import hostile_text

FUZZ = fuzz_settings()
VALID: dict[str, Any] = {
    "backend": "responses",
    "proxy": {"instructions": "You are the front desk.", "model": "gpt-5-mini"},
    "assistants": [
        {"name": "researcher", "description": "Finds facts.", "instructions": "Research.", "delegates": ["critic"]},
        {"name": "critic", "description": "Finds flaws.", "instructions": "Criticise.",
         "tools": [{"type": "web_search"}]},
    ],
    "limits": {"max_parallel": 4, "retry_budget": 6, "backoff_base": 0.5, "turn_timeout": 1800},
    "openai": {"base_url": "http://127.0.0.1:8765/v1"},
    "storage": {"path": "switchboard.db"},
    "slack": {"enabled": True, "admins": ["U0ADMIN"]},
    "discord": {"enabled": False},
}
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10**18, max_value=10**40),
                    st.floats(), st.sampled_from([math.inf, -math.inf, math.nan, -0.0, 1e308]), hostile_text())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.one_of(st.sampled_from(["name", "type", "instructions", "description", "model", "tools", "delegates"]),
              st.text(max_size=10)), inner, max_size=4), max_leaves=8)


def check(cfg: TeamConfig) -> None:
    """What an accepted team file guarantees the engine."""
    for agent in (cfg.proxy, *cfg.subs):
        assert NAME_PATTERN.match(agent.name) and agent.instructions.strip() and agent.model.strip()
        assert all(isinstance(t.get("type"), str) and t["type"] and t["type"] != "function" for t in agent.tools)
    for key in Limits.__dataclass_fields__:
        value = getattr(cfg.limits, key)
        assert isinstance(value, int | float) and math.isfinite(value) and value >= 0, (key, value)


def mutate(path: list[Any], value: Any) -> dict[str, Any]:
    import copy

    raw = copy.deepcopy(VALID)
    node: Any = raw
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return raw


PATHS = [["backend"], ["proxy"], ["proxy", "name"], ["proxy", "instructions"], ["proxy", "model"],
         ["proxy", "tools"], ["proxy", "delegates"], ["assistants"], ["assistants", 0], ["assistants", 0, "name"],
         ["assistants", 0, "description"], ["assistants", 0, "delegates"], ["assistants", 1, "tools"],
         ["assistants", 1, "tools", 0], ["assistants", 1, "tools", 0, "type"], ["limits"],
         *[["limits", k] for k in Limits.__dataclass_fields__], ["openai", "base_url"], ["storage", "path"],
         ["slack", "enabled"], ["slack", "admins"], ["discord"], ["unknown_key"]]


@FUZZ
@given(st.sampled_from(PATHS), values)
def test_a_team_file_with_any_hostile_value_is_accepted_sanely_or_refused_by_key(path, value) -> None:
    try:
        cfg = parse_config(mutate(path, value), env={})
    except ConfigError as exc:
        assert ":" in str(exc)  # "key.path: what is wrong"
        return
    check(cfg)


@FUZZ
@given(st.dictionaries(st.one_of(st.sampled_from(sorted(VALID)), st.text(max_size=8)), values, max_size=6))
def test_any_structure_is_accepted_sanely_or_refused(raw) -> None:
    try:
        check(parse_config(raw, env={}))
    except ConfigError:
        pass


@FUZZ
@given(st.one_of(st.binary(max_size=400), hostile_text().map(lambda t: t.encode("utf-8", "surrogatepass")),
                 st.sampled_from([b"[proxy]\ninstructions = 'x'\n[limits]\nbackoff_base = nan\n",
                                  b"[proxy]\ninstructions = 'x'\n[limits]\nturn_timeout = inf\n",
                                  b"[proxy]\ninstructions = 'x'\ntools = [{type = 1}]\n",
                                  b"\xef\xbb\xbf[proxy]\ninstructions = 'x'\n"])))
def test_any_file_content_loads_sanely_or_is_refused(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "switchboard.toml"
        path.write_bytes(content)
        try:
            check(load_config(path, env={}))
        except ConfigError as exc:
            assert str(path) in str(exc) or ":" in str(exc)


def test_a_path_that_is_not_a_readable_file_is_refused_plainly(tmp_path: Path) -> None:
    for path in (tmp_path, tmp_path / "missing.toml"):
        with pytest.raises(ConfigError, match=str(path)):
            load_config(path, env={})


def test_the_valid_reference_loads() -> None:
    check(parse_config(VALID, env={}))
    example = Path(__file__).resolve().parents[2] / "switchboard.example.toml"
    check(parse_config(tomllib.loads(example.read_text()), env={}))
