"""Keys added to the config later keep earlier results valid at their default value."""

from __future__ import annotations

from omegaconf import OmegaConf, open_dict

from tests.conftest import SMOKE, compose_config
from xferlab.runtime.provenance import config_digest


def test_average_over_at_its_default_keeps_the_config_digest_of_earlier_runs():
    cfg = compose_config(SMOKE + ["paths.output_dir=/tmp/x"])
    assert cfg.metrics.average_over == "present"
    before = OmegaConf.create(OmegaConf.to_container(cfg))
    with open_dict(before):
        del before["metrics"]  # a config from before the key existed
    assert config_digest(cfg) == config_digest(before)
    assert config_digest(compose_config(SMOKE + ["paths.output_dir=/tmp/x", "metrics.average_over=all"])) != \
        config_digest(cfg)
