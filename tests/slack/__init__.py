"""End-to-end tests of the Slack adapter against a fake Slack Web API."""
