"""Loopback fakes of the platforms, and the settings that point the real code at them, shared by tests and
benchmarks. Never shipped (not in the wheel's packages) and importing nothing from `tests/` or `benchmarks/`.
"""
