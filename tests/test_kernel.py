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
q = kn.Queue("sqlite:///{db}?lease=4")  # a short lease: the point the kernel died in is reclaimed soon

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


SHIPPED_SECRET = "the kernel's and the worker's shared secret"


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_cell_job_runs_on_a_worker_process_and_its_output_arrives_live(
        kernel: Kernel, tmp_path: Path, backend: str) -> None:
    """A job defined in a cell, closing over a value and calling a helper module shipped by
    value, runs in a `khadem-nb worker --trust-code` process started in another folder; the
    kernel reads its printed lines while it runs, then its result."""
    import subprocess
    import sys

    from conftest import need_redis
    from procs import env, kill

    url = f"sqlite:///{tmp_path}/q.db" if backend == "sqlite" else \
        f"{need_redis()}?prefix=khadem-kernel-{tmp_path.name}"
    notebook, elsewhere = tmp_path / "notebook", tmp_path / "worker"
    notebook.mkdir()
    elsewhere.mkdir()
    (notebook / "cellhelpers.py").write_text("def double(x):\n    return 2 * x\n")
    release = tmp_path / "release"
    worker = subprocess.Popen([sys.executable, "-m", "khadem_nb.cli", "--log-level", "WARNING", "worker",
                               "--queue-url", url, "--trust-code"], cwd=elsewhere,
                              env={**env(), "KHADEM_SECRET": SHIPPED_SECRET}, text=True)
    try:
        kernel.run(f"import os, sys\nos.environ['KHADEM_SECRET'] = {SHIPPED_SECRET!r}\n"
                   f"sys.path.insert(0, {str(notebook)!r})")
        kernel.run(f"""
import os, time
import khadem_nb as kn
import cellhelpers

q = kn.Queue({url!r}, ship_code=True, ship_modules=["cellhelpers"])
bonus = 5

@q.job
def remote(x: int) -> int:
    print("started on", os.getpid(), flush=True)
    while not os.path.exists({str(release)!r}):
        time.sleep(0.05)
    return cellhelpers.double(x) + bonus

h = remote.dispatch(16)
""")
        seen = kernel.run("""
deadline = time.monotonic() + 60
while "started on" not in h.output and time.monotonic() < deadline:
    time.sleep(0.1)
print(h.status, "|", h.tail(1))
""", timeout=90)
        status, line = seen.strip().split(" | ")
        assert status == "active"  # the line arrived while the job still ran
        assert line == f"started on {worker.pid}"  # printed in the worker process
        release.touch()
        assert kernel.run("print(h.result(timeout=60))", timeout=90).strip() == "37"
        kernel.run("q.clear()\nq.close()")
    finally:
        kill(worker)


CODE_CHANGE = """
import warnings
import khadem_nb as kn
q = kn.Queue("sqlite:///{db}?lease=4")  # a short lease: the point the kernel died in is reclaimed soon

@q.job(name="tests.kernel.power")
def power(x: int) -> int:
    return x ** {exponent}

q.start()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    g = power.sweep(x=[1, 2, 3], on_code_change={choice!r})
g.wait(timeout=60)
print(g.results()["result"].tolist(), [str(w.message)[:40] for w in caught])
q.stop()
"""


def test_a_sweep_after_a_code_change_warns_reruns_or_keeps(kernel: Kernel, tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    first = kernel.run(CODE_CHANGE.format(db=db, exponent=1, choice="warn"), timeout=90)
    assert first.strip() == "[1, 2, 3] []"
    kernel.restart()  # the cell is edited and run again in a new kernel
    warned = kernel.run(CODE_CHANGE.format(db=db, exponent=2, choice="warn"), timeout=90)
    assert warned.strip() == "[1, 2, 3] ['3 of the 3 points reuse results of an ol']"
    kept = kernel.run(CODE_CHANGE.format(db=db, exponent=2, choice="keep"), timeout=90)
    assert kept.strip() == "[1, 2, 3] []"
    rerun = kernel.run(CODE_CHANGE.format(db=db, exponent=2, choice="rerun"), timeout=90)
    assert rerun.strip() == "[1, 4, 9] []"
    again = kernel.run(CODE_CHANGE.format(db=db, exponent=2, choice="warn"), timeout=90)
    assert again.strip() == "[1, 4, 9] []"  # the points now hold this code's results


CHARTS = """
import asyncio, re
import khadem_nb as kn

q = kn.Queue()

@q.job
async def step(i: int) -> int:
    await asyncio.sleep(0.05 if i % 2 else 0.15)
    if i == 5:
        raise ValueError("point 5 diverged")
    return i

panel = q.panel(refresh=0.2)
g = step.map([{"i": i} for i in range(24)])
q.start(concurrency=3)
"""

READ_CHARTS = """
await asyncio.sleep(0.6)   # a refresh after the last job
svg = panel.charts
def data(kind, name):
    return re.search(f"class='khadem-{kind}' [^>]*data-{name}='([^']*)'", svg).group(1)
print("throughput", round(sum(float(v) for v in data("throughput", "values").split(",")) * 10))
print("durations", sum(int(n) for n in data("durations", "counts").split(",")))
print("longest", float(data("durations", "longest")) >= 0.15)
print("timeline", data("timeline", "jobs"), data("timeline", "workers"))
print("workers", sorted(set(re.findall("data-worker='([^']*)'", svg))))
print("failed_bars", len(re.findall("data-status='failed'", svg)))
print("updates", panel.updates < 60)
"""


def test_the_panel_draws_throughput_durations_and_a_timeline_per_worker(kernel: Kernel) -> None:
    kernel.run(CHARTS)
    kernel.run("g.wait(timeout=60)", timeout=90)
    out = kernel.run(READ_CHARTS)
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    assert int(lines["throughput"]) == 24, out  # every finished job lands in one 10 s bar or another
    assert lines["durations"] == "24" and lines["longest"] == "True", out
    assert lines["timeline"] == "24 3", out
    assert lines["workers"] == "['worker 0', 'worker 1', 'worker 2']", out
    assert lines["failed_bars"] == "1", out
    assert lines["updates"] == "True", out  # redrawn per refresh, not per job
