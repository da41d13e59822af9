"""Loopback fakes of the platforms and providers, for end-to-end tests."""
