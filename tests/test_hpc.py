"""The hpc/ Slurm scripts, submitted with sbatch to a real single-node Slurm started here.

The fixture starts munged, slurmctld and slurmd (Debian's packages; `.ci/run` installs them)
on free ports with a slurm.conf in a temp dir, and stops them at the end. All jobs are
submitted at once (the partition lets 4 jobs share a core) so they run side by side; each test
then waits for its own: the single job, the array + merge of hpc/submit.sh, a job cancelled
mid-run and submitted again (the path of a Slurm time limit: SIGTERM, then SIGKILL), and a job
that requeues itself on the USR1 of `--signal=B:USR1@...` and resumes. Needs root (Slurm's
daemons); skips otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import TINY_COMBINATIONS as N_COMBINATIONS
from conftest import TINY_CONFIG as TINY
from conftest import slow_shim

from splitnet.results import read_rows

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
HPC = REPO / "hpc"
VENV = Path(sys.executable).parent.parent
JOB_TIMEOUT = 150  # seconds; a job takes ~5-30 s, longer on a loaded machine


# Loaded into each rank through PYTHONPATH: a pause after each results write, so that a test can
# catch the job mid-run (the rows are unchanged; without it 18 combinations take about a second).
SLOW_SHIM = slow_shim(0.3)


def _skip_reason() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root to run Slurm's daemons (slurmctld, slurmd, munged); .ci/run runs as root"
    missing = [
        p
        for p in ("slurmctld", "slurmd", "munged", "sbatch", "scontrol", "sinfo")
        if shutil.which(p) is None
    ]
    if missing:
        return (
            f"Slurm is not installed (no {', '.join(missing)}): apt-get install slurmctld "
            "slurmd slurm-client munge (.ci/run does)"
        )
    if not Path("/etc/munge/munge.key").exists():
        return "no /etc/munge/munge.key (the munge package creates it)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError as e:
        return f"({path}: {e.strerror})"


class Slurm:
    """A running single-node cluster: run its commands, submit, wait, explain failures."""

    def __init__(self, root: Path, env: dict):
        self.root, self.env = root, env
        self.logs = root / "logs"

    def cmd(self, *args, check=True, env=None, timeout=60) -> subprocess.CompletedProcess:
        p = subprocess.run(
            args,
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**self.env, **(env or {})},
            timeout=timeout,
        )
        if check and p.returncode != 0:
            raise AssertionError(
                f"{' '.join(map(str, args))} exited {p.returncode}\n"
                f"{p.stdout}\n{p.stderr}\n{self.diagnostics()}"
            )
        return p

    def sbatch(self, *args, env=None) -> str:
        return self.cmd("sbatch", "--parsable", *args, env=env).stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict:
        out = self.cmd("scontrol", "show", "job", "-o", job_id, check=False).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out.splitlines()[0])) if out.strip() else {}

    def wait(
        self,
        job_id: str,
        until=(
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
            "PREEMPTED",
        ),
        timeout=JOB_TIMEOUT,
        log: Path | None = None,
    ) -> dict:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            info = self.job(job_id)
            if info.get("JobState") in until:
                return info
            time.sleep(0.2)
        raise AssertionError(
            f"job {job_id} not in {until} after {timeout} s: {self.job(job_id)}"
            f"\n{self.diagnostics(log)}"
        )

    def diagnostics(self, *logs: Path | None) -> str:
        parts = [f"--- {p} ---\n{_tail(p)}" for p in logs if p is not None]
        parts.append(
            "--- squeue ---\n"
            + subprocess.run(["squeue", "-a"], capture_output=True, text=True, env=self.env).stdout
        )
        parts.append(f"--- slurmctld.log ---\n{_tail(self.logs / 'slurmctld.log', 25)}")
        parts.append(f"--- slurmd.log ---\n{_tail(self.logs / 'slurmd.log', 25)}")
        return "\n".join(parts)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("slurm")
    for d in ("state", "spool", "logs"):
        (root / d).mkdir()
    # munged runs as user munge and insists on a socket dir it owns, traversable by all
    # (pytest's tmp dirs are root-only): its own dir under /tmp, and its own socket, so it
    # never touches a munged that the machine may already run.
    mdir = Path(tempfile.mkdtemp(prefix="splitnet-munge-"))
    shutil.chown(mdir, "munge", "munge")
    mdir.chmod(0o711)
    sock = mdir / "munge.sock"
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=pytest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
MailProg=/bin/true
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/logs/slurmctld.log
SlurmdLogFile={root}/logs/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
KillWait=5
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
    env.pop("PYTHONPATH", None)
    env.update(SLURM_CONF=str(conf), SPLITNET_VENV=str(VENV))
    daemons = []
    try:
        daemons.append(
            subprocess.Popen(
                [
                    "munged",
                    "-F",
                    f"--socket={sock}",
                    f"--pid-file={mdir}/munged.pid",
                    f"--seed-file={mdir}/munged.seed",
                    f"--log-file={mdir}/munged.log",
                ],
                user="munge",
                group="munge",
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        t0 = time.monotonic()
        while not sock.exists() and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        daemons.append(
            subprocess.Popen(
                ["slurmctld", "-D", "-c", "-f", str(conf)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
        )
        daemons.append(
            subprocess.Popen(
                ["slurmd", "-D", "-f", str(conf)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
        )
        cluster = Slurm(root, env)
        t0 = time.monotonic()
        state, dead = "", []
        while time.monotonic() - t0 < 30 and state != "idle" and not dead:
            time.sleep(0.2)
            state = cluster.cmd("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
            dead = [d.args[0] for d in daemons if d.poll() is not None]
        if state != "idle":
            pytest.fail(
                f"Slurm did not come up (sinfo: {state!r}, exited: {dead}; "
                f"munged log: {_tail(mdir / 'munged.log', 10)})\n{cluster.diagnostics()}"
            )
        yield cluster
        subprocess.run(["scancel", "--user=root"], env=env, capture_output=True)
        t0 = time.monotonic()
        while (
            time.monotonic() - t0 < 15
            and subprocess.run(
                ["squeue", "-h"], env=env, capture_output=True, text=True
            ).stdout.strip()
        ):
            time.sleep(0.2)
    finally:
        for d in reversed(daemons):
            d.terminate()
        for d in reversed(daemons):
            try:
                d.wait(timeout=15)
            except subprocess.TimeoutExpired:
                d.kill()
                d.wait()
        shutil.rmtree(mdir, ignore_errors=True)


def _squeue_state(slurm, job_id: str) -> str:
    """squeue's short state (PD, R, CG, ...); "" once the job has left the queue for good."""
    return slurm.cmd("squeue", "-h", "-j", job_id, "-o", "%t", check=False).stdout.strip()


def _wait_first_rows(slurm, job_id: str, path: Path, log: Path) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < JOB_TIMEOUT:
        if read_rows(path):
            return
        state = slurm.job(job_id).get("JobState")
        if state not in ("PENDING", "RUNNING", "CONFIGURING"):
            raise AssertionError(
                f"job {job_id} {state} before writing a row\n{slurm.diagnostics(log)}"
            )
        time.sleep(0.05)
    raise AssertionError(f"job {job_id}: no rows after {JOB_TIMEOUT} s\n{slurm.diagnostics(log)}")


def _kill_and_resubmit(slurm, job: str, d: Path, config: Path) -> tuple[int, str]:
    """Cancel ``job`` after its first rows, tear its last line, submit the same command again."""
    out, log = d / "tiny.jsonl", _log(d, job)
    _wait_first_rows(slurm, job, out, log)
    slurm.cmd("scancel", job)  # what a time limit does: SIGTERM, KillWait, SIGKILL
    t0 = time.monotonic()
    while _squeue_state(slurm, job) and time.monotonic() - t0 < 60:  # until no process is left
        time.sleep(0.2)
    state = slurm.job(job).get("JobState")
    assert state == "CANCELLED", f"job {job} {state}, not CANCELLED\n{slurm.diagnostics(log)}"
    before = len(read_rows(out))
    with open(out, "ab") as f:  # a kill in the middle of a write leaves a torn line
        f.write(b'{"accuracy": 0.5, "combination": 1')
    again = slurm.sbatch(
        "--ntasks=2",
        f"--output={d}/job-%j.out",
        str(HPC / "enumerate.sbatch"),
        str(config),
        "--chunk",
        "1",
        env={"SPLITNET_RESULTS": str(d)},
    )
    return before, again


def _signal_requeue_release(slurm, job: str, d: Path) -> int:
    """USR1 to the batch shell after the first rows (as --signal=B:USR1@T does); once requeued,
    release it at once (Slurm holds a requeued job ~2 minutes)."""
    out, log = d / "tiny.jsonl", _log(d, job)
    _wait_first_rows(slurm, job, out, log)
    slurm.cmd("scancel", "--batch", "--signal=USR1", job)
    t0 = time.monotonic()
    info: dict = {}
    while time.monotonic() - t0 < 60:
        info = slurm.job(job)
        if info.get("Restarts") == "1" and _squeue_state(slurm, job) == "PD":
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"job {job} did not requeue: {info}\n{slurm.diagnostics(log)}")
    before = len(read_rows(out))
    # Requeueing revokes the job's credential with a 1-second-resolution timestamp; a restart in
    # that same second gets "Job credential revoked" and FAILS (seen in CI). Slurm's own ~2 min
    # hold avoids it; releasing early, wait out the second first.
    time.sleep(2.5)
    slurm.cmd("scontrol", "update", f"jobid={job}", "StartTime=now")
    return before


@pytest.fixture(scope="module")
def jobs(slurm, tmp_path_factory):
    """Submit every test's jobs at once; threads catch the kill/requeue jobs mid-run."""
    root = tmp_path_factory.mktemp("jobs")
    config = root / "tiny.toml"
    config.write_text(TINY)
    shim = root / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SLOW_SHIM)
    d = {name: root / name for name in ("single", "array", "kill", "requeue")}
    for p in d.values():
        p.mkdir()
    out = {"root": root, "config": config, "dirs": d}

    out["single"] = slurm.sbatch(
        "--ntasks=2",
        f"--output={d['single']}/job-%j.out",
        str(HPC / "enumerate.sbatch"),
        str(config),
        env={"SPLITNET_RESULTS": str(d["single"])},
    )
    p = slurm.cmd(
        str(HPC / "submit.sh"),
        str(config),
        "3",
        env={"SPLITNET_RESULTS": str(d["array"]), "SPLITNET_LOGDIR": str(d["array"] / "logs")},
    )
    m = re.search(r"array job (\d+) .*merge job (\d+)", p.stdout)
    assert m, f"hpc/submit.sh printed no job ids:\n{p.stdout}\n{p.stderr}"
    out["array"], out["merge"], out["submit_stdout"] = m.group(1), m.group(2), p.stdout
    for name in ("kill", "requeue"):  # --chunk 1 and the shim: rows come one by one, slowly
        out[name] = slurm.sbatch(
            "--ntasks=1",
            f"--output={d[name]}/job-%j.out",
            str(HPC / "enumerate.sbatch"),
            str(config),
            "--chunk",
            "1",
            env={"SPLITNET_RESULTS": str(d[name]), "PYTHONPATH": str(shim)},
        )
    pool = ThreadPoolExecutor(2)
    out["kill_future"] = pool.submit(_kill_and_resubmit, slurm, out["kill"], d["kill"], config)
    out["requeue_future"] = pool.submit(
        _signal_requeue_release, slurm, out["requeue"], d["requeue"]
    )
    yield out
    pool.shutdown(wait=True, cancel_futures=True)


def _log(directory: Path, job_id: str) -> Path:
    return directory / f"job-{job_id}.out"


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _check_complete(path: Path, diag: str = "") -> list[dict]:
    rows = read_rows(path)
    combos = [r["combination"] for r in rows]
    assert sorted(combos) == list(range(N_COMBINATIONS)), (
        f"{path}: combinations {combos}, want each of 0..{N_COMBINATIONS - 1} once\n{diag}"
    )
    assert len({r["config_hash"] for r in rows}) == 1, f"{path}: several config_hash values"
    return sorted(rows, key=lambda r: r["combination"])


def _wait_ok(slurm, job_id, log) -> None:
    info = slurm.wait(job_id, log=log)
    assert info["JobState"] == "COMPLETED" and info.get("ExitCode") == "0:0", (
        f"job {job_id}: {info.get('JobState')} exit {info.get('ExitCode')}\n"
        f"{slurm.diagnostics(log)}"
    )


@pytest.fixture(scope="module")
def single_rows(slurm, jobs):
    log = _log(jobs["dirs"]["single"], jobs["single"])
    _wait_ok(slurm, jobs["single"], log)
    return _check_complete(jobs["dirs"]["single"] / "tiny.jsonl", slurm.diagnostics(log))


def test_single_job_enumerates_every_combination_once(single_rows):
    assert len(single_rows) == N_COMBINATIONS


def test_array_and_merge_equal_the_single_job(slurm, jobs, single_rows):
    d = jobs["dirs"]["array"]
    log = d / "logs" / f"splitnet-merge-{jobs['merge']}.out"
    _wait_ok(slurm, jobs["merge"], log)
    for t in range(3):
        task_log = d / "logs" / f"splitnet-shard-{jobs['array']}_{t}.out"
        assert (d / f"tiny.shard-{t}-of-3.jsonl").exists(), slurm.diagnostics(task_log)
    merged = _check_complete(d / "tiny.jsonl", slurm.diagnostics(log))
    assert _strip(merged) == _strip(single_rows)
    assert "complete: 18 combinations" in log.read_text()


def test_cancelled_job_resumes_when_submitted_again(slurm, jobs, single_rows):
    d = jobs["dirs"]["kill"]
    before, again = jobs["kill_future"].result(timeout=JOB_TIMEOUT)
    assert 1 <= before < N_COMBINATIONS, f"{before} rows: the job was not caught mid-run"
    _wait_ok(slurm, again, _log(d, again))
    rows = _check_complete(d / "tiny.jsonl", slurm.diagnostics(_log(d, again)))
    assert _strip(rows) == _strip(single_rows)


def test_job_requeues_itself_on_usr1_and_resumes(slurm, jobs, single_rows):
    d, job = jobs["dirs"]["requeue"], jobs["requeue"]
    log = _log(d, job)
    before = jobs["requeue_future"].result(timeout=JOB_TIMEOUT)
    assert 1 <= before < N_COMBINATIONS, f"{before} rows: the job was not caught mid-run"
    _wait_ok(slurm, job, log)
    assert "requeueing" in log.read_text()
    rows = _check_complete(d / "tiny.jsonl", slurm.diagnostics(log))
    assert _strip(rows) == _strip(single_rows)


def test_merge_names_the_incomplete_shards(slurm, jobs, single_rows, tmp_path):
    # Shards 0 and 2 of 3 as the array would write them; shard 1 never ran.
    for t in (0, 2):
        lo, hi = N_COMBINATIONS * t // 3, N_COMBINATIONS * (t + 1) // 3
        with open(tmp_path / f"tiny.shard-{t}-of-3.jsonl", "w") as f:
            for r in single_rows[lo:hi]:
                f.write(json.dumps(r) + "\n")
    env = {**slurm.env, "SPLITNET_RESULTS": str(tmp_path)}
    p = subprocess.run(
        ["bash", str(HPC / "merge.sbatch"), str(jobs["config"])],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 1, p.stdout + p.stderr
    assert "shard 1/3: 6 of 6 rows missing" in p.stderr, p.stderr
    assert (
        "sbatch --array=1 --export=ALL,SPLITNET_SHARDS=3 hpc/enumerate_array.sbatch" in p.stderr
    ), p.stderr
    assert len(read_rows(tmp_path / "tiny.jsonl")) == 12  # what there is, merged
