"""Stall points for crash tests: hold the process at a named moment so a test can SIGKILL it there.

Off unless `XFERLAB_STALL_AT` is set; then it costs one environment lookup per call.

- `XFERLAB_STALL_AT=<point>` or `<point>@<n>`: stall at the n-th (default first) time this process
  reaches `<point>` (e.g. `cache.chunk_written`, `head.epoch_end@3`, `checkpoint.before_replace@2`);
- `XFERLAB_STALL_WHERE=<text>` (optional): count only calls whose `where` contains `<text>` (e.g. a
  multirun job's folder name, `seed=1`);
- `XFERLAB_STALL_FILE=<path>`: written (with the process id) when the process stalls, so the test
  knows the moment has come.

A stalled process sleeps until it is killed. Points: `store.chunk_written` (image store writer, after
each chunk; `where` = the store path), `cache.chunk_written` (embedding cache writer, after each chunk;
`where` = the temporary entry), `head.epoch_end` (head grid training; `where` = the run folder), `head.path_step` (the linear
probe, after each penalty of its path; `where` = the run folder),
`checkpoint.before_replace` (a Lightning checkpoint written under its temporary name, not yet renamed
into place; `where` = the target path).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

ENV_POINT, ENV_WHERE, ENV_FILE = "XFERLAB_STALL_AT", "XFERLAB_STALL_WHERE", "XFERLAB_STALL_FILE"
_seen: Counter = Counter()


def stall_point(point: str, where: str = "") -> None:
    spec = os.environ.get(ENV_POINT)
    if not spec:
        return
    name, _, nth = spec.partition("@")
    if name != point or os.environ.get(ENV_WHERE, "") not in where:
        return
    _seen[point] += 1
    if _seen[point] != int(nth or 1):
        return
    marker = os.environ.get(ENV_FILE)
    if marker:
        tmp = Path(f"{marker}.{os.getpid()}.tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, marker)
    while True:  # until killed
        time.sleep(1)
