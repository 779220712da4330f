"""`python -m xferlab.pretrain`: DINO pretraining on an image store; writes
`<output_dir>/checkpoint.pth` in DINO's layout (readable as `backbone=opencell
backbone.weights=<file>`), `last.ckpt` for resuming, and `metrics.json`; with `publish=<file name>`
(`experiment=opencell_dino`: opencell_dino.pth) the finished checkpoint is copied into the weights
folder under that name, where `backbone=opencell` loads it."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

import xferlab.runtime.resolvers  # noqa: F401 - registers the resolvers the configs use

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="conf", config_name="pretrain")
def main(cfg: DictConfig) -> float:
    from xferlab.ssl.run import run_pretraining

    result = run_pretraining(cfg)
    print(f"[pretrain {cfg.name}] {result['epochs']} epochs in {result['seconds']:.0f} s, final loss "
          f"{result['train/loss']:.4f}, kNN accuracy {result.get('val/knn_accuracy', float('nan')):.4f} "
          f"-> {result['checkpoint']}" + (f", published as {result['published']}" if result.get("published") else ""),
          flush=True)
    return float(result["train/loss"])


if __name__ == "__main__":
    main()
