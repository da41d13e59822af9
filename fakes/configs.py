"""Settings that point the real code at the fakes: a team with the shipped recovery logic on short clocks, and Slack
settings for a `FakeSlack`. Values only: building one starts nothing.
"""

from __future__ import annotations

from adapters.slack import SlackSettings
from bot.config import AgentConfig, Limits, TeamConfig
from fakes.slack_api import FakeSlack

SUBS = ("researcher", "critic", "planner")


CHAT_IDLE_TIMEOUT = 1.5  # a chat server's silent stream is only noticed by this clock: keep the soak short


def soak_limits(retry_budget: int = 6, stream_idle_timeout: float = 5.0) -> Limits:
    """The shipped recovery logic with short clocks: the same decisions, taken in milliseconds."""
    return Limits(
        max_parallel=4,
        max_depth=1,
        retry_budget=retry_budget,
        run_timeout=120,
        turn_timeout=240,
        queued_timeout=0.5,
        lock_wait=2.0,
        backoff_base=0.01,
        backoff_max=0.05,
        poll_interval=0.02,
        stream_idle_timeout=stream_idle_timeout,
    )


def soak_team(base_url: str, db_path: str, backend: str = "responses", retry_budget: int = 6) -> TeamConfig:
    """A proxy and the three `SUBS` on the emulator's model, against the provider at `base_url`."""
    return TeamConfig(
        proxy=AgentConfig(name="proxy", instructions="You are the front desk.", model="emu-1"),
        subs=tuple(
            AgentConfig(name=n, instructions=f"You are the {n}.", model="emu-1", description=f"The {n}.")
            for n in SUBS
        ),
        backend=backend,  # type: ignore[arg-type]
        limits=soak_limits(retry_budget, CHAT_IDLE_TIMEOUT if backend == "chat" else 5.0),
        db_path=db_path,
        base_url=base_url,
        api_key="soak-key",
    )


def slack_settings(fake: FakeSlack, mode: str) -> SlackSettings:
    """The adapter on `fake`, in Socket Mode or HTTP mode (on a free port), with fast update and post pacing."""
    return SlackSettings(
        bot_token=fake.bot_token,
        mode=mode,  # type: ignore[arg-type]
        app_token=fake.app_token,
        signing_secret=fake.signing_secret,
        http_host="127.0.0.1",
        http_port=0,
        base_url=fake.api_url,
        update_interval_seconds=0.05,
        post_interval_seconds=0.0,
    )
