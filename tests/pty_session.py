"""A command run in a pseudo-terminal that is its controlling terminal, as a user's shell would run it: tests type
into it, press Ctrl-C (the terminal sends SIGINT to the foreground process group) and read what it showed."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import subprocess
import termios
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
DEFAULT_TIMEOUT = 30.0


def _become_session_leader_with_a_terminal() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtySession:
    def __init__(self, command: Sequence[str], cwd: Path, env: Mapping[str, str]) -> None:
        self._master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            list(command), cwd=cwd, env={**os.environ, "TERM": "xterm", "COLUMNS": "100", "LINES": "30", **env},
            stdin=slave, stdout=slave, stderr=slave, preexec_fn=_become_session_leader_with_a_terminal,
        )
        os.close(slave)
        self.raw = ""
        self._mark = 0  # expect() looks at what was shown after its previous match

    @property
    def output(self) -> str:
        """What was shown so far, without terminal control sequences."""
        return ANSI.sub("", self.raw)

    def send(self, text: str) -> None:
        os.write(self._master, text.encode())

    def interrupt(self) -> None:
        self.send("\x03")  # Ctrl-C, as the keyboard sends it

    def expect(self, text: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Read until `text` was shown (after the last expect's match); AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while (found := self.output.find(text, self._mark)) < 0:
            if not self._read(deadline - time.monotonic()):
                raise AssertionError(f"{text!r} not shown within {timeout}s; the screen showed:\n{self.output}")
        self._mark = found + len(text)

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """The exit code, reading everything shown until then."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(min(0.2, deadline - time.monotonic()))
        while self._read(0.05):
            pass
        if self.proc.poll() is None:
            raise AssertionError(f"still running after {timeout}s; the screen showed:\n{self.output}")
        return self.proc.returncode

    def _read(self, timeout: float) -> bool:
        if timeout <= 0:
            return False
        ready, _, _ = select.select([self._master], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self._master, 65536)
        except OSError:  # the child closed the terminal
            return False
        self.raw += chunk.decode(errors="replace")
        return bool(chunk)

    def __enter__(self) -> PtySession:
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self._master)
