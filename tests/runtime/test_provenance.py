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


def test_fit_and_publish_at_their_defaults_keep_the_config_digest_of_earlier_runs():
    cfg = compose_config(["backbone=random", "paths.output_dir=/tmp/x"])
    assert cfg.backbone.preprocess.fit == "centre" and cfg.backbone.preprocess.scale == "resize"
    before = OmegaConf.create(OmegaConf.to_container(cfg))
    with open_dict(before):
        del before.backbone.preprocess["fit"], before.backbone.preprocess["scale"]  # configs from before the keys
    assert config_digest(cfg) == config_digest(before)
    tiles = compose_config(["backbone=random", "paths.output_dir=/tmp/x", "backbone.preprocess.scale=match",
                            "backbone.preprocess.fit=tiles"])
    assert config_digest(tiles) != config_digest(compose_config(
        ["backbone=random", "paths.output_dir=/tmp/x", "backbone.preprocess.scale=match"]))
    pretrain = compose_config(["paths.output_dir=/tmp/x"], config_name="pretrain")
    assert pretrain.publish is None
    older = OmegaConf.create(OmegaConf.to_container(pretrain))
    with open_dict(older):
        del older["publish"]
    assert config_digest(pretrain) == config_digest(older)
