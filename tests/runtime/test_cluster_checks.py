"""The check before a SLURM sweep is submitted, against stand-in `sinfo` / `sbatch` commands (the
real cluster: tests/test_slurm.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from xferlab.runtime.cluster_checks import partitions, slurm_problems


def launcher(**keys) -> "OmegaConf":
    base = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
            "partition": None, "gpus_per_node": None}
    return OmegaConf.create({"hydra": {"launcher": {**base, **keys}}})


def stand_ins(folder: Path, sinfo: str, monkeypatch) -> None:
    folder.mkdir()
    for name, body in (("sinfo", sinfo), ("sbatch", "exit 1")):
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))


def test_partitions_default_and_gpus_come_from_sinfo(tmp_path, monkeypatch):
    stand_ins(tmp_path / "bin", "printf 'cpu*|(null)\\ngpu|gpu:a100:4\\ngpu|(null)\\n'", monkeypatch)
    assert partitions() == ({"cpu": False, "gpu": True}, "cpu")
    assert slurm_problems(launcher(partition="gpu", gpus_per_node=1)) == []
    assert slurm_problems(launcher(gpus_per_node=None)) == []  # the default partition, CPU jobs
    assert "gpus_per_node=1 but partition cpu has no GPUs" in slurm_problems(launcher(gpus_per_node=1))[0]
    assert "not a partition of this cluster; its partitions: ['cpu', 'gpu']" in \
        slurm_problems(launcher(partition="big"))[0]


def test_no_controller_and_no_commands_are_one_line_each(tmp_path, monkeypatch):
    stand_ins(tmp_path / "bin", "echo 'sinfo: error: Unable to contact slurm controller (connect failure)' >&2; exit 1",
              monkeypatch)
    (problem,) = slurm_problems(launcher(partition="debug"))
    assert problem.startswith("hydra/launcher=slurm: no SLURM cluster answers (sinfo: sinfo: error: Unable to contact")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    (problem,) = slurm_problems(launcher(partition="debug"))
    assert "SLURM's client commands (sinfo, sbatch) are not on this machine's PATH" in problem


def test_other_launchers_are_not_asked(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    joblib = OmegaConf.create({"hydra": {"launcher": {"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher"}}})
    assert slurm_problems(joblib) == []


@pytest.mark.parametrize("launcher_name,gpus", [("slurm", 1), ("slurm_cpu", None)])
def test_the_slurm_configs_compose(launcher_name, gpus):
    from tests.test_launchers import compose_with_hydra

    cfg = compose_with_hydra([f"hydra/launcher={launcher_name}"])
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.gpus_per_node == gpus
