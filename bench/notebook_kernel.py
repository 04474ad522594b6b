"""The notebook layer in a real Jupyter kernel, in one run:

1. in-kernel throughput of N no-op async jobs with 4 workers, with the live panel displayed
   and without it (rounds interleaved; medians; the panel at its default, 2 refreshes a second);
2. the kernel's round trip for a trivial cell (``1``), p50 and p99 of CELLS cells, while 4
   in-kernel workers run 10 ms sync jobs without pause.

    python bench/notebook_kernel.py [--n 300000] [--rounds 5] [--cells 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from jupyter_client.manager import start_new_kernel

THROUGHPUT_CELL = """
import time, khadem_nb as kn
from IPython.display import display
q = kn.Queue()
@q.job
async def noop(i: int) -> None:
    return None
g = noop.map([{{"i": i}} for i in range({n})])
if {panel}:
    panel = q.panel()
    display(panel)
started = time.perf_counter()
q.start(concurrency=4)
await g
elapsed = time.perf_counter() - started
print({n} / elapsed)
q.close()
"""

LATENCY_SETUP = """
import time, khadem_nb as kn
q = kn.Queue()
@q.job
def work(i: int) -> None:
    time.sleep(0.01)   # a 10 ms sync job, in the worker thread pool
g = work.map([{"i": i} for i in range(100000)])
q.start(concurrency=4)
"""


def run(kc: Any, code: str, timeout: float = 600) -> str:
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            raise RuntimeError("\n".join(msg["content"]["traceback"]))

    kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    return "".join(out)


def throughput(kc: Any, n: int, panel: bool) -> float:
    return float(run(kc, THROUGHPUT_CELL.format(n=n, panel=panel)).strip().splitlines()[-1])


def latencies(kc: Any, cells: int) -> list[float]:
    run(kc, LATENCY_SETUP)
    time.sleep(1.0)
    samples = []
    for _ in range(cells):
        started = time.perf_counter()
        run(kc, "1")
        samples.append((time.perf_counter() - started) * 1000)
    done = run(kc, "print(g.counts()['completed']); q.stop(grace=0); q.close()")
    assert int(done.split()[0]) > 0, "the workers did not run while cells were measured"
    return sorted(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300_000)  # the panel's first render is not the measure
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cells", type=int, default=200)
    args = parser.parse_args()
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        plain, watched = [], []
        for _ in range(args.rounds):
            plain.append(throughput(kc, args.n, panel=False))
            watched.append(throughput(kc, args.n, panel=True))
        lat = latencies(kc, args.cells)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
    a, b = statistics.median(plain), statistics.median(watched)
    print(f"N={args.n} no-op jobs, 4 in-kernel workers, medians of {args.rounds} rounds; "
          f"{args.cells} trivial cells\n")
    print("| measure | value |")
    print("|---|---:|")
    print(f"| throughput without panel (jobs/s) | {a:,.0f} |")
    print(f"| throughput with panel displayed (jobs/s) | {b:,.0f} |")
    print(f"| slowdown with panel | {(1 - b / a) * 100:.1f} % |")
    print(f"| trivial cell round trip p50 while 4 workers run 10 ms sync jobs | {p50:.1f} ms |")
    print(f"| trivial cell round trip p99 | {p99:.1f} ms |")


if __name__ == "__main__":
    main()
