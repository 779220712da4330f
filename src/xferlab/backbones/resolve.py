"""Resolving `backbone.weights` to a file: a backbone shipped inside the package, a path, or a file
in the weights folder, downloaded there first when it is a public checkpoint and downloads are
allowed. It sits above `locations` (the folder, the table, the lock) and `download` (fetching),
so the imports run one way: locations <- download <- resolve."""

from __future__ import annotations

from pathlib import Path

from xferlab.backbones.download import download_checkpoint
from xferlab.backbones.locations import DOWNLOAD_MODES, KNOWN_CHECKPOINTS, SHIPPED_PREFIX, weights_dir, where_to_get
from xferlab.backbones.weights import WeightsError


def resolve_weights(value: str | None, backbone: str, download: str = "auto") -> Path:
    """The weights file `backbone.weights` names: `shipped:<file>` (a backbone shipped inside the
    package), an existing path, or a file in the weights folder, downloaded there first if it is
    a public checkpoint, `download` is `auto` and downloads are allowed."""
    if download not in DOWNLOAD_MODES:
        raise WeightsError(f"backbone.download={download!r}; choose one of {DOWNLOAD_MODES}")
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
    known = KNOWN_CHECKPOINTS.get(value)
    if known is not None and known.downloadable and download == "auto":
        return download_checkpoint(value, weights_dir())
    raise WeightsError(
        f"backbone={backbone}: weights file {value} not found in the weights folder {weights_dir()} "
        f"(set XFERLAB_WEIGHTS to move it). To get it: {where_to_get(value)}, and put it at {in_folder}; "
        f"or pass backbone.weights=/path/to/{value}"
    )
