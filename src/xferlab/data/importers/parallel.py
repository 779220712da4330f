"""Importing fields of view in parallel: each field read, segmented and cut once, in a pool of
processes, its crops handed back in the fields' order and written to the store as they come (a
store whose size is known only at the end: `StoreWriter(n_samples=None)`).

Workers: `auto` is the cores this process may run on (its affinity mask, as extraction counts
them: a SLURM allocation, `taskset`), at most one per field; 1 runs in this process. Each worker
uses one thread for numpy / scipy / scikit-image, so N workers use N cores. The store is the same,
byte for byte, whatever the number of workers: each field's result depends on that field alone,
and results are consumed in the fields' order.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")
IN_FLIGHT = 3  # fields queued per worker: enough to keep it busy, few enough to bound the memory held


def import_workers(value: int | str, n_fields: int) -> int:
    """`dataset.workers`: `auto` (the usable cores) or a positive number; never more than the fields."""
    from xferlab.embeddings.extractor import usable_cores

    if value == "auto":
        workers = usable_cores()
    elif isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"dataset.workers={value!r}: expected a positive number of processes, or auto (the cores "
                         "this job may use)")
    else:
        workers = int(value)
    return max(1, min(workers, n_fields))


def _one_thread() -> None:
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[key] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - scikit-learn installs it
        pass


def ordered_map(fn: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[R]:
    """`fn` over `items` in `workers` processes (spawned, one thread each), results in the items'
    order; at most `IN_FLIGHT` items per worker are pending at once. `workers=1`: in this process."""
    if workers <= 1:
        yield from map(fn, items)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process that runs torch threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_one_thread) as pool:
        pending: deque[Future] = deque()
        queue = iter(items)
        try:
            for item in queue:
                pending.append(pool.submit(fn, item))
                if len(pending) >= IN_FLIGHT * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
