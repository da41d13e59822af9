"""The wiring layer: the one place that composes the engine, storage, the platform adapters and the emulator.

Nothing below imports it (`tests/test_layers.py` checks this): the command line (`cli`), the credential check
(`doctor`), the runner that starts the enabled platforms or the terminal chat (`runner`), and the demo (`demo`).
"""
