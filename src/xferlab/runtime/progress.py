"""Progress bars for the steps that take more than a few seconds (rendering or importing a store,
extracting embeddings, building a report), on stderr. A bar shows only when stderr is a terminal,
so CI logs and redirected output stay readable; `XFERLAB_PROGRESS=1` forces bars on, `0` off."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")

ENV = "XFERLAB_PROGRESS"


def enabled() -> bool | None:
    """tqdm's `disable` argument: None (tqdm's own test: off when stderr is not a terminal) unless
    `XFERLAB_PROGRESS` says otherwise."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("1", "true", "yes", "on"):
        return False
    if value in ("0", "false", "no", "off"):
        return True
    raise ValueError(f"{ENV}={os.environ[ENV]!r}: expected 1 (bars on), 0 (off) or auto (on a terminal only)")


def bar(total: int | None = None, desc: str = "", unit: str = "it", **kwargs) -> tqdm:
    """A progress bar with rate and ETA; update it with `.update(n)`, close it (or use `with`)."""
    return tqdm(total=total, desc=desc, unit=unit, disable=enabled(), file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5, leave=True, **kwargs)


def track(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterable[T]:
    """`items`, with a progress bar while they are consumed."""
    with bar(total, desc, unit) as progress:
        for item in items:
            yield item
            progress.update(1)
