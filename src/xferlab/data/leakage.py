"""Pretraining vs evaluation: a backbone pretrained on images of the targets it is then tested on
would score them with an advantage no other backbone has. xferlab's pretraining records every
target it saw in its checkpoint (`xferlab.seen`); evaluation refuses a split whose test targets are
among them, naming them, unless `allow_seen_test_targets=true`."""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import pandas as pd

from xferlab.data.splits import TEST
from xferlab.data.store import ImageStore

log = logging.getLogger(__name__)


class SeenTargetsError(ValueError):
    """The backbone was pretrained on images of test targets."""


def seen_test_targets(seen: Mapping[str, Any], samples: pd.DataFrame, split: np.ndarray) -> list[str]:
    """The test targets of `split` that pretraining saw, as plain strings, matched by target name
    and, where both sides record them, by ENSG id (so that a target renamed between stores is still
    caught). `samples`: a store's sample table (`target`, optionally `ensg_id`), one row per `split` entry."""
    test = split == TEST
    names = [str(t) for t in samples["target"].to_numpy()]
    overlap = {n for n, t in zip(names, test) if t} & {str(t) for t in seen.get("targets", [])}
    if "ensg_ids" in seen and "ensg_id" in samples.columns:
        known = {str(e) for e in seen["ensg_ids"]}
        overlap |= {n for n, e, t in zip(names, samples["ensg_id"].to_numpy(), test) if t and str(e) in known}
    return sorted(overlap)


def seen_targets_message(backbone_name: str, pretraining: Mapping[str, Any], overlap: list[str], n_test: int,
                         where: str) -> str:
    """The error for a split whose test targets pretraining saw: the targets as plain names."""
    shown = ", ".join(str(t) for t in overlap[:10]) + (f" and {len(overlap) - 10} more" if len(overlap) > 10 else "")
    return (f"backbone {backbone_name} was pretrained on {len(overlap)} of the {n_test} test targets of this split "
            f"of {where}: {shown} (pretraining: dataset {pretraining.get('dataset')}, split_seed "
            f"{pretraining.get('split_seed')}, unlabelled targets {'used' if pretraining.get('unlabelled') else 'not used'})"
            ". Evaluate with the split_seed it was pretrained with (and the same label rule), pretrain again, or set "
            "allow_seen_test_targets=true to report such numbers anyway.")


def seen_targets_problem(backbone_name: str, pretraining: Mapping[str, Any] | None, samples: pd.DataFrame,
                         split: np.ndarray, where: str) -> str | None:
    """The message for test targets of `split` that the backbone's pretraining saw; None when there
    are none or when the checkpoint records nothing."""
    seen = (pretraining or {}).get("seen")
    if seen is None:
        return None
    overlap = seen_test_targets(seen, samples, split)
    if not overlap:
        return None
    n_test = len({str(t) for t, s in zip(samples["target"].to_numpy(), split) if s == TEST})
    return seen_targets_message(backbone_name, pretraining, overlap, n_test, where)


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
    message = seen_targets_problem(backbone_name, pretraining, store.samples, split, str(store.path))
    if message is None:
        return []
    if not allow:
        raise SeenTargetsError(message)
    log.warning("%s (allowed by allow_seen_test_targets=true)", message)
    return seen_test_targets(seen, store.samples, split)
