"""Where weight files live, and where the study's public checkpoints come from.

`backbone.weights` is a path, or the bare name of a file in the weights folder
(`$XFERLAB_WEIGHTS`, default `$XDG_CACHE_HOME/xferlab/weights`, i.e. `~/.cache/xferlab/weights`).
A missing file is an error that names it, where to get it and where to put it; nothing is
downloaded behind the user's back (`make weights` / `python -m xferlab.weights` does that).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from xferlab.backbones.weights import WeightsError


@dataclass(frozen=True)
class KnownCheckpoint:
    file: str
    what: str
    url: str | None = None  # direct download
    record: str | None = None  # a landing page (Zenodo record) to fetch it from by hand
    path_in_record: str | None = None
    how: str | None = None  # for files users make themselves


KNOWN_CHECKPOINTS = {c.file: c for c in (
    KnownCheckpoint("dino_deitsmall16_pretrain.pth", "DINO ViT-S/16 trained on ImageNet-1k, backbone only",
                    url="https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth"),
    KnownCheckpoint("dino_deitsmall16_pretrain_full_checkpoint.pth", "DINO ViT-S/16 ImageNet-1k full training checkpoint",
                    url="https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/"
                        "dino_deitsmall16_pretrain_full_checkpoint.pth"),
    KnownCheckpoint("dino_vitbase8_pretrain.pth", "DINO ViT-B/8 trained on ImageNet-1k, backbone only",
                    url="https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth"),
    KnownCheckpoint("DINO_FOV_checkpoint.pth", "DINO4Cells, HPA fields of view (4 channels)",
                    record="https://zenodo.org/record/8061392", path_in_record="HPA_FOV_data/DINO_FOV_checkpoint.pth"),
    KnownCheckpoint("opencell_dino.pth", "a DINO trained on OpenCell images (the study's third backbone)",
                    how="train one with `python -m xferlab.pretrain dataset=opencell_raw dataset.root=<images> "
                        "backbone=random_vits16 name=opencell_dino` (or use your own DINO checkpoint) and copy its "
                        "checkpoint.pth"),
    KnownCheckpoint("DINO_single_cell_checkpoint.pth", "DINO4Cells, HPA single cells (4 channels)",
                    record="https://zenodo.org/record/8061426",
                    path_in_record="the DINO checkpoint of the HPA single-cell data (rename it to this file name)"),
)}


def weights_dir() -> Path:
    if os.environ.get("XFERLAB_WEIGHTS"):
        return Path(os.environ["XFERLAB_WEIGHTS"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return cache / "xferlab" / "weights"


def where_to_get(name: str) -> str:
    known = KNOWN_CHECKPOINTS.get(name)
    if known is None:
        return "it is not one of the public checkpoints xferlab knows; use your own file"
    if known.how:
        return known.how
    if known.url:
        return f"download {known.url} (or run `make weights` online)"
    return f"download {known.path_in_record} from {known.record}"


SHIPPED_PREFIX = "shipped:"


def resolve_weights(value: str | None, backbone: str) -> Path:
    """The weights file `backbone.weights` names: `shipped:<file>` (a backbone shipped inside the
    package), an existing path, or a file in the weights folder."""
    if value and value.startswith(SHIPPED_PREFIX):
        from importlib import resources

        path = Path(str(resources.files("xferlab.backbones.shipped"))) / value[len(SHIPPED_PREFIX):]
        if not path.is_file():
            raise WeightsError(f"backbone={backbone}: shipped weights {path.name} are missing from {path.parent}; "
                               "reinstall xferlab, or rebuild them with `make pretrain`")
        return path
    if not value:
        raise WeightsError(f"backbone={backbone} needs a weights file: set backbone.weights=/path/to/file "
                           "(.pth or .safetensors), or use backbone=random for a randomly initialised control")
    path = Path(value).expanduser()
    if path.is_file():
        return path
    if path.parent != Path(".") or path.is_absolute():
        raise WeightsError(f"backbone.weights={value}: no such file. Check the path; {where_to_get(path.name)}")
    in_folder = weights_dir() / value
    if in_folder.is_file():
        return in_folder
    raise WeightsError(
        f"backbone={backbone}: weights file {value} not found in the weights folder {weights_dir()} "
        f"(set XFERLAB_WEIGHTS to move it). To get it: {where_to_get(value)}, and put it at {in_folder}; "
        f"or pass backbone.weights=/path/to/{value}"
    )
