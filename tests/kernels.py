"""A real Jupyter kernel driven over jupyter_client, for kernel-loop tests."""

from __future__ import annotations

import gc
import time
import warnings
from typing import Any

from jupyter_client.manager import KernelManager, start_new_kernel
from procs import env


class CellError(AssertionError):
    pass


class Kernel:
    """Runs cells in a real ipykernel and returns what they printed."""

    def __init__(self) -> None:
        self.km: KernelManager
        self.km, self.kc = start_new_kernel(kernel_name="python3", env=env())

    def run(self, code: str, timeout: float = 60, allow_error: bool = False) -> str:
        out: list[str] = []
        errors: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                out.append(content["data"].get("text/plain", "") + "\n")
            elif kind == "error":
                errors.append("\n".join(content["traceback"]))

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        if errors and not allow_error:
            raise CellError("cell failed:\n" + "\n".join(errors))
        if reply["content"]["status"] == "error" and not allow_error:
            raise CellError(f"cell failed: {reply['content'].get('ename')}: {reply['content'].get('evalue')}")
        return "".join(out) + "".join(errors)

    def timed(self, code: str, timeout: float = 60) -> tuple[str, float]:
        started = time.monotonic()
        out = self.run(code, timeout)
        return out, time.monotonic() - started

    def restart(self) -> None:
        self.km.restart_kernel(now=True)
        self.kc.wait_for_ready(timeout=60)

    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
        del self.kc, self.km
        # jupyter_client leaves sockets and an event loop to the garbage collector: collect them
        # here, quietly, rather than let their ResourceWarnings surface in an unrelated test
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()

