"""Pretraining vs evaluation: a backbone pretrained on images of the targets it is then tested on
would score them with an advantage no other backbone has. xferlab's pretraining records every
target it saw in its checkpoint (`xferlab.seen`); evaluation refuses a split whose test targets are
among them, naming them, unless `allow_seen_test_targets=true`."""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np

from xferlab.data.splits import TEST
from xferlab.data.store import ImageStore

log = logging.getLogger(__name__)


class SeenTargetsError(ValueError):
    """The backbone was pretrained on images of test targets."""


def seen_test_targets(seen: Mapping[str, Any], store: ImageStore, split: np.ndarray) -> list[str]:
    """The test targets of `split` that pretraining saw, matched by target name and, where both
    sides record them, by ENSG id (so that a target renamed between stores is still caught)."""
    test = split == TEST
    names = store.samples["target"].to_numpy().astype(str)
    overlap = set(names[test]) & set(seen.get("targets", []))
    if "ensg_ids" in seen and "ensg_id" in store.samples.columns:
        ensg = store.samples["ensg_id"].to_numpy().astype(str)
        hits = np.isin(ensg, list(seen["ensg_ids"])) & test
        overlap |= set(names[hits])
    return sorted(overlap)


def check_pretraining_overlap(backbone_name: str, pretraining: Mapping[str, Any] | None, store: ImageStore,
                              split: np.ndarray, allow: bool = False) -> list[str]:
    """Raise SeenTargetsError when the backbone's pretraining saw test targets of this split (a
    warning with `allow`); returns them. A checkpoint that records nothing (not pretrained by
    xferlab) cannot be checked, which is logged."""
    seen = (pretraining or {}).get("seen")
    if seen is None:
        log.info("backbone %s: its checkpoint does not record the targets it was pretrained on; "
                 "the test targets cannot be checked against them", backbone_name)
        return []
    overlap = seen_test_targets(seen, store, split)
    if not overlap:
        return []
    n_test = len(set(store.samples["target"].to_numpy().astype(str)[split == TEST]))
    message = (f"backbone {backbone_name} was pretrained on {len(overlap)} of the {n_test} test targets of this split "
               f"of {store.path}: {overlap[:10]}{' ...' if len(overlap) > 10 else ''} (pretraining: dataset "
               f"{pretraining.get('dataset')}, split_seed {pretraining.get('split_seed')}, unlabelled targets "
               f"{'used' if pretraining.get('unlabelled') else 'not used'}). Evaluate with the split_seed it was "
               "pretrained with (and the same label rule), pretrain again, or set allow_seen_test_targets=true to "
               "report such numbers anyway.")
    if not allow:
        raise SeenTargetsError(message)
    log.warning("%s (allowed by allow_seen_test_targets=true)", message)
    return overlap
