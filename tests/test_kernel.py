"""In-kernel workers in a real Jupyter kernel: between cells, during awaits, blocking waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernels import Kernel

# jupyter_client leaves its own sockets and loops to the garbage collector after a restart
pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    k = Kernel()
    yield k
    k.close()


SETUP = """
import asyncio, time
import khadem_nb as kn
q = kn.Queue()

@q.job
async def nap(i: int) -> int:
    await asyncio.sleep(0.1)
    return i

@q.job
def block(seconds: float) -> float:
    time.sleep(seconds)   # a sync job: runs in the worker thread pool, never on the loop
    return seconds
"""


def test_workers_progress_between_cells_and_while_a_cell_awaits(kernel: Kernel) -> None:
    kernel.run(SETUP)
    kernel.run("g = nap.map([{'i': i} for i in range(5)]); q.start(concurrency=2); print('started')")
    time.sleep(1.5)  # the kernel is idle between cells
    assert kernel.run("print(g.counts()['completed'])").strip() == "5"
    kernel.run("g2 = nap.map([{'i': i} for i in range(5)])")
    out = kernel.run("await asyncio.sleep(1.0)\nprint(g2.counts()['completed'])")
    assert out.strip() == "5"
    out = kernel.run("await g2\nawait q.join()\nprint([h.result() for h in g2])")
    assert out.strip() == "[0, 1, 2, 3, 4]"


def test_blocking_result_inside_a_cell_returns(kernel: Kernel) -> None:
    kernel.run(SETUP)
    out = kernel.run("q.start(concurrency=2)\nh = nap.dispatch(7)\nprint(h.result(timeout=20))")
    assert out.strip() == "7"
    out = kernel.run("g = nap.map([{'i': i} for i in range(4)])\ng.wait(timeout=20)\n"
                     "print(g.results()['result'].tolist())")
    assert out.strip() == "[0, 1, 2, 3]"


def test_kernel_stays_responsive_while_workers_run_long_sync_jobs(kernel: Kernel) -> None:
    kernel.run(SETUP)
    kernel.run("g = block.map([{'seconds': 3.0}] * 4); q.start(concurrency=4)")
    time.sleep(0.5)
    out, elapsed = kernel.timed("print(sum(g.counts()[s] for s in ('active', 'completed')))")
    assert out.strip() == "4"
    assert elapsed < 2.0, f"a trivial cell took {elapsed:.2f}s while sync jobs ran"


def test_interrupting_a_cell_leaves_workers_alive(kernel: Kernel) -> None:
    kernel.run(SETUP)
    kernel.run("q.start(concurrency=2)")
    threading.Timer(1.0, kernel.interrupt).start()
    out = kernel.run("time.sleep(30)", allow_error=True)
    assert "KeyboardInterrupt" in out
    out = kernel.run("h = nap.dispatch(3)\nprint(h.result(timeout=20), q.running)")
    assert out.strip() == "3 True"


RESUMABLE = """
import khadem_nb as kn
q = kn.Queue("sqlite:///{db}")

@q.job
def point(x: int) -> int:
    with open("{log}", "a") as handle:
        handle.write(f"{{x}}\\n")
    if x >= {stop_at}:
        import os; os.kill(os.getpid(), 9)   # the kernel dies mid-sweep
    return x * x

g = point.sweep(x=[0, 1, 2, 3])
"""


def test_sweep_in_a_durable_queue_resumes_after_a_kernel_restart(
        kernel: Kernel, tmp_path: Path) -> None:
    db, log = tmp_path / "runs.db", tmp_path / "ran.log"
    kernel.run(RESUMABLE.format(db=db, log=log, stop_at=2))
    kernel.run("q.start(concurrency=1)", allow_error=True)
    for _ in range(200):
        if log.exists() and "2" in log.read_text().split():
            break
        time.sleep(0.05)
    time.sleep(0.5)  # the kernel killed itself while running x=2
    kernel.restart()
    kernel.run(RESUMABLE.format(db=db, log=log, stop_at=99) +
               "q.start(concurrency=1)\ng.wait(timeout=60)\nprint(g.results()['result'].tolist())",
               timeout=120)
    out = kernel.run("print(g.results()['result'].tolist(), g.results()['attempt'].tolist())")
    assert out.strip() == "[0, 1, 4, 9] [1, 1, 2, 1]"
    ran = log.read_text().split()
    assert ran.count("0") == 1 and ran.count("1") == 1  # finished points were not run again
    assert ran.count("2") == 2  # the point the kernel died in ran again after its lease expired


def test_blocking_wait_from_another_thread_hands_over_to_the_loop(kernel: Kernel) -> None:
    kernel.run(SETUP)
    out = kernel.run(
        "import threading\nq.start(concurrency=2)\nh = nap.dispatch(5)\nseen = []\n"
        "t = threading.Thread(target=lambda: seen.append(h.result(timeout=20)))\nt.start()\n"
        "await asyncio.sleep(1.0)\nt.join(5)\nprint(seen)")
    assert out.strip() == "[5]"
