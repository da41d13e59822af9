"""Switchboard: a proxy assistant that delegates to sub-assistants, behind Slack, Discord or a terminal."""

__version__ = "0.1.0"
