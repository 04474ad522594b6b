"""Workers launched from the notebook onto other machines: over SSH to a real sshd in a network
namespace (``ssh_host``), and as batch jobs of a real Slurm cluster (``slurm_cluster``). The
launched workers run shipped notebook code, stop with the session or the queue that launched
them, and every way a launch fails is a ``LaunchError`` with the launcher's own message."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import driver_config
from jobs import Counts, Echo, ReadsEnvironment, Sleep
from procs import env, wait_until
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401 - the session fixture
from ssh_host import SshHost, ssh_host  # noqa: F401 - the session fixture

import khadem_nb as kn
from khadem_nb import ConfigError
from khadem_nb.errors import LaunchError

SECRET = "a launch secret of sixteen+ bytes"


def notebook(folder: Path, body: str, timeout: float = 180) -> list[str]:
    """Run ``body`` as a notebook's code would run (``__main__``, its functions shipped) in a
    process of its own; the lines it printed."""
    folder.mkdir(exist_ok=True)
    script = folder / "main.py"
    script.write_text(textwrap.dedent(body))
    run = subprocess.run([sys.executable, str(script)], cwd=folder, capture_output=True, text=True,
                         timeout=timeout, env={**env(), "KHADEM_SECRET": SECRET})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return run.stdout.splitlines()


SSH_SWEEP = """
    import json, sys
    import khadem_nb as kn

    q = kn.Queue({url!r}, ship_code=True)
    scale = 3

    @q.job
    def train(lr: float) -> dict:
        import socket
        return {{"score": lr * scale, "host": socket.gethostname()}}

    launched = q.launch(2, on={target!r}, python=sys.executable, concurrency=2, **{options!r})
    print(json.dumps([[w.launcher, w.host, w.state] for w in launched]))
    g = train.map([{{"lr": lr}} for lr in (0.1, 0.2, 0.3, 0.4)])
    print(json.dumps(sorted(g.wait(timeout=120).results()["score"].round(3).tolist())))
    import time
    for _ in range(200):  # a worker writes its entry every 5 s
        seen = q.workers().set_index("name").loc[[w.name for w in launched]]
        if seen["jobs_done"].sum() == 4:
            break
        time.sleep(0.1)
    print(json.dumps(sorted(seen["launcher"].tolist())), int(seen["jobs_done"].sum()))
    print(json.dumps(sorted(w.name for w in launched)))
    q.close()
"""


def test_ssh_workers_run_shipped_notebook_code_and_stop_with_the_session(
        ssh_host: SshHost, tmp_path: Path) -> None:  # noqa: F811
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    body = SSH_SWEEP.format(url=url, target=ssh_host.target, options=ssh_host.options)
    out = notebook(tmp_path / "nb", body)
    assert json.loads(out[0]) == [["ssh", ssh_host.address, "running"]] * 2
    assert json.loads(out[1]) == [0.3, 0.6, 0.9, 1.2]
    assert out[2] == '["ssh", "ssh"] 4'
    names = json.loads(out[3])
    q = kn.Queue(url)
    try:  # each worker left the queue's workers when its session closed: it stopped gracefully
        assert not set(names) & set(q.workers()["name"])
    finally:
        q.close()


def test_ssh_launch_failures_say_what_the_launcher_said(ssh_host: SshHost, tmp_path: Path) -> None:  # noqa: F811
    q = kn.Queue(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        with pytest.raises(LaunchError, match=r"no answer within 2s|OSError|unreachable"):
            q.launch(on=f"ssh://root@{ssh_host.here.rsplit('.', 1)[0]}.77", connect_timeout=2,
                     **ssh_host.options)
        stranger = tmp_path / "stranger"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
        with pytest.raises(LaunchError, match="PermissionDenied"):
            q.launch(on=ssh_host.target, ssh_options={"client_keys": [str(stranger)],
                                                       "known_hosts": str(ssh_host.known_hosts)})
        (tmp_path / "empty").write_text("")
        with pytest.raises(LaunchError, match="HostKeyNotVerifiable"):
            q.launch(on=ssh_host.target, ssh_options={"client_keys": [str(ssh_host.client_key)],
                                                       "known_hosts": str(tmp_path / "empty")})
        no_python = r"(?s)status 127 at start.*/no/such/python3: (No such|not found)"
        with pytest.raises(LaunchError, match=no_python):
            q.launch(on=ssh_host.target, python="/no/such/python3", **ssh_host.options)
        failed = q.workers()
        assert list(failed["state"]) == ["failed"] and list(failed["launcher"]) == ["ssh"]
        assert "/no/such/python3" in failed["output"].iloc[0]  # its last output lines
    finally:
        q.close()


def test_a_queue_the_remote_machine_cannot_reach_is_reported(
        ssh_host: SshHost, tmp_path: Path) -> None:  # noqa: F811
    section = driver_config("redis", tmp_path)["queue"]
    # 127.0.0.1 there is the other machine's own loopback, where nothing listens
    q = kn.Queue(f"{section['url']}?prefix={section['prefix']}")
    try:
        unreachable = r"(?s)exited with status 1 at start.*(Connection refused|connect)"
        with pytest.raises(LaunchError, match=unreachable):
            q.launch(on=ssh_host.target, python=sys.executable, timeout=60, **ssh_host.options)
    finally:
        q.run(q.manager.driver.purge())
        q.close()


def test_bad_launch_input_is_a_config_error(tmp_path: Path) -> None:
    q = kn.Queue(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        with pytest.raises(ConfigError, match="unknown launcher 'k8s'; valid: local, ssh://"):
            q.launch(on="k8s")
        with pytest.raises(ConfigError, match="ssh://"):
            q.launch(on="ssh://")
        with pytest.raises(ConfigError, match="port"):
            q.launch(on="ssh://host:99999")
        with pytest.raises(ConfigError, match="workers must be between 1"):
            q.launch(0)
        with pytest.raises(ConfigError, match="workers"):
            q.launch(-2)
        with pytest.raises(ConfigError, match="the local launcher takes no option partition"):
            q.launch(partition="gpu")
        with pytest.raises(ConfigError, match=r"unknown Slurm option\(s\) colour; valid: account"):
            q.launch(on="slurm", colour="blue")
        with pytest.raises(ConfigError, match="cpus must be a positive integer"):
            q.launch(on="slurm", cpus=0)
        with pytest.raises(ConfigError, match="sbatch takes a list of long options"):
            q.launch(on="slurm", sbatch="--qos=high")
        with pytest.raises(ConfigError, match="env is a mapping"):
            q.launch(env=42)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="concurrency must be between 1 and 10000, got 0"):
            q.launch(concurrency=0)
    finally:
        q.close()


def _slurm_queue(tmp_path: Path) -> kn.Queue:
    return kn.Queue(f"sqlite:///{tmp_path / 'runs.db'}")


def test_slurm_workers_run_jobs_and_are_cancelled_with_the_queue(
        slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    q = _slurm_queue(tmp_path)
    try:
        launched = q.launch(2, on="slurm", imports=["jobs"], env={"PYTHONPATH": env()["PYTHONPATH"]},
                            cpus=1, time="00:10:00", logs=str(slurm_cluster.logs))
        assert {w.launcher for w in launched} == {"slurm"} and all(w.job_id for w in launched)
        assert sorted(job for job, _ in slurm_cluster.jobs()) == sorted(w.job_id for w in launched)
        ids = [q.run(q.manager.dispatch(Echo(i))) for i in range(10)]
        assert [r.result for r in q.run(q.manager.wait(ids, timeout=60))] == list(range(10))
        assert set(q.workers().set_index("name").loc[[w.name for w in launched], "launcher"]) == {"slurm"}
        assert "worker" in (slurm_cluster.logs / f"{launched[0].name}.log").read_text()  # the job's output
    finally:
        q.close()
    assert slurm_cluster.jobs() == []  # scancel'led with the queue, each worker stopped gracefully


def test_slurm_preemption_reaches_the_worker_and_the_job_resumes_from_its_checkpoint(
        slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    log = tmp_path / "steps.log"
    q = _slurm_queue(tmp_path)
    try:
        job_id = q.run(q.manager.dispatch(Counts(str(log), steps=200, pause=0.02)))
        options = {"imports": ["jobs"], "env": {"PYTHONPATH": env()["PYTHONPATH"]},
                   "logs": str(slurm_cluster.logs)}
        first = q.launch(on="slurm", **options)[0]
        def step() -> int:
            return int((q.run(q.manager.get_job(job_id)).meta.get("checkpoint") or {}).get("step", 0))
        wait_until(lambda: step() >= 40)
        subprocess.run(["scancel", "--signal=USR1", "--batch", first.job_id], check=True, timeout=30)
        wait_until(lambda: first.state == "gone", timeout=60)  # the warning stopped it gracefully
        given_back = q.run(q.manager.get_job(job_id))
        assert given_back.status is kn.JobStatus.QUEUED and given_back.attempt == 0
        q.launch(on="slurm", **options)
        done = q.run(q.manager.wait([job_id], timeout=90))[0]
        assert done.status is kn.JobStatus.COMPLETED and done.attempt == 1  # the preemption spent none
        steps = [int(line) for line in log.read_text().split()]
        assert sorted(set(steps)) == list(range(1, 201)) and len(steps) < 200 + 10  # resumed, not redone
    finally:
        q.close()


def test_slurm_launch_failures_say_what_slurm_said(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    q = _slurm_queue(tmp_path)
    try:
        with pytest.raises(LaunchError, match=r"sbatch refused the worker's job: .*[Ii]nvalid partition"):
            q.launch(on="slurm", partition="no-such-partition", logs=str(slurm_cluster.logs))
        with pytest.raises(LaunchError, match=r"(?s)exited at start.*no_such_module_here"):
            q.launch(on="slurm", imports=["no_such_module_here"], logs=str(slurm_cluster.logs))
        assert list(q.workers()["state"]) == ["failed"]
    finally:
        q.close()
    assert slurm_cluster.jobs() == []


def test_autoscaling_on_slurm_submits_for_the_backlog_and_lets_idle_jobs_end(
        slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    q = _slurm_queue(tmp_path)
    try:
        ids = [q.run(q.manager.dispatch(Sleep(1.0, tag=str(i)))) for i in range(4)]
        scaler = q.autoscale(on="slurm", max=2, idle_timeout=1, imports=["jobs"], interval=0.5,
                             env={"PYTHONPATH": env()["PYTHONPATH"]}, logs=str(slurm_cluster.logs))
        assert scaler is not None
        done = q.run(q.manager.wait(ids, timeout=120))
        assert all(r.status is kn.JobStatus.COMPLETED for r in done)
        assert set(q.workers()["launcher"]) == {"slurm"}
        wait_until(lambda: slurm_cluster.jobs() == [], timeout=60)  # retired once idle: the jobs ended
    finally:
        q.close()


ENV_CHECK = """
    import json, sys
    sys.path.insert(0, {notebook_site!r})
    import khadem_probe  # version 1.0 here; the workers' PYTHONPATH finds 2.0 first
    import khadem_nb as kn
    from khadem_nb.errors import LaunchError

    q = kn.Queue({{"queue": {{"url": {url!r}, "strict_versions": {strict!r}}}}})
    try:
        q.launch(1, env={{"PYTHONPATH": {worker_site!r}}})
        print(json.dumps(q.workers()["env_diff"].tolist()))
    except LaunchError as exc:
        print(json.dumps(str(exc)))
    q.close()
"""


def _probe(site: Path, version: str) -> None:
    (site / "khadem_probe").mkdir(parents=True)
    (site / "khadem_probe" / "__init__.py").write_text("")
    info = site / f"khadem_probe-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: khadem-probe\nVersion: {version}\n")
    (info / "top_level.txt").write_text("khadem_probe\n")


@pytest.mark.parametrize("strict", [False, True])
def test_a_launched_worker_names_the_packages_that_differ_and_strict_versions_refuses(
        tmp_path: Path, strict: bool) -> None:
    _probe(tmp_path / "notebook-site", "1.0")
    _probe(tmp_path / "worker-site", "2.0")
    body = ENV_CHECK.format(notebook_site=str(tmp_path / "notebook-site"),
                            worker_site=str(tmp_path / "worker-site"),
                            url=f"sqlite:///{tmp_path / 'runs.db'}", strict=strict)
    said = json.loads(notebook(tmp_path / "nb", body)[0])
    if strict:
        assert "exited with status 1 at start" in said
        assert "strict_versions is on: khadem-probe 2.0 here, 1.0 in the notebook" in said
    else:
        assert said == ["khadem-probe 2.0 there, 1.0 here"]


def test_a_setup_command_runs_before_a_local_worker(tmp_path: Path) -> None:
    q = kn.Queue(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        setup = f"export PYTHONPATH={env()['PYTHONPATH']} KHADEM_SETUP_SAW=activated"
        q.launch(1, imports=["jobs"], env=setup)
        job_id = q.run(q.manager.dispatch(ReadsEnvironment("KHADEM_SETUP_SAW")))
        assert q.run(q.manager.wait([job_id], timeout=60))[0].result == "activated"
    finally:
        q.close()


def processes_naming(text: str) -> list[int]:
    """The processes whose command line names ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
    return found


@pytest.mark.parametrize("phase", ["starting", "registering"])
def test_a_cancelled_launch_leaves_nothing_running(tmp_path: Path, phase: str) -> None:
    """Cancelled while its processes start (in a thread) or while they register, a launch stops
    what it started."""
    from khadem_nb.launchers import launch, spec_for

    q = kn.Queue(f"sqlite:///{tmp_path / 'runs.db'}")
    spec = spec_for(q.settings, imports=["jobs"], env={"PYTHONPATH": env()["PYTHONPATH"]})

    async def cancel_while(phase: str) -> None:
        task = asyncio.ensure_future(launch(q.manager.driver, spec, 2, "local"))
        await asyncio.sleep(0.001)
        while phase == "registering" and len(processes_naming(str(tmp_path))) < 2:
            await asyncio.sleep(0.005)
        assert not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        q.run(cancel_while(phase))
        wait_until(lambda: processes_naming(str(tmp_path)) == [], timeout=30)
        assert "idle" not in set(q.workers()["state"])
    finally:
        q.close()


def test_a_detached_ssh_worker_outlives_its_session_until_retired(
        ssh_host: SshHost, tmp_path: Path) -> None:  # noqa: F811
    q = kn.Queue(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        [worker] = q.launch(1, on=ssh_host.target, python=sys.executable, detach=True, imports=["jobs"],
                            env={"PYTHONPATH": env()["PYTHONPATH"]}, **ssh_host.options)
        wait_until(lambda: worker.session.connection.is_closed(), timeout=30)  # the session ended
        assert worker.state == "running"
        job_id = q.run(q.manager.dispatch(Echo("still here")))
        assert q.run(q.manager.wait([job_id], timeout=60))[0].result == "still here"
        q.retire(worker.name)
        wait_until(lambda: worker.name not in set(q.workers()["name"]), timeout=30)  # it stopped
    finally:
        q.close()
