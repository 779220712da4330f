"""Downloading into place: bytes are streamed to a temporary sibling of the final file, checked
(size, the publisher's md5 where there is one, an optional check of the whole file), and only then
renamed to the final name. An interrupted, truncated or changed download leaves nothing under the
final name.

Also here: whether xferlab may use the network (`offline`), and a thread-safe progress bar over
files and bytes (rate and ETA from tqdm).
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence

from xferlab.runtime.io import disk_full, not_writable, temp_sibling

OFFLINE_ENV = "HF_HUB_OFFLINE"
BLOCK = 1 << 20


class TransferError(RuntimeError):
    """A download failed (unreachable, truncated, changed, or its checksum differs); the message
    names the source and what to do."""


def offline() -> bool:
    """True when downloads are switched off: `HF_HUB_OFFLINE=1` (xferlab's offline default, as for
    the Hugging Face hub). Set `HF_HUB_OFFLINE=0` to allow downloads."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class Digest(Protocol):
    def update(self, data: bytes) -> None: ...


def read_blocks(f, block: int = BLOCK) -> Iterator[bytes]:
    while chunk := f.read(block):
        yield chunk


def stream_to(
    dest: Path,
    blocks: Iterable[bytes],
    *,
    source: str,
    size: int | None = None,
    md5: str | None = None,
    check: Callable[[Path], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    digests: Sequence[Digest] = (),
) -> str:
    """Write `blocks` to `dest` through a temporary sibling; return the file's sha256.

    Before the rename: the byte count must equal `size` and the md5 `md5` (each when given), and
    `check(temporary path)` must not raise. `digests` are fed every block as it is written (for
    `check` to compare, e.g. a multipart ETag). Any failure (or an interruption) removes the
    temporary file; `dest` is then untouched. A folder or file that cannot be written is a
    `NotWritableError` naming it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dest)
    sha, digest_md5, n = hashlib.sha256(), hashlib.md5(), 0
    try:
        with open(tmp, "wb") as f:
            for chunk in blocks:
                f.write(chunk)
                sha.update(chunk)
                digest_md5.update(chunk)
                for digest in digests:
                    digest.update(chunk)
                n += len(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
            f.flush()
            os.fsync(f.fileno())
        if size is not None and n != size:
            raise TransferError(f"{source}: truncated or changed download: received {n:,} bytes, expected "
                                f"{size:,}; nothing was kept at {dest}. Run the command again")
        if md5 is not None and digest_md5.hexdigest() != md5.lower():
            raise TransferError(f"{source}: checksum mismatch: md5 {digest_md5.hexdigest()} of the received bytes, "
                                f"the source lists {md5.lower()}; the file changed on the server or was damaged "
                                f"in transit. Nothing was kept at {dest}. Run the command again")
        if check is not None:
            check(tmp)
        tmp.replace(dest)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        local = disk_full(err, dest) or not_writable(err, dest)
        if local is not None:
            raise local from err
        raise
    return sha.hexdigest()


class Progress:
    """One progress bar for a batch of downloads: bytes (with rate and ETA) and files done; safe
    to update from worker threads. Silent when `enabled` is false."""

    def __init__(self, files: int, total_bytes: int, what: str = "fetch", enabled: bool = True):
        self.files, self.done, self.failed = files, 0, 0
        self.bytes = 0  # bytes the bar counts as done
        self._lock = threading.Lock()
        self._bar = None
        if enabled and files:
            from tqdm import tqdm

            self._bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=what,
                             file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
            self._bar.set_postfix_str(f"files 0/{files}")

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes += n
            if self._bar is not None:
                self._bar.update(n)

    def file_done(self, size_not_streamed: int = 0) -> None:
        """One file finished; `size_not_streamed` bytes of it were skipped (present already: counted
        as done so the bar's ETA stays right)."""
        self._finish(size_not_streamed, failed=False)

    def file_failed(self, streamed: int) -> None:
        """One file failed after `streamed` of its bytes: they no longer count as done, so a batch
        with failures closes short of 100 %."""
        self._finish(-streamed, failed=True)

    def _finish(self, n: int, failed: bool) -> None:
        with self._lock:
            self.done += 1
            self.failed += failed
            self.bytes += n
            if self._bar is not None:
                if n:
                    self._bar.update(n)
                failures = f", {self.failed} failed" if self.failed else ""
                self._bar.set_postfix_str(f"files {self.done}/{self.files}{failures}", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
