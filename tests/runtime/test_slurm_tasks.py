"""A job run as several SLURM tasks: which tasks `srun` started, read from the variables it sets;
the tasks joining one process group, and failing at once (not waiting) when another stops."""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import xferlab
from xferlab.runtime.slurm_tasks import JobTasks, TasksError, check_devices, job_tasks, joined, receive

SRUN_2 = {"SLURM_JOB_ID": "123457", "SLURM_JOB_NAME": "train", "SLURM_PROCID": "1", "SLURM_NTASKS": "2",
          "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1",
          "SLURM_STEP_NODELIST": "node7"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_tasks_of_one_srun_step_are_read_from_its_variables():
    tasks = job_tasks(SRUN_2)
    assert tasks == JobTasks(rank=1, world=2, per_node=2, nodes=1, address="node7", port=15000 + 3457)
    assert not tasks.leader and job_tasks({**SRUN_2, "SLURM_PROCID": "0"}).leader
    ranged = job_tasks({**SRUN_2, "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NUM_NODES": "2",
                        "SLURM_STEP_NODELIST": "gpu[12-13]", "MASTER_PORT": "29500"})
    assert (ranged.address, ranged.port, ranged.nodes, ranged.world) == ("gpu12", 29500, 2, 4)


@pytest.mark.parametrize("env", [
    {},  # not under SLURM
    {**SRUN_2, "SLURM_STEP_NUM_TASKS": "1"},  # a job of one task
    {k: v for k, v in SRUN_2.items() if k != "SLURM_STEP_NUM_TASKS"},  # the batch script itself, no srun
    {**SRUN_2, "SLURM_JOB_NAME": "interactive"},  # an interactive allocation: the user starts processes
], ids=["local", "one-task", "batch-script", "interactive"])
def test_one_process_is_not_a_job_of_several_tasks(env):
    assert job_tasks(env) is None


def test_tasks_without_the_same_number_per_node_name_the_option_to_use():
    with pytest.raises(TasksError, match=r"--ntasks-per-node \(hydra.launcher.tasks_per_node=N"):
        job_tasks({k: v for k, v in SRUN_2.items() if k != "SLURM_NTASKS_PER_NODE"})


def test_extract_devices_must_leave_the_ranks_to_slurm():
    tasks = job_tasks(SRUN_2)
    check_devices(None, 4)  # one process: ddp_spawn over 4 devices
    check_devices(tasks, 1)
    check_devices(tasks, 2)
    with pytest.raises(TasksError, match=r"extract.devices=4 but this job runs as 2 SLURM task\(s\) per node"):
        check_devices(tasks, 4)


def test_a_task_whose_partners_never_start_says_so_after_the_rendezvous_time():
    tasks = JobTasks(rank=1, world=2, per_node=2, nodes=1, address="127.0.0.1", port=free_port())
    with pytest.raises(TasksError, match=r"task 1 of 2: the job's other tasks did not join at 127\.0\.0\.1:\d+"):
        with joined(tasks, rendezvous=datetime.timedelta(seconds=2)):
            pass


def test_a_task_waiting_on_task_0_fails_at_once_when_task_0_stops(tmp_path):
    """Task 0 joins and then dies (a config error, a killed process): the other task's wait ends with
    an error naming task 0, within seconds, not after the group's 7-day limit."""
    port = free_port()
    leader = textwrap.dedent(f"""
        from xferlab.runtime.slurm_tasks import JobTasks, joined
        with joined(JobTasks(rank=0, world=2, per_node=2, nodes=1, address="127.0.0.1", port={port})):
            raise SystemExit(3)
    """)
    src = str(Path(xferlab.__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-c", leader], env={**os.environ, "PYTHONPATH": src})
    tasks = JobTasks(rank=1, world=2, per_node=2, nodes=1, address="127.0.0.1", port=port)
    try:
        with joined(tasks):
            with pytest.raises(TasksError, match="task 1 of 2: task 0 of this job stopped before the extraction"):
                receive(tasks)
    finally:
        assert proc.wait(timeout=60) == 3
