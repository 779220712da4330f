"""What a sweep sent to SLURM (`hydra/launcher=slurm`, `slurm_cpu`) needs from the cluster, checked
before anything is submitted: the client commands, a controller that answers, the partition, and
GPUs where the launcher asks for them. One line per problem, naming the setting and the fix."""

from __future__ import annotations

import shutil
import subprocess

from omegaconf import DictConfig, OmegaConf

SINFO_TIMEOUT_S = 30


def is_slurm_launcher(config: DictConfig) -> bool:
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
    return target.endswith("SlurmLauncher")


def partitions() -> tuple[dict[str, bool], str | None]:
    """(partition -> whether any of its nodes has a GPU, the default partition), from `sinfo`;
    raises RuntimeError with a message when no cluster answers."""
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P|%G"], capture_output=True, text=True, timeout=SINFO_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"sinfo did not answer within {SINFO_TIMEOUT_S} s") from err
    if proc.returncode:
        raise RuntimeError((proc.stderr or proc.stdout).strip().splitlines()[-1] if (proc.stderr or proc.stdout).strip()
                           else f"sinfo exited with status {proc.returncode}")
    found: dict[str, bool] = {}
    default = None
    for line in proc.stdout.splitlines():
        name, _, gres = line.strip().partition("|")
        if not name:
            continue
        if name.endswith("*"):
            name = name[:-1]
            default = name
        found[name] = found.get(name, False) or "gpu" in gres.lower()
    return found, default


def slurm_problems(config: DictConfig) -> list[str]:
    """The problems of submitting this sweep to SLURM (none when the launcher is not SLURM's)."""
    if not is_slurm_launcher(config):
        return []
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return ["hydra/launcher=slurm submits the jobs with sbatch, but SLURM's client commands (sinfo, sbatch) are not "
                "on this machine's PATH: run the sweep on a login node of the cluster, or use the local launcher"]
    try:
        found, default = partitions()
    except (RuntimeError, OSError) as err:
        return [f"hydra/launcher=slurm: no SLURM cluster answers (sinfo: {err}); check that the cluster's controller "
                "runs and that SLURM_CONF (or /etc/slurm/slurm.conf) points at it"]
    launcher = config.hydra.launcher
    partition = OmegaConf.select(launcher, "partition", default=None)
    chosen = partition or default
    if partition is not None and partition not in found:
        return [f"hydra.launcher.partition={partition} is not a partition of this cluster; its partitions: "
                f"{sorted(found)}"]
    if chosen is None:
        return [f"hydra/launcher=slurm: the cluster has no default partition; set hydra.launcher.partition to one of "
                f"{sorted(found)}"]
    gpus = OmegaConf.select(launcher, "gpus_per_node", default=None)
    if gpus and not found.get(chosen, False):
        return [f"hydra.launcher.gpus_per_node={gpus} but partition {chosen} has no GPUs (no gpu gres on its nodes): "
                "use hydra/launcher=slurm_cpu (CPU-only jobs) or set hydra.launcher.gpus_per_node=null"]
    return []
