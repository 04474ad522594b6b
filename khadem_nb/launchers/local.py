"""``on="local"``: ``khadem-nb worker`` processes on this machine, each logging to a file of its
own. They run with this process's environment plus the launch's (``LaunchSpec.environment``);
a setup command (``env="source venv/bin/activate"``) runs them through the shell."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from .handle import ProcessWorker
from .spec import LaunchSpec, new_name


class LocalWorker(ProcessWorker):
    launcher = "local"

    def __init__(self, name: str, process: subprocess.Popen[bytes], log: Path, detach: bool) -> None:
        super().__init__(name, socket.gethostname(), detach, log)
        self.process = process

    def current_state(self) -> str:
        return "running" if self.process.poll() is None else "gone"

    def exit_status(self) -> int | None:
        return self.process.returncode

    def stop_at_exit(self) -> None:
        self.stop(10.0)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM: the worker finishes (or gives back) its jobs within ``grace``, then exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace + 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_local(spec: LaunchSpec, n: int) -> list[LocalWorker]:
    """Start ``n`` worker processes on this machine (not waiting for them to register)."""
    folder = Path(tempfile.mkdtemp(prefix="khadem-launch-"))
    command = [spec.python or sys.executable, *spec.arguments()]
    if spec.setup:
        command = ["/bin/sh", "-c", f"{spec.setup} && exec {shlex.join(command)}"]
    launched = []
    for _ in range(n):
        name = new_name(socket.gethostname(), "local")
        log = folder / f"{name}.log"
        environment = {**os.environ, **spec.environment(name, "local")}
        with open(log, "wb") as out:
            process = subprocess.Popen(command, env=environment, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=spec.detach)
        launched.append(LocalWorker(name, process, log, spec.detach))
    return launched
