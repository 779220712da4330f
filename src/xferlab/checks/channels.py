"""Whether a backbone's input slots can be filled from a dataset's channels, told before any job
(`checks.inputs`, `checks.preflight`): channels are matched by name (nucleus, protein,
microtubules, er, ...; RGB models through the strategy's colour map), so a dataset that names its
channels as the backbones do (`dataset=fovs`: `dataset.channels`) reaches every backbone that can
take it, and one that cannot is skipped (`experiment=zoo`) or stopped, with the reason."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig


def channel_problem(backbone: dict, channels: DictConfig | None, dataset_channels: list[str] | None,
                    dataset_name: str) -> str | None:
    """Why the backbone's input slots cannot be filled from the dataset's channels (None: they can,
    or the channels are not known before the import): the channel strategy (`channels=`) does not
    build on them, or a channel the backbone needs (`backbone.required_channels`, e.g. SubCell's
    variants) is not among them while the strategy maps channels by name."""
    slots = backbone.get("in_channels")
    if backbone.get("take_dataset_channels"):  # a channel-agnostic model: its inputs are the dataset's channels
        return None
    if not dataset_channels or channels is None or not isinstance(slots, (list, tuple)):
        return None
    from xferlab.runtime.building import build

    name = backbone.get("name")
    try:
        adapter = build(channels, dataset_channels=list(dataset_channels), model_channels=list(slots))
    except ValueError as err:
        return f"backbone={name} on dataset={dataset_name}: {err}"
    required = [c for c in (backbone.get("required_channels") or []) if c not in dataset_channels]
    if required and adapter.strategy in ("natural", "random_order"):
        return (f"backbone={name} needs the channel(s) {required} (backbone.required_channels; its inputs are {list(slots)}), "
                f"which dataset={dataset_name} does not have (its channels: {list(dataset_channels)}). If the files hold "
                "them, name them in dataset.channels (e.g. dataset.channels.er=<the file's channel name>); otherwise use a "
                "variant of this backbone for the channels you have")
    return None


def planned_channels(source: Any) -> list[str] | None:
    """The store's channel names before the import (a source that can tell), else None."""
    from xferlab.data.importers.common import DataImportError

    try:
        names = getattr(source, "planned_channels", lambda: None)()
    except (DataImportError, FileNotFoundError):
        return None
    return list(names) if names else None
