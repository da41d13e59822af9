"""Prometheus metrics, one registry per Bot (tests run several bots in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TURN_SECONDS_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.turns = Counter("switchboard_turns", "Turns finished, by outcome", ["outcome"], registry=r)
        self.turn_seconds = Histogram(
            "switchboard_turn_seconds", "Time from a turn's start to its reply", buckets=TURN_SECONDS_BUCKETS,
            registry=r,
        )
        self.runs = Counter("switchboard_runs", "Remote runs settled, by final status", ["status"], registry=r)
        self.recoveries = Counter(
            "switchboard_recoveries", "Retries and recoveries, by reason", ["reason"], registry=r
        )
        self.tokens = Counter("switchboard_tokens", "Tokens used, by kind", ["kind"], registry=r)
        self.assistant_tokens = Counter(
            "switchboard_assistant_tokens", "Tokens used, by assistant and kind (input, cached_input, output)",
            ["assistant", "kind"], registry=r,
        )
        self.deliveries = Counter(
            "switchboard_deliveries", "Replies posted to a platform, by kind", ["platform", "kind"], registry=r
        )
        self.undeliverable = Counter(
            "switchboard_undeliverable",
            "Replies no way of the platform could deliver (turn recorded as undeliverable), by platform",
            ["platform"],
            registry=r,
        )
        self.queue_depth = Gauge("switchboard_queue_depth", "Conversations with a turn in progress", registry=r)
        self.accepted = Counter(
            "switchboard_messages_accepted", "Messages accepted, by platform", ["platform"], registry=r
        )
        self.duplicates = Counter(
            "switchboard_messages_duplicate", "Platform retries of messages already accepted", ["platform"], registry=r
        )
