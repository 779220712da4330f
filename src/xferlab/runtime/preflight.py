"""Checks before a sweep starts: every file its jobs will need exists. A study that needs the real
OpenCell images and the published checkpoints stops at once, listing each missing file and where
to get it, instead of failing job after job.

Used as a Hydra callback (`hydra.callbacks.preflight`) by the `paper` experiment.
"""

from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from xferlab.backbones.locations import resolve_weights
from xferlab.backbones.weights import WeightsError

CONF = Path(__file__).resolve().parents[1] / "conf"  # xferlab/conf (this module lives in xferlab/runtime)


def backbone_node(option: str) -> DictConfig:
    """A backbone option's config with the options it extends (its `defaults`) merged in."""
    node = OmegaConf.load(CONF / "backbone" / f"{option}.yaml")
    parents = [d for d in node.pop("defaults", []) if isinstance(d, str) and d != "_self_"]
    return OmegaConf.merge(*(backbone_node(p) for p in parents), node) if parents else node


def missing_files(cfg: DictConfig) -> list[str]:
    problems = []
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default={}) or {}
    backbones = str(params.get("backbone", cfg.backbone.name)).split(",")
    for option in backbones:
        node = backbone_node(option.strip())
        if node.get("init") == "weights":
            try:
                resolve_weights(node.get("weights"), option.strip())
            except WeightsError as err:
                problems.append(str(err))
    for key in ("root", "csv", "path"):
        if key in cfg.dataset:
            value = cfg.dataset[key]
            if not value or not Path(str(value)).expanduser().exists():
                problems.append(f"dataset={cfg.dataset.name}: dataset.{key}={value} does not exist; point it at the "
                                "real data (see the README, 'Real data')")
    return problems


class Preflight(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config)

    @staticmethod
    def _check(config: DictConfig) -> None:
        problems = missing_files(config)
        if problems:
            raise SystemExit("xferlab: this study cannot start; missing:\n- " + "\n- ".join(problems))
