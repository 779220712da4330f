"""A real one-node SLURM cluster for the tests: Debian's `slurm-wlm` and `munge`, started in a
temporary folder (its own munge key and socket, state and spool folders, ports), stopped by PID.

Installed with apt when missing and the tests run as root; otherwise the tests that need it skip,
saying why. `SLURM_CONF` points the client commands (sbatch, srun, scancel, squeue, submitit's
calls) at this cluster while it runs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scancel", "sinfo", "squeue")
PACKAGES = ("slurm-wlm", "munge")
PARTITION = "debug"


def missing_commands() -> list[str]:
    return [d for d in DAEMONS if shutil.which(d) is None and not Path(f"/usr/sbin/{d}").exists()]


def install() -> str | None:
    """Install the packages (root only); the reason when the cluster cannot run here."""
    if not missing_commands():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return (f"SLURM is not installed ({', '.join(missing_commands())} missing) and installing it needs root and "
                f"apt-get: apt-get install -y {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode:
            return f"{' '.join(command)} failed: {proc.stderr.strip()[-300:]}"
    return None if not missing_commands() else f"still missing after apt-get: {missing_commands()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class OneNodeCluster:
    """munged, slurmctld and slurmd in the foreground, as child processes of the test session."""

    def __init__(self, root: Path, cpus: int | None = None):
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        self.conf = self.root / "slurm.conf"
        self.processes: dict[str, subprocess.Popen] = {}

    def write_config(self) -> None:
        for folder in ("state", "spool"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        memory = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
        r = self.root
        self.conf.write_text(f"""ClusterName=xferlab-test
SlurmctldHost={self.host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
KillWait=5
AuthType=auth/munge
AuthInfo=socket={r}/munge.sock
CredType=cred/munge
NodeName={self.host} CPUs={self.cpus} RealMemory={memory} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)

    def start(self, timeout: float = 60) -> "OneNodeCluster":
        self.write_config()
        r = self.root
        self._spawn("munged", [sbin("munged"), "--force", "--foreground", f"--key-file={r}/munge.key",
                               f"--socket={r}/munge.sock", f"--log-file={r}/munged.log",
                               f"--pid-file={r}/munged.pid", f"--seed-file={r}/munged.seed"])
        self._wait(lambda: (r / "munge.sock").exists(), 10, "munged's socket")
        self._spawn("slurmctld", [sbin("slurmctld"), "-D", "-f", str(self.conf)])
        self._spawn("slurmd", [sbin("slurmd"), "-D", "-f", str(self.conf)])
        self._wait(lambda: self.node_state() == "idle", timeout, "the node to be idle")
        return self

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.root / f"{name}.out", "w")
        self.processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env())

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}
            if dead:
                raise RuntimeError(f"{dead} ended while waiting for {what}: {self.logs()}")
            if ready():
                return
            time.sleep(0.3)
        raise RuntimeError(f"timed out waiting for {what}: {self.logs()}")

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(list(command), env=self.env(), capture_output=True, text=True, timeout=timeout)

    def node_state(self) -> str:
        proc = self.run("sinfo", "-h", "-N", "-o", "%t", timeout=10)
        return proc.stdout.strip().rstrip("*~#")

    def jobs(self) -> list[str]:
        proc = self.run("squeue", "-h", "-o", "%i %t", timeout=10)
        return [line for line in proc.stdout.splitlines() if line.strip()]

    def wait_until_empty(self, timeout: float = 600) -> None:
        self._wait(lambda: not self.jobs(), timeout, "the queue to empty")

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}:\n" + "\n".join(path.read_text().splitlines()[-15:]))
        return "\n".join(parts)

    def cancel_all(self, timeout: float = 120) -> None:
        """Cancel every job and wait until the queue is empty: a job step whose controller is gone
        (a sweep returns once its results are written, before SLURM closes the step) would be left
        behind, waiting forever."""
        try:
            if self.jobs():
                self.run("scancel", f"--partition={PARTITION}")
                self.wait_until_empty(timeout)
        except (RuntimeError, subprocess.SubprocessError) as err:
            print(f"jobs of the test cluster may be left running: {err}")

    def stop(self) -> None:
        """Every daemon this cluster started, by PID: terminated, then killed if it lingers."""
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    why = install()
    if why:
        pytest.skip(why)
    cluster = OneNodeCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except RuntimeError as err:
        cluster.stop()
        pytest.skip(f"the one-node SLURM cluster did not start: {err}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.cancel_all()
        cluster.stop()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
