"""The children `make loadtest` starts (the fleet launcher, Locust's master and workers).

Each runs in its own process group, its output copied line by line to a log file (and, for
the Locust master, to the screen), so whatever happens it can be stopped as a whole.
Only the standard library: run_local.py runs under the load-test virtualenv.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent


class RunError(Exception):
    """The fleet or Locust did not run as expected (exit 2)."""


@dataclass
class Proc:
    """A child in its own process group, its output in a log file (and maybe on screen)."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str]
    echo: bool = False
    popen: subprocess.Popen[bytes] | None = None
    lines: list[str] = field(default_factory=list)
    _pump: threading.Thread | None = None
    _log: IO[str] | None = None

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("a", encoding="utf-8")
        self._log.write(f"--- {datetime.now().isoformat(timespec='seconds')} {self.argv}\n")
        self._log.flush()
        self.popen = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ctrl-C is ours to pass on
        )
        self._pump = threading.Thread(target=self._copy, daemon=True)
        self._pump.start()
        return self

    def _copy(self) -> None:
        assert self.popen is not None
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            log = self._log
            if log is not None:
                with contextlib.suppress(ValueError):  # closed by kill_group meanwhile
                    log.write(line)
                    log.flush()
            if self.echo:
                sys.stdout.write(f"  {self.name} | {line}")
                sys.stdout.flush()

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait(self, timeout: float) -> int | None:
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout=max(timeout, 0))
        except subprocess.TimeoutExpired:
            return None

    def send(self, signum: int) -> None:
        if self.alive() and self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill_group(self) -> None:
        """SIGKILL whatever is left in this child's process group."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self.wait(5)
        if self._pump is not None:
            self._pump.join(timeout=2)
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, timeout: float, signum: int = signal.SIGTERM) -> None:
        """`signum` to the leader, wait up to `timeout`, then SIGKILL the group."""
        self.send(signum)
        self.wait(timeout)
        self.kill_group()

    def tail(self, n: int = 30) -> str:
        return "".join(self.lines[-n:])

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)
