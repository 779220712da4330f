"""A job run as several SLURM tasks: `hydra.launcher.tasks_per_node=N` (or `srun --ntasks-per-node=N
python -m xferlab.train ...`) starts the same job N times per node, and the tasks share its one
embedding extraction as Lightning DDP ranks (gloo), each computing and writing its own blocks.

Task 0 leads: it checks the cache under the entry's lock, tells the others whether there is
anything to extract (and where the entry is being written), trains the head and writes the
results. The other tasks only extract, then end. The tasks join one process group when the job
starts; a task that dies closes its connections, so the others fail at once instead of waiting.
"""

from __future__ import annotations

import datetime
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch.distributed as dist
from lightning.fabric.plugins.environments import SLURMEnvironment

# how long tasks wait for each other to start; once joined they wait on each other without a limit
# of their own (task 0 may import a store or wait for another job's extraction for hours): a task
# that stops closes its connections, and that ends the wait at once
RENDEZVOUS = datetime.timedelta(minutes=10)
JOINED = datetime.timedelta(days=7)


class TasksError(RuntimeError):
    """The job's SLURM tasks cannot work together as configured."""


@dataclass(frozen=True)
class JobTasks:
    rank: int  # SLURM_PROCID
    world: int  # tasks of the job step
    per_node: int
    nodes: int
    address: str
    port: int

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"task {self.rank} of {self.world}"


def job_tasks(environ: Mapping[str, str] | None = None) -> JobTasks | None:
    """The job's tasks when it runs as several tasks of one SLURM step, else None (one process:
    a local run, or a SLURM job of one task). Only `srun` sets SLURM_STEP_NUM_TASKS: a batch
    script that asked for several tasks but runs Python once is one process."""
    env = os.environ if environ is None else environ
    if env.get("SLURM_JOB_NAME") in ("bash", "interactive") or "SLURM_PROCID" not in env:
        return None
    world = int(env.get("SLURM_STEP_NUM_TASKS", "1"))
    if world <= 1:
        return None
    nodes = int(env.get("SLURM_STEP_NUM_NODES", env.get("SLURM_NNODES", "1")))
    per_node = env.get("SLURM_NTASKS_PER_NODE")
    if per_node is None or int(per_node) * nodes != world:
        raise TasksError(
            f"this job runs as {world} SLURM tasks on {nodes} node(s) without the same number on every node "
            f"(SLURM_NTASKS_PER_NODE={per_node}): start them with --ntasks-per-node "
            "(hydra.launcher.tasks_per_node=N with hydra/launcher=slurm or slurm_cpu)")
    first = SLURMEnvironment.resolve_root_node_address(env.get("SLURM_STEP_NODELIST",
                                                               env.get("SLURM_NODELIST", "127.0.0.1")))
    job = env.get("SLURM_JOB_ID", "0")
    port = int(env.get("MASTER_PORT", 15000 + int(job[-4:] or 0)))  # Lightning's SLURM rule
    return JobTasks(rank=int(env["SLURM_PROCID"]), world=world, per_node=int(per_node), nodes=nodes,
                    address=env.get("MASTER_ADDR", first), port=port)


def check_devices(tasks: JobTasks | None, devices: int | str) -> None:
    """`extract.devices` must leave the ranks to SLURM when the job runs as several tasks."""
    if tasks is not None and int(devices) not in (1, tasks.per_node):
        raise TasksError(
            f"extract.devices={devices} but this job runs as {tasks.per_node} SLURM task(s) per node, and its tasks "
            f"are the extraction's ranks: leave extract.devices at 1 (or set it to {tasks.per_node})")


@contextmanager
def joined(tasks: JobTasks | None, rendezvous: datetime.timedelta = RENDEZVOUS) -> Iterator[JobTasks | None]:
    """The job's tasks in one gloo process group for the duration of the job (nothing to do for one
    process). Leaving it (also on an error) closes this task's connections."""
    if tasks is None or dist.is_initialized():
        yield tasks
        return
    try:
        store = dist.TCPStore(tasks.address, tasks.port, tasks.world, is_master=tasks.leader, timeout=rendezvous,
                              wait_for_workers=True)
    except (RuntimeError, OSError) as err:
        raise TasksError(
            f"{tasks.describe()}: the job's other tasks did not join at {tasks.address}:{tasks.port} within "
            f"{rendezvous}: {err}. Another program may hold that port (set MASTER_PORT), or a task failed to "
            "start: see its log") from err
    dist.init_process_group("gloo", store=store, rank=tasks.rank, world_size=tasks.world, timeout=JOINED)
    plain = logging.getLogRecordFactory()

    def labelled(*args, **kwargs) -> logging.LogRecord:  # the tasks share the job's log file
        record = plain(*args, **kwargs)
        record.msg = f"[task {tasks.rank}] {record.msg}"
        return record

    logging.setLogRecordFactory(labelled)
    try:
        yield tasks
    finally:
        logging.setLogRecordFactory(plain)
        dist.destroy_process_group()


def announce(value: Any) -> None:
    """Task 0 tells the others `value` (every task 0 path through the extraction calls this once)."""
    dist.broadcast_object_list([value], src=0)


def receive(tasks: JobTasks) -> Any:
    """What task 0 announced; a clear error when it stopped first."""
    box = [None]
    try:
        dist.broadcast_object_list(box, src=0)
    except RuntimeError as err:
        raise TasksError(f"{tasks.describe()}: task 0 of this job stopped before the extraction ({err}); "
                         "its log says why") from err
    return box[0]


def wait_for_all(tasks: JobTasks, what: str) -> None:
    try:
        dist.barrier()
    except RuntimeError as err:
        raise TasksError(f"{tasks.describe()}: another task of this job stopped during {what} ({err}); "
                         "its log says why") from err
