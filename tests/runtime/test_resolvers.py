from omegaconf import OmegaConf

from xferlab.runtime.resolvers import job_dirname


def test_job_dirname_is_safe_and_distinct():
    assert job_dirname("backbone=random,seed=0") == "backbone=random,seed=0"
    assert "/" not in job_dirname("dataset.path=/data/x.zarr,seed=1")
    long_a, long_b = "x=" + "a" * 300, "x=" + "a" * 299 + "b"
    assert len(job_dirname(long_a)) <= 120 and job_dirname(long_a) != job_dirname(long_b)
    assert job_dirname("") == "default"


def test_uid_is_stable_within_a_config_and_differs_between_configs():
    a = OmegaConf.create({"x": "${xferlab.uid:}", "y": "${xferlab.uid:}"})
    b = OmegaConf.create({"x": "${xferlab.uid:}"})
    assert a.x == a.y
    assert a.x != b.x
