"""``khadem-nb``: run a demo, a worker process, or print a queue's stats."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from . import __version__

DESCRIPTION = """\
khadem-nb: a job queue for people who work in Jupyter.

commands:
  demo     run a real batch of jobs on the embedded default queue and show the results
  worker   run a worker process for a queue URL (file, sqlite, redis)
  stats    print a queue's metrics and counts by status
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="khadem-nb", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"khadem-nb {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser("demo", help="run a real batch of jobs and print results and metrics",
                               description="Dispatch a few hundred prime-counting jobs (some fail "
                               "once and are retried, two fail for good), drain them with an "
                               "in-process worker showing a progress bar, then print the metrics.")
    demo.add_argument("--jobs", type=int, default=300, help="how many jobs (default 300)")
    demo.add_argument("--concurrency", type=int, default=4, help="consumer tasks (default 4)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        logging.getLogger("khadem_nb").setLevel(logging.ERROR)  # the demo prints failures itself
        from .demo import run_core_demo

        asyncio.run(run_core_demo(args.jobs, args.concurrency))
        return 0
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
