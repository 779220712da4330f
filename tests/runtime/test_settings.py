"""A job's settings (what its command line set that can change a number, and the dataset's mode)
and its name (with every setting its sweep varies)."""

from tests.conftest import SMOKE, compose_config
from tests.checks.test_preflight import sweep
from xferlab.runtime.settings import hydra_sweep, job_name, job_settings, labels, swept_keys


def settings_of(*overrides: str) -> dict:
    task = [*SMOKE, *overrides]
    return job_settings(compose_config(task), task)


def test_a_job_records_the_settings_its_command_line_set_with_the_values_it_ran_with():
    settings = settings_of("dataset=opencell_raw", "dataset.mode=fov", "backbone.preprocess.normalize=dataset",
                           "head.l2=[0.1,0.01]", "trainer=cpu", "seed=3", "split_seed=1", "+backbone.pretrain_seed=2",
                           "paths.output_root=/elsewhere", "extract.num_workers=0", "force=true")
    assert settings == {"dataset.mode": "fov", "dataset": "opencell_raw", "backbone.preprocess.normalize": "dataset",
                        "head.l2": [0.1, 0.01], "trainer": "cpu"}  # no replicate, place or rerun key; no experiment


def test_the_dataset_mode_is_recorded_where_the_dataset_has_one_set_or_not():
    assert settings_of("dataset=opencell_raw") == {"dataset.mode": "crops", "dataset": "opencell_raw"}
    assert settings_of() == {}  # toycell has no mode


def test_the_keys_a_sweep_varies_from_its_master_config():
    assert sweep(["experiment=paper", "dataset.root=/data", "seed=0,1,2"], swept_keys) == [
        "backbone", "dataset.mode", "seed"]  # the experiment's params, then the command line's sweep
    assert sweep(["experiment=paper", "dataset.mode=fov"], swept_keys) == ["backbone", "seed"]  # one mode: not varied


def test_labels_are_the_last_part_unless_two_keys_share_it():
    assert labels(["dataset.mode", "backbone.preprocess.intensity", "head.optimizer.lr", "backbone.lr", "head"]) == {
        "dataset.mode": "mode", "backbone.preprocess.intensity": "intensity", "head.optimizer.lr": "head.optimizer.lr",
        "backbone.lr": "backbone.lr", "head": "head"}


def test_a_job_is_named_by_the_settings_its_sweep_varies():
    task = [*SMOKE, "dataset=opencell_raw", "dataset.mode=fov", "dataset.root=/data", "seed=2", "split_seed=1"]
    cfg = compose_config(task)
    settings = job_settings(cfg, task)
    assert job_name(cfg, settings, []) == "random_tiny-natural-s2"  # a single run varies nothing
    assert job_name(cfg, settings, ["backbone", "dataset.mode", "seed"]) == "random_tiny-natural-mode=fov-s2"
    named = job_name(cfg, settings, ["dataset.mode", "split_seed", "logger.mode"])
    assert named == "random_tiny-natural-mode=fov-s2-split1"  # a swept split seed shown; logger.mode no setting


def test_a_job_of_the_paper_study_carries_its_mode():
    swept = sweep(["experiment=paper", "dataset.root=/data"], swept_keys)
    task = ["experiment=paper", "dataset.root=/data", "backbone=hpa", "dataset.mode=fov", "seed=0"]
    cfg = compose_config(task)
    assert job_name(cfg, job_settings(cfg, task), swept) == "hpa-natural-mode=fov-s0"


def test_a_job_run_in_process_has_no_sweep():
    cfg = compose_config([*SMOKE, "paths.output_dir=/tmp/not-a-hydra-job"])
    assert hydra_sweep(cfg) == ([], [])
