"""A Slurm cluster of this one machine for the Slurm launcher's tests: Debian's ``slurm-wlm``
(slurmctld and slurmd) and ``munge``, started for the test session with a ``slurm.conf`` and a
munge key written by the test (the node's real CPUs and memory, ports of its own, every file
in a temporary folder). ``SLURM_CONF`` points ``sbatch``, ``squeue`` and ``scancel`` at it.
Without the binaries or root the tests skip with why, unless KHADEM_REQUIRE_SLURM=1."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import missing

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


@dataclass(frozen=True)
class SlurmCluster:
    conf: Path
    logs: Path

    def jobs(self) -> list[tuple[str, str]]:
        """(job id, state) of every job the cluster holds."""
        out = subprocess.run(["squeue", "--noheader", "--format", "%i %T"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        return [tuple(line.split()) for line in out.splitlines() if line.strip()]  # type: ignore[misc]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(folder: Path, host: str) -> str:
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 1024
    return "\n".join([
        f"ClusterName=khadem{os.getpid()}", f"SlurmctldHost={host}(127.0.0.1)",
        "SlurmUser=root", "SlurmdUser=root",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge", f"AuthInfo=socket={folder / 'munge.sock'}", "CredType=cred/munge",
        f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "MpiDefault=none",
        "ReturnToService=2", "SchedulerType=sched/backfill", "KillWait=5",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={memory_mb} State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""])


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stop(pid_files: list[Path]) -> None:
    for pid_file in reversed(pid_files):
        pid = _pid(pid_file)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)


def _start(folder: Path, conf: Path, key: Path, started: list[Path]) -> None:
    """munged, slurmctld and slurmd, each noted in ``started`` (pid files) once it runs."""
    subprocess.run(["munged", "--force", f"--key-file={key}", f"--socket={folder / 'munge.sock'}",
                    f"--pid-file={folder / 'munged.pid'}", f"--log-file={folder / 'munged.log'}",
                    f"--seed-file={folder / 'munge.seed'}"], check=True, capture_output=True, timeout=30)
    started.append(folder / "munged.pid")
    for daemon in ("slurmctld", "slurmd"):
        subprocess.run([daemon, "-f", str(conf)], check=True, capture_output=True, timeout=30)
        started.append(folder / f"{daemon}.pid")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    absent = [name for name in BINARIES if shutil.which(name) is None]
    if absent or os.geteuid() != 0:
        missing(f"the Slurm tests need root and Debian's slurm-wlm and munge (missing: {', '.join(absent)})"
                if absent else "the Slurm tests run slurmd, which needs root", "KHADEM_REQUIRE_SLURM")
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "logs"):
        (folder / sub).mkdir()
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    host = socket.gethostname()
    conf = folder / "slurm.conf"
    conf.write_text(_config(folder, host))
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    started: list[Path] = []
    try:
        _start(folder, conf, key, started)
        deadline = time.monotonic() + 30
        while True:
            state = subprocess.run(["sinfo", "--noheader", "--format", "%t"], capture_output=True, text=True,
                                   timeout=30).stdout.strip()
            if state == "idle":
                break
            if time.monotonic() > deadline:
                log = (folder / "slurmctld.log").read_text(errors="replace")[-800:]
                missing(f"the test's Slurm node did not come up (sinfo: {state!r}): {log}",
                        "KHADEM_REQUIRE_SLURM")
            time.sleep(0.2)
        yield SlurmCluster(conf, folder / "logs")
    except subprocess.CalledProcessError as exc:
        missing(f"could not start the test's Slurm cluster: {exc.cmd[0]}: {exc.stderr.decode().strip()}",
                "KHADEM_REQUIRE_SLURM")
    finally:
        subprocess.run(["scancel", "--full", "--user=root"], capture_output=True, timeout=30)
        _stop(started)
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
