"""Every option of every config group composes, and the components build from their `_target_`."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate

from tests.conftest import CONF_DIR, compose_config

GROUPS = ("dataset", "backbone", "channels", "head", "trainer", "logger", "experiment", "paths")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_every_group_exists_with_options():
    for group in GROUPS:
        assert options(group), group


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group, option):
    cfg = compose_config([f"{group}={option}", "paths.output_dir=/tmp/x"])
    assert cfg.seed == 0 and cfg.split_seed == 0
    if group not in ("experiment", "paths"):
        assert cfg[group] is not None
    if group in ("dataset", "backbone", "channels", "trainer"):
        assert "_target_" in cfg[group]
    if group == "head":
        assert "_target_" in cfg.head and cfg.head.name == option
    if group == "head" and "module" in cfg.head:
        assert "_target_" in cfg.head.module and cfg.head.optimizer._partial_ and not cfg.head._recursive_
    if group == "head" and option == "knn":
        assert list(cfg.head.ks) == [1, 5, 10, 20, 50]


@pytest.mark.parametrize("option", ["random", "pixels"])
def test_backbones_build_and_channels_adapt(option):
    cfg = compose_config([f"backbone={option}", "experiment=smoke", "paths.output_dir=/tmp/x"])
    backbone = instantiate(cfg.backbone)
    for channels in options("channels"):
        cfg_c = compose_config([f"channels={channels}", "paths.output_dir=/tmp/x"])
        adapter = instantiate(cfg_c.channels, dataset_channels=["nucleus", "protein"],
                              model_channels=backbone.in_channels)
        assert len(adapter.sources) == len(backbone.in_channels)


def test_experiment_overlays_set_only_deltas():
    demo = compose_config(["experiment=demo", "paths.output_dir=/tmp/x"])
    assert demo.experiment_name == "demo"
    assert demo.dataset.name == "synthcell"


def test_unknown_option_and_unknown_key_fail_at_composition():
    with pytest.raises(MissingConfigException, match="backbone/nope") as err:
        compose_config(["backbone=nope"])
    assert "Available options" in str(err.value) and "imagenet" in str(err.value)  # the options to pick from
    with pytest.raises(ConfigCompositionException, match="head.optimiser"):
        compose_config(["head.optimiser.lr=0.1"])
    for typo in ("seeed=1", "backbone.wieghts=x.pth", "metrics.averag_over=all"):
        key = typo.split("=")[0]
        with pytest.raises(ConfigCompositionException, match=f"Could not override '{key}'") as err:
            compose_config([typo])
        assert f"Key '{key.split('.')[-1]}' is not in struct" in str(err.value.__cause__), typo
