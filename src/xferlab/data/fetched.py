"""The local side of an OpenCell fetch (`xferlab.data.opencell_s3`): the root folder and its
lock, the manifest `FETCHED.jsonl`, and whether a file already there is the version listed.

The root is created only when a fetch starts writing, after its listing succeeded, and is checked
writable first (a clear error naming the folder, never a hint to retry). A run that wrote no
file removes what it created: its lock file, empty target folders, the root and the parents it
needed; a folder that was there before is kept.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

from xferlab.data import etags
from xferlab.runtime.transfer import TransferError, read_blocks

MANIFEST = "FETCHED.jsonl"
LOCK = ".fetch.lock"
ABSENT, COMPLETE, CHANGED, DAMAGED = "absent", "complete", "changed", "damaged"


class FetchError(RuntimeError):
    """The selection cannot be fetched as asked (empty prefix, unknown or missing targets, a root
    folder that cannot be written)."""


# ---------------------------------------------------------------- the manifest

def read_manifest(root: Path) -> dict[str, dict]:
    """relpath -> the latest record of it in `root/FETCHED.jsonl` (a torn last line is ignored)."""
    records = {}
    path = Path(root) / MANIFEST
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
                records[record["path"]] = record
            except (ValueError, KeyError, TypeError):
                continue
    return records


class ManifestWriter:
    def __init__(self, root: Path, endpoint: str | None):
        self.path, self.endpoint = Path(root) / MANIFEST, endpoint
        self._lock = threading.Lock()

    def add(self, fov, sha256: str) -> None:
        record = {"path": fov.relpath, "key": fov.key, "size": fov.size, "etag": fov.etag, "sha256": sha256,
                  "endpoint": self.endpoint, "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        line = json.dumps(record, sort_keys=True) + "\n"
        with self._lock, open(self.path, "a") as f:  # one short append per file: a kill tears at most the last line
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


# ---------------------------------------------------------------- what is there already

def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in read_blocks(f):
            h.update(chunk)
    return h.hexdigest()


def local_copy(path: Path, fov, record: dict | None, fs=None) -> tuple[str, str]:
    """The state of the local copy of `fov` (an `opencell_s3.RemoteFov`) and, when it must be
    fetched again, why: ABSENT; COMPLETE (recorded with the listed ETag and size, or unrecorded
    and its bytes give the listed ETag); CHANGED (recorded with another ETag: the server's copy
    changed); DAMAGED (the local bytes are not the listed version while the server's ETag is the
    recorded one, or there is no record to tell). `fs` is used only to check an unrecorded
    multipart file (one HEAD for its part size)."""
    if not path.is_file():
        return ABSENT, ""
    size = path.stat().st_size
    if record is not None and record.get("etag") != fov.etag:
        return CHANGED, f"ETag {record.get('etag')} when fetched, {fov.etag} now"
    if record is not None:
        if size == fov.size:
            return COMPLETE, ""
        return DAMAGED, (f"local copy damaged or incomplete: {size:,} bytes on disk, {fov.size:,} listed, while the "
                         "server's ETag is the one recorded when it was fetched")
    unrecorded = f"not recorded in {MANIFEST}"
    if size != fov.size:
        return DAMAGED, f"local copy damaged or incomplete: {size:,} bytes on disk, {fov.size:,} listed ({unrecorded})"
    if fov.md5 is not None:
        if _md5(path) == fov.md5:
            return COMPLETE, ""
        return DAMAGED, f"local copy damaged: its md5 differs from the listed ETag {fov.etag} ({unrecorded})"
    if fov.parts is not None:
        def every_part() -> list[int]:
            return etags.remote_part_sizes(fs, fov.key, fov.size, fov.etag, every_part=True)

        try:
            sizes = etags.remote_part_sizes(fs, fov.key, fov.size, fov.etag)
            local, _ = etags.settle(path, fov.etag, etags.file_etag(path, sizes), sizes, every_part)
        except (TransferError, FileNotFoundError) as err:
            return DAMAGED, f"local copy unverified ({unrecorded}): {err}"
        if local == fov.etag.lower():
            return COMPLETE, ""
        return DAMAGED, f"local copy damaged: its multipart ETag is {local}, the server lists {fov.etag} ({unrecorded})"
    return COMPLETE, ""  # an ETag that is no checksum: the size is all there is to compare


# ---------------------------------------------------------------- the root folder

@contextmanager
def writing_into(root: Path, folders: list[str], wrote: Callable[[], bool]) -> Iterator[None]:
    """Create `root` if needed, check it is writable and hold its lock; on the way out, empty
    target folders (of `folders`) this run created are removed, and when `wrote()` says it wrote
    no file, so are its new lock file, and the root and parents it created."""
    created = [p for p in (root, *root.parents) if not p.exists()]  # the root first
    new_folders = [root / f for f in folders if not (root / f).exists()]
    new_lock = not (root / LOCK).exists()
    try:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            above = next((p for p in root.parents if p.exists()), root)
            raise FetchError(_cannot_write(err, f"cannot create {root}", above)) from err
        try:
            with tempfile.TemporaryFile(dir=root):
                pass
        except OSError as err:
            raise FetchError(_cannot_write(err, f"cannot write into {root}", root)) from err
        with _sole_writer(root):
            try:
                yield
            finally:
                for folder in new_folders:
                    _rmdir(folder)
                if new_lock and not wrote():  # unlinked while held: a waiting peer sees it and locks anew
                    (root / LOCK).unlink(missing_ok=True)
    finally:
        if not wrote():
            for folder in created:
                _rmdir(folder)


def _rmdir(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty, or gone: keep it
        pass


def _cannot_write(err: OSError, what: str, where: Path) -> str:
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"{what}: {where} is not writable ({err.strerror}); check its permissions and owner (ls -ld {where}) "
                "and whether its filesystem is mounted read-only, or fetch into another --root. Running again "
                "unchanged fails the same way; nothing was fetched")
    return f"{what} ({type(err).__name__}: {err}); give another --root. Nothing was fetched"


@contextmanager
def _sole_writer(root: Path) -> Iterator[None]:
    lock = FileLock(str(root / LOCK), timeout=10)
    try:
        lock.acquire()
    except Timeout as err:
        raise FetchError(f"another fetch is writing into {root} (it holds {lock.lock_file}); wait for it to end, "
                         "or fetch into another folder") from err
    except OSError as err:
        raise FetchError(_cannot_write(err, f"cannot open the lock file {lock.lock_file}", root)) from err
    try:
        yield
    finally:
        lock.release()
