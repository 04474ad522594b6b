"""What a watched queue costs its workers: one `khadem-nb worker` process drains N no-op jobs on
Redis, alone and while `khadem-nb dashboard` serves CLIENTS pages that each fetch the overview
once a second (as the page does), rounds alternating; medians and the ratio.

The drain is timed as in bench/redis_peers.py: from the worker's start to the N-th job's stamp,
minus the same for one job (start-up is not counted). The pages run in a process of their own,
as browsers would elsewhere; the dashboard's own CPU use is reported beside.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 python bench/dashboard.py [--n 50000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE / "peers")]
import khadem_peer  # noqa: E402
from common import URL, time_to_stamp  # noqa: E402


def env() -> dict[str, str]:
    path = os.pathsep.join([str(HERE / "peers"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def spare_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def time_to_drain(n: int) -> float:
    redis.Redis.from_url(URL).flushdb()
    asyncio.run(khadem_peer.enqueue(n, bulk=True))
    return time_to_stamp(khadem_peer.worker_cmd(), env(), HERE / "peers", n, "khadem_nb")


def drain_rate(n: int) -> float:
    return (n - 1) / max(1e-6, time_to_drain(n) - time_to_drain(1))


PAGES = """
import sys, threading, time, httpx
url, clients = sys.argv[1], int(sys.argv[2])
def page(offset):
    time.sleep(offset)  # the pages do not all refresh in the same instant
    with httpx.Client(timeout=10) as client:
        while True:
            client.get(url)
            time.sleep(1.0)
for i in range(clients):
    threading.Thread(target=page, args=(i / clients,), daemon=True).start()
threading.Event().wait()
"""


class Watchers:
    """A dashboard process, and a process of ``clients`` pages fetching its overview once a
    second each (pages live in browsers, not in the process that times the drain)."""

    def __init__(self, clients: int) -> None:
        self.port = spare_port()
        command = [sys.executable, "-m", "khadem_nb.cli", "dashboard", "--queue-url", URL,
                   "--port", str(self.port)]
        self.process = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self._wait_until_up()
        self.pages = subprocess.Popen([sys.executable, "-c", PAGES, f"{self.url}/api/overview", str(clients)])
        self.started = time.monotonic()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{self.url}/api/overview", timeout=5)
                return
            time.sleep(0.1)
        raise RuntimeError("the dashboard did not start")

    def cpu_s(self) -> float:
        """CPU seconds the dashboard process has used."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        for process in (self.pages, self.process):
            process.terminate()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args()
    alone: list[float] = []
    watched: list[float] = []
    shares: list[float] = []
    for _ in range(args.rounds):
        alone.append(drain_rate(args.n))
        watchers = Watchers(args.clients)
        try:
            cpu, started = watchers.cpu_s(), time.monotonic()
            watched.append(drain_rate(args.n))
            shares.append((watchers.cpu_s() - cpu) / (time.monotonic() - started))
        finally:
            watchers.close()
    a, w = statistics.median(alone), statistics.median(watched)
    print(f"n={args.n}, rounds={args.rounds}, clients={args.clients}; medians (jobs/s); the dashboard "
          f"process used {statistics.median(shares):.1%} of a core while watched")
    print("| drain | jobs/s |\n|---|---:|")
    print(f"| alone | {a:,.0f} |\n| with the dashboard and {args.clients} pages | {w:,.0f} |")
    print(f"\nwatched / alone = {w / a:.3f} ({(1 - w / a) * 100:+.1f} % slower)")


if __name__ == "__main__":
    main()
