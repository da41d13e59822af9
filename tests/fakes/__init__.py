"""Fakes only the tests use (the real engine with a scripted AI). The platform fakes, which benchmarks share, live in
the top-level `fakes/` package."""
