"""``khadem-nb``: run a demo, a worker process, or print a queue's stats."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from . import __version__
from .errors import KhademError

DESCRIPTION = """\
khadem-nb: a job queue for people who work in Jupyter.

commands:
  demo     run a real batch of jobs on the embedded default queue and show the results
  worker   run a worker process for a queue URL (file, sqlite, redis)
  stats    print a queue's metrics and counts by status
  cancel   cancel jobs by id, or every queued one: they never start, or their worker stops them
  workers  list a queue's workers, wherever they run
  launch   start workers of a queue here, on another machine over SSH, or as Slurm jobs
  autoscale  keep a number of launched workers that follows the queue's backlog
  pause    pause a queue for every worker, wherever it runs (resume: let them claim again)
"""
URL_HELP = ("queue URL, e.g. sqlite:///runs.db (runs.db in the working directory), sqlite:////abs/runs.db "
            "(an absolute path), file:///tmp/q, redis://host:6379/0 (env KHADEM_QUEUE_URL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="khadem-nb", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"khadem-nb {__version__}")
    parser.add_argument("--log-level", default="INFO", help="logging level on stderr (default INFO)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(commands)
    _add_worker(commands)
    stats = commands.add_parser("stats", help="print a queue's metrics and counts by status",
                                description="Read a queue's stored records and print counts by status "
                                "and metrics derived from them.")
    stats.add_argument("--queue-url", default=os.environ.get("KHADEM_QUEUE_URL"), help=URL_HELP)
    stats.add_argument("--queue", default=None, help="only this named queue")
    workers = commands.add_parser("workers", help="list a queue's workers, wherever they run",
                                  description="Every worker of the queue that wrote its entry in the last "
                                  "hour: name, host, launcher, state, jobs done, last seen.")
    workers.add_argument("--queue-url", default=os.environ.get("KHADEM_QUEUE_URL"), help=URL_HELP)
    _add_cancel(commands)
    _add_dashboard(commands)
    _add_launch(commands)
    _add_pause(commands)
    migrate = commands.add_parser(
        "migrate", help="upgrade a queue's storage layout to this release's",
        description="Apply the storage upgrades this release needs (PostgreSQL schema versions, SQLite "
        "columns and tables, the Redis and file layout versions), once, under a lock; or print the "
        "PostgreSQL and SQLite statements with --sql. See docs/upgrades.md.")
    migrate.add_argument("--queue-url", default=os.environ.get("KHADEM_QUEUE_URL"), help=URL_HELP)
    migrate.add_argument("--sql", action="store_true",
                         help="print the statements instead of running them (PostgreSQL, SQLite)")
    return parser


def _add_pause(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for verb, what in (("pause", "Pause a queue: every worker of it, on any machine, stops claiming its "
                        "jobs (running ones finish); dispatch goes on."),
                       ("resume", "Resume a paused queue: its workers claim its jobs again.")):
        command = commands.add_parser(verb, help=what.split(":")[0].lower(), description=what)
        command.add_argument("--queue-url", default=os.environ.get("KHADEM_QUEUE_URL"), help=URL_HELP)
        command.add_argument("--queue", default=None, help="the named queue (default: the URL's queue)")


def _launch_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--queue-url", default=os.environ.get("KHADEM_QUEUE_URL"), help=URL_HELP)
    command.add_argument("--on", default="local",
                         help="the launcher: local, ssh://[user@]host[:port] or slurm (default local)")
    command.add_argument("--concurrency", type=int, default=1, help="jobs at once per worker (default 1)")
    command.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                         help="module that defines jobs, imported by each worker (repeatable)")
    command.add_argument("--resources", default=None, metavar="NAME=UNITS,...",
                         help="resource units each worker offers, like gpu=1")
    command.add_argument("--python", default=None, help="the workers' Python (default: this one locally "
                         "and on Slurm, python3 on the remote PATH over SSH)")
    command.add_argument("--setup", default=None, metavar="COMMAND",
                         help="a shell command each worker runs first, like 'source ~/venv/bin/activate'")
    command.add_argument("--trust-code", action="store_true",
                         help="the workers run code shipped from notebooks (secret: KHADEM_SECRET)")
    command.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                         help="a launcher option: partition=gpu, time=02:00:00, gres=gpu:1, cpus=4, mem=16G, "
                         "account=..., sbatch=--qos=high (Slurm); connect_timeout=10 (SSH)")


def _add_launch(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    launch = commands.add_parser(
        "launch", help="start workers of a queue with a launcher",
        description="Start -n workers of the queue with a launcher and print them (name, host, "
        "launcher, state) once each has registered. Without --detach it stays in the foreground and "
        "stops them on SIGTERM or Ctrl-C.")
    _launch_arguments(launch)
    launch.add_argument("-n", type=int, default=1, help="how many workers (default 1)")
    launch.add_argument("--detach", action="store_true", help="leave the workers running and exit")
    launch.add_argument("--timeout", type=float, default=60.0,
                        help="seconds each worker has to register (default 60)")
    autoscale = commands.add_parser(
        "autoscale", help="keep launched workers in step with the backlog",
        description="Keep between --min and --max launched workers, as many as the due and running "
        "jobs need; retire those idle for --idle-timeout seconds. Runs until SIGTERM or Ctrl-C, then "
        "retires its workers. A second autoscaler of the queue with other limits is refused.")
    _launch_arguments(autoscale)
    autoscale.add_argument("--min", type=int, default=0, help="workers kept at least (default 0)")
    autoscale.add_argument("--max", type=int, default=4, help="workers launched at most (default 4)")
    autoscale.add_argument("--idle-timeout", type=float, default=120.0,
                           help="seconds a worker idles before it is retired (default 120)")
    autoscale.add_argument("--interval", type=float, default=1.0, help="seconds between checks (default 1)")


def _add_cancel(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cancel = commands.add_parser(
        "cancel", help="cancel jobs by id, or every queued one",
        description="Cancel jobs: a queued or scheduled job never starts; a running one is stopped "
        "by its worker, on this machine or another. Finished jobs are left as they are. Prints the "
        "ids cancelled, one per line.")
    cancel.add_argument("ids", nargs="*", metavar="ID", help="job ids to cancel")
    cancel.add_argument("--queue-url", default=os.environ.get("KHADEM_QUEUE_URL"), help=URL_HELP)
    cancel.add_argument("--all-queued", action="store_true",
                        help="cancel every waiting, queued and scheduled job (of --queue, or of every queue)")
    cancel.add_argument("--queue", default=None, help="with --all-queued: only this named queue")
    cancel.add_argument("--reason", default="cancelled", help="kept as the jobs' error (default: cancelled)")


def _add_dashboard(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .dashboard.serve import DEFAULT_HOST, DEFAULT_PORT

    board = commands.add_parser("dashboard", help="serve a web dashboard of a queue (counts, charts, "
                                "failures, actions, /metrics)")
    board.add_argument("--queue-url", default=os.environ.get("KHADEM_QUEUE_URL"), help=URL_HELP)
    board.add_argument("--host", default=DEFAULT_HOST, help=f"address to serve on (default {DEFAULT_HOST}; "
                       "any other needs --token)")
    board.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    board.add_argument("--token", default=os.environ.get("KHADEM_DASHBOARD_TOKEN"),
                       help="the token actions need (default: a new one, printed at start)")
    board.add_argument("--read-token", default=os.environ.get("KHADEM_DASHBOARD_READ_TOKEN"),
                       help="a token that reads the queue and never acts (for a team's viewers; "
                       "refused actions and every action go to the audit log at /audit)")
    board.add_argument("--allowed-host", dest="allowed_hosts", action="append", default=[], metavar="NAME",
                       help="a host name the dashboard is reached by, beside its address (repeatable; "
                       "on loopback only 127.0.0.1, localhost and [::1] are answered otherwise)")


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="run a real parameter sweep and print results and metrics",
                               description="Sweep a grid of 300 ridge-regression fits through in-process "
                               "workers on the in-memory queue (or --queue-url). Some points fail once "
                               "and are retried with backoff, some fail for good and are kept with "
                               "their error. Shows a progress bar, then the results and the metrics.")
    demo.add_argument("--queue-url", default=None, help="use this queue instead of the in-memory default")
    demo.add_argument("--concurrency", type=int, default=4, help="in-process workers (default 4)")


def _add_worker(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = commands.add_parser(
        "worker", help="run a worker process for a queue URL",
        description="Work a queue until stopped. SIGTERM/SIGINT stop claiming, let running jobs "
        "finish within --grace seconds, and give the rest back to the queue.")
    worker.add_argument("--queue-url", default=os.environ.get("KHADEM_QUEUE_URL"), help=URL_HELP)
    worker.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="module that defines jobs (repeatable)")
    worker.add_argument("--queue", dest="queues", action="append", default=[], metavar="NAME",
                        help="named queue to work, checked in the order given (repeatable)")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs at once (default 1)")
    worker.add_argument("--prefetch", type=int, default=None,
                        help="jobs claimed ahead of free consumers (default: half the concurrency on "
                        "Redis, 0 elsewhere; 0 suits long jobs spread over many machines)")
    worker.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
    worker.add_argument("--burst", action="store_true",
                        help="exit when no job is due (jobs waiting only for a concurrency slot or a rate "
                        "window are waited for)")
    worker.add_argument("--grace", type=float, default=30.0, help="seconds running jobs get on stop")
    worker.add_argument("--lease", type=float, default=None, help="lease seconds (queue.lease)")
    worker.add_argument("--isolation", default=None, choices=("none", "process"),
                        help="where jobs that do not choose run: in this process (none, the default) "
                        "or each in a child process that a timeout or a cancel can kill (process)")
    worker.add_argument("--trust-code", action="store_true",
                        help="run code shipped from notebooks (queue.ship_code), once its signature "
                        "checks out with the secret in KHADEM_SECRET")
    worker.add_argument("--strict-versions", action="store_true",
                        help="with --trust-code: fail shipped code whose packages differ in version "
                        "here (by default the job runs and its record carries a warning)")
    worker.add_argument("--resources", default=None, metavar="NAME=UNITS,...",
                        help="resource units this worker offers to jobs that ask for them, "
                        "like gpu=4,mem_gb=64")
    worker.add_argument("--artifacts", default=None, metavar="URL",
                        help="the artifact store for large arguments and results: a folder or any "
                        "fsspec URL such as s3://bucket/runs (queue.artifacts)")
    worker.add_argument("--metrics-port", type=int, default=None, metavar="N",
                        help="serve this worker's Prometheus metrics on this port")
    worker.add_argument("--metrics-host", default="127.0.0.1",
                        help="address of the metrics server (default 127.0.0.1)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    try:
        return _dispatch(args, parser)
    except KhademError as exc:
        print(f"khadem-nb {args.command}: {exc}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "demo":
        logging.getLogger("khadem_nb").setLevel(logging.ERROR)  # the demo prints failures itself
        from .ops.demo import run_demo

        run_demo(args.queue_url, args.concurrency)
        return 0
    if not args.queue_url:
        parser.error(f"{args.command} needs --queue-url or KHADEM_QUEUE_URL")
    if args.command == "worker":
        from .ops.worker_process import WorkerOptions, run_worker_process

        options = WorkerOptions(args.queue_url, args.imports, args.queues, args.concurrency,
                                args.max_jobs, args.burst, args.grace, args.lease, args.prefetch,
                                args.isolation, args.trust_code, args.strict_versions, args.metrics_port,
                                args.metrics_host, args.resources, args.artifacts)
        asyncio.run(run_worker_process(options))
        return 0
    if args.command == "dashboard":
        from .dashboard.serve import run

        run(args.queue_url, args.host, args.port, args.token, args.allowed_hosts, args.read_token)
        return 0
    if args.command == "cancel":
        if bool(args.ids) == bool(args.all_queued):
            parser.error("cancel takes job ids or --all-queued (one of the two)")
        cancelled = asyncio.run(_cancel(args.queue_url, args.ids, args.all_queued, args.queue, args.reason))
        for job_id in cancelled:
            print(job_id)
        return 0
    if args.command in ("pause", "resume", "launch", "autoscale", "workers"):
        return _fleet_command(args)
    if args.command == "migrate":
        from .ops.migrating import run_migrate

        return asyncio.run(run_migrate(args.queue_url, args.sql))
    from .ops.stats import print_stats

    asyncio.run(print_stats(args.queue_url, args.queue))
    return 0


async def _cancel(url: str, ids: Sequence[str], all_queued: bool, queue: str | None,
                  reason: str) -> list[str]:
    from .manager import QueueManager

    manager = await QueueManager(url).init()
    try:
        if all_queued:
            return await manager.cancel_all("queued", queue=queue, reason=reason)
        return await manager.cancel(ids, reason=reason)
    finally:
        await manager.close()


def _fleet_command(args: argparse.Namespace) -> int:
    """The commands that act on a queue's workers wherever they run."""
    if args.command in ("pause", "resume"):
        print(asyncio.run(_pause(args.queue_url, args.queue, args.command == "pause")))
        return 0
    if args.command in ("launch", "autoscale"):
        return _launch_command(args)
    from .ops.stats import print_workers

    asyncio.run(print_workers(args.queue_url))
    return 0


async def _pause(url: str, queue: str | None, pause: bool) -> str:
    from .manager import QueueManager

    async with QueueManager(url) as manager:
        name = queue or manager.settings.name
        if pause:
            await manager.pause_queue(name)
            return f"queue {name!r} paused: its workers claim nothing until it is resumed"
        resumed = await manager.resume_queue(name)
        return f"queue {name!r} resumed" if resumed else f"queue {name!r} was not paused"


def _launch_command(args: argparse.Namespace) -> int:
    from .ops.launching import LaunchArgs, run_autoscale, run_launch

    launch = LaunchArgs(args.queue_url, args.on, args.concurrency, args.imports, args.resources, args.python,
                        args.setup, args.trust_code, args.options)
    if args.command == "launch":
        return asyncio.run(run_launch(launch, args.n, detach=args.detach, timeout=args.timeout))
    return asyncio.run(run_autoscale(launch, low=args.min, high=args.max, idle_timeout=args.idle_timeout,
                                     interval=args.interval))


if __name__ == "__main__":
    sys.exit(main())

