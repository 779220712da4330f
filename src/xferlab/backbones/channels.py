"""Channel adapters: how a dataset's channels reach a backbone's input slots.

An adapter is fixed by a list `sources`: for each input slot of the model, the index of the
dataset channel that fills it, or `None` for an empty (zero) slot. Most adapters give the backbone
one view of each image; `channelwise` gives one view per dataset channel, and the extractor
concatenates their embeddings.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)


class ChannelAdapter:
    strategy = "base"
    multi_view = False  # True: more than one backbone input per image (`views`), embeddings concatenated

    def __init__(self, name: str, dataset_channels: Sequence[str], model_channels: Sequence[str]):
        self.name = name
        self.dataset_channels = list(dataset_channels)
        self.model_channels = list(model_channels)
        self.sources: list[int | None] = self._sources()
        if all(s is None for s in self.sources):
            raise ValueError(
                f"channels={name}: none of the dataset channels {self.dataset_channels} reaches the "
                f"backbone's input slots {self.model_channels}; choose another channel strategy"
            )
        dropped = [c for i, c in enumerate(self.dataset_channels) if i not in self.sources]
        if dropped:
            log.warning("channels=%s: dataset channel(s) %s are not used by the backbone", name, dropped)

    def _sources(self) -> list[int | None]:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, C_dataset, H, W)` -> `(B, C_model, H, W)`; empty slots are zero."""
        if x.shape[1] != len(self.dataset_channels):
            raise ValueError(
                f"image has {x.shape[1]} channels; the dataset declares {self.dataset_channels}"
            )
        if None not in self.sources:  # no empty slot: a plain selection (no copy when it is the identity)
            return x if self.sources == list(range(x.shape[1])) else x[:, self.sources]
        padded = torch.cat([x, x.new_zeros(x.shape[0], 1, *x.shape[2:])], dim=1)
        zero = len(self.dataset_channels)
        index = torch.tensor([zero if s is None else s for s in self.sources], device=x.device)
        return padded.index_select(1, index)

    n_views = 1

    def views(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The backbone inputs made from one batch; their embeddings are concatenated in order."""
        return [self(x)]

    def describe(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "dataset_channels": self.dataset_channels,
            "model_channels": self.model_channels,
            "sources": self.sources,
        }


class NaturalMapping(ChannelAdapter):
    """Dataset channels go to the input slots of the same name; for slots with other names (RGB),
    `colour_map` says which dataset channel fills which slot. Unmatched slots stay zero."""

    strategy = "natural"

    def __init__(self, name, dataset_channels, model_channels, colour_map: dict[str, str] | None = None):
        self.colour_map = dict(colour_map or {})
        super().__init__(name, dataset_channels, model_channels)

    def _sources(self) -> list[int | None]:
        sources: list[int | None] = []
        for slot in self.model_channels:
            if slot in self.dataset_channels:
                sources.append(self.dataset_channels.index(slot))
                continue
            mapped = [c for c, target in self.colour_map.items() if target == slot and c in self.dataset_channels]
            sources.append(self.dataset_channels.index(mapped[0]) if mapped else None)
        return sources

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "colour_map": self.colour_map}


class Replicate(ChannelAdapter):
    """One dataset channel copied into every input slot."""

    strategy = "replicate"

    def __init__(self, name, dataset_channels, model_channels, channel: str = "protein"):
        if channel not in dataset_channels:
            raise ValueError(
                f"channels.channel={channel!r} is not a dataset channel; choose one of {list(dataset_channels)}"
            )
        self.channel = channel
        super().__init__(name, dataset_channels, model_channels)

    def _sources(self) -> list[int | None]:
        return [self.dataset_channels.index(self.channel)] * len(self.model_channels)


class RandomOrder(NaturalMapping):
    """A control: the dataset channels go to the slots natural mapping would fill, and to empty
    slots, in an order drawn from `seed` (the same for every image). With `seed` fixed the mapping
    is fixed, so it is part of the cache key like any other."""

    strategy = "random_order"

    def __init__(self, name, dataset_channels, model_channels, seed: int = 0, colour_map=None):
        self.seed = int(seed)
        super().__init__(name, dataset_channels, model_channels, colour_map)

    def _sources(self) -> list[int | None]:
        natural = super()._sources()
        used = sorted({s for s in natural if s is not None})
        if not used:
            used = list(range(len(self.dataset_channels)))
        rng = np.random.default_rng(self.seed)
        slots = rng.permutation(len(self.model_channels))[: len(used)]
        channels = rng.permutation(used)
        sources: list[int | None] = [None] * len(self.model_channels)
        for slot, channel in zip(slots, channels):
            sources[int(slot)] = int(channel)
        return sources

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "seed": self.seed}


class Channelwise(ChannelAdapter):
    """Each dataset channel embedded on its own, as a grayscale image copied to every slot; the
    embeddings are concatenated (dimension D x C, in dataset channel order)."""

    strategy = "channelwise"
    multi_view = True

    def __init__(self, name, dataset_channels, model_channels):
        super().__init__(name, dataset_channels, model_channels)
        self.n_views = len(self.dataset_channels)

    def _sources(self) -> list[int | None]:
        return [0] * len(self.model_channels)  # the first view; `views` makes the others

    def views(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] != len(self.dataset_channels):
            raise ValueError(f"image has {x.shape[1]} channels; the dataset declares {self.dataset_channels}")
        k = len(self.model_channels)
        return [x[:, c : c + 1].expand(-1, k, -1, -1).contiguous() for c in range(x.shape[1])]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sources": "each dataset channel replicated, one view per channel"}
