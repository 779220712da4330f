"""`python -m xferlab.ssl.export <name> ...`: turn pretraining runs into the small backbones
shipped with xferlab: the teacher backbone as an fp16 plain state dict in
`src/xferlab/backbones/shipped/<name>.pth`, described in `manifest.json` (command, config, git
revision, data fingerprint, sha256, measured time, and the curves: DINO loss against its uniform
bound ln(out_dim) and kNN accuracy on the monitor's validation split after every epoch)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from importlib import resources
from pathlib import Path

import torch

from xferlab.backbones.checkpoints import load_backbone_state
from xferlab.backbones.weights import file_sha256
from xferlab.runtime.io import atomic_write_json, temp_sibling

MANIFEST = "manifest.json"


def shipped_dir() -> Path:
    return Path(str(resources.files("xferlab.backbones.shipped")))


def read_manifest() -> dict:
    path = shipped_dir() / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


def export(run_dir: Path, name: str, command: str) -> dict:
    loaded = load_backbone_state(run_dir / "checkpoint.pth")
    state = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in loaded.state.items()}
    dest = shipped_dir() / f"{name}.pth"
    tmp = temp_sibling(dest)
    torch.save(state, tmp)
    tmp.replace(dest)
    run = json.loads((run_dir / "metrics.json").read_text())
    entry = {"file": dest.name, "sha256": file_sha256(dest), "bytes": dest.stat().st_size, "command": command,
             "pretrain_seconds": round(run["seconds"], 1), "epochs": run["epochs"], "n_images": run["n_images"],
             "final_loss": run.get("train/loss"), "knn_accuracy": run.get("val/knn_accuracy"),
             "uniform_loss": round(math.log(int(run["out_dim"])), 4) if run.get("out_dim") else None,
             "knn_monitor": run.get("monitor"), "curves": run.get("curves", []),
             "dataset": run["dataset"], "data_fingerprint": run["data_fingerprint"], "git_revision": run["git_revision"],
             "config_digest": run["config_digest"], "arch": run["arch"], "model_kwargs": run["model_kwargs"],
             "in_channels": run["in_channels"], "source_checkpoint_sha256": loaded.file_sha256,
             "config": recipe_config(command)}
    return entry


def recipe_config(command: str) -> str:
    """The pretraining config the command composes (unresolved paths, so it reads the same anywhere)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import xferlab

    overrides = command.split("xferlab.pretrain", 1)[1].split()
    overrides = [o for o in overrides if not o.startswith("resume=")]
    with initialize_config_dir(config_dir=str(Path(xferlab.__file__).parent / "conf"), version_base="1.3"):
        cfg = compose("pretrain", overrides=overrides)
    return OmegaConf.to_yaml(cfg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xferlab.ssl.export", description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--command", required=True, help="the command that produced the run (recorded)")
    args = parser.parse_args(argv)
    manifest = read_manifest()
    manifest[args.name] = export(args.run_dir, args.name, args.command)
    atomic_write_json(shipped_dir() / MANIFEST, manifest)
    print(f"shipped {args.name}: {manifest[args.name]['bytes'] / 1e6:.1f} MB, sha256 {manifest[args.name]['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
