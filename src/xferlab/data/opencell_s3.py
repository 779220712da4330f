"""The OpenCell z-projections from the release's public S3 bucket, into the layout
`dataset=opencell_raw` imports::

    <root>/<GENE>_<ENSG>/OC-FOV_<GENE>_<ENSG>_<CID>_<FID>_proj.tif
    <root>/FETCHED.jsonl      one line per file fetched: key, size, ETag, sha256, time

Read anonymously with s3fs (bucket, prefix, endpoint and region are settings, see `Release`).
Targets are chosen by label rule (`single_grade3`: the 825 targets of the study; `multilabel`),
by a list of gene names or ENSG ids, or `all`; at most `max_fovs` FOVs per target (first by name).

A file already present with the listed size, and either recorded in `FETCHED.jsonl` with the
listed ETag or matching it by md5, is skipped: a second run resumes where an interrupted one
stopped, and fetches again only what changed on the server. Each file is streamed to a temporary
name and renamed once its size and md5 (the ETag of a single-part upload) match the listing, so
nothing half-written ever carries a final name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from filelock import FileLock, Timeout

from xferlab.data.importers.opencell_raw import FILE_PATTERN, FOLDER_PATTERN
from xferlab.data.labels import RULES, opencell_annotations, target_labels
from xferlab.runtime.transfer import Progress, TransferError, read_blocks, stream_to

log = logging.getLogger(__name__)

MANIFEST = "FETCHED.jsonl"
ALL = "all"


class FetchError(RuntimeError):
    """The selection cannot be fetched as asked (empty prefix, unknown or missing targets)."""


@dataclass(frozen=True)
class Release:
    """Where the OpenCell images are: `s3://<bucket>/<prefix><GENE>_<ENSG>/...proj.tif`."""

    bucket: str = "czb-opencell"
    prefix: str = "microscopy/raw/"
    endpoint_url: str | None = None  # None: AWS; or any S3-compatible server
    region: str = "us-west-2"

    @property
    def base(self) -> str:
        return f"{self.bucket}/{self.prefix.strip('/')}".rstrip("/")

    def url(self) -> str:
        return f"s3://{self.base}/" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(anon=True, endpoint_url=self.endpoint_url,
                                 client_kwargs={"region_name": self.region},
                                 config_kwargs={"connect_timeout": 20, "read_timeout": 60,
                                                "retries": {"max_attempts": 3, "mode": "standard"}})


@dataclass(frozen=True)
class RemoteFov:
    key: str   # bucket/prefix/<folder>/<name>
    size: int
    etag: str  # without quotes
    folder: str
    name: str

    @property
    def relpath(self) -> str:
        return f"{self.folder}/{self.name}"

    @property
    def md5(self) -> str | None:
        """The content's md5 when the ETag is one (single-part uploads); multipart ETags are not."""
        return self.etag if len(self.etag) == 32 and "-" not in self.etag else None


@dataclass
class Summary:
    planned: int = 0
    fetched: int = 0
    bytes: int = 0
    skipped: int = 0
    updated: list[str] = field(default_factory=list)   # present but changed on the server: fetched again
    failed: dict[str, str] = field(default_factory=dict)  # relpath -> reason
    absent: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        rate = self.bytes / self.seconds / 2**20 if self.seconds > 0 else 0.0
        out = [f"{self.planned} files planned: {self.fetched} fetched ({self.bytes / 2**20:,.1f} MiB, "
               f"{rate:,.1f} MiB/s), {self.skipped} already complete, {len(self.failed)} failed"]
        if self.absent:
            out.append(f"  {len(self.absent)} target(s) of the rule are not in the release: {self.absent[:10]}"
                       f"{' ...' if len(self.absent) > 10 else ''}")
        if self.empty:
            out.append(f"  {len(self.empty)} target folder(s) hold no *_proj.tif z-projection: {self.empty[:10]}")
        out += [f"  changed on the server since the last fetch, fetched again: {p}" for p in self.updated]
        out += [f"  FAILED {p}: {why}" for p, why in sorted(self.failed.items())]
        return out


# ---------------------------------------------------------------- choosing what to fetch

def target_folders(fs, release: Release) -> dict[str, str]:
    """ENSG id -> `<GENE>_<ENSG>` folder name under the release prefix."""
    try:
        entries = fs.ls(release.base, detail=False, refresh=True)
    except FileNotFoundError:
        entries = []
    except Exception as err:  # noqa: BLE001 - botocore / aiohttp errors: one clear message
        raise _unreachable(release, err) from err
    folders = {}
    for entry in entries:
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        match = FOLDER_PATTERN.match(name)
        if match:
            folders[match["ensg"]] = name
    if not folders:
        raise FetchError(f"{release.url()} holds no <GENE>_<ENSG> target folders: the prefix is empty or wrong. "
                         "Check --bucket / --prefix / --endpoint-url (the release keeps them under "
                         f"{Release.prefix!r} of bucket {Release.bucket!r})")
    return folders


def _unreachable(release: Release, err: Exception) -> FetchError:
    return FetchError(f"cannot list {release.url()} ({type(err).__name__}: {err}). Offline, the endpoint or region is "
                      "wrong (--endpoint-url, --region), or the bucket does not allow anonymous reads")


def selected_targets(selection: str | Sequence[str], folders: dict[str, str]) -> tuple[list[str], list[str]]:
    """Folder names for `selection` (a label rule, `all`, or gene names / ENSG ids), and the
    rule's targets the release lacks. A listed target the release lacks is an error naming it."""
    if isinstance(selection, str) and selection == ALL:
        return sorted(folders.values()), []
    if isinstance(selection, str) and selection in RULES:
        wanted = target_labels(opencell_annotations(), rule=selection).table
        wanted = wanted[wanted["label"] >= 0]
        absent = [f"{name}_{ensg}" for ensg, name in zip(wanted["ensg_id"], wanted["target_name"]) if ensg not in folders]
        return sorted(folders[e] for e in wanted["ensg_id"] if e in folders), absent
    names = [selection] if isinstance(selection, str) else list(selection)
    table = opencell_annotations().drop_duplicates("ensg_id")
    by_gene = dict(zip(table["target_name"].str.upper(), table["ensg_id"]))
    by_gene.update({folder.rsplit("_", 1)[0].upper(): ensg for ensg, folder in folders.items()})
    chosen, unknown, absent = set(), [], []
    for name in (n.strip() for n in names):
        ensg = name.upper() if name.upper().startswith("ENSG") else by_gene.get(name.upper())
        if ensg is None:
            unknown.append(name)
        elif ensg not in folders:
            absent.append(name if name.upper() == ensg else f"{name} ({ensg})")
        else:
            chosen.add(folders[ensg])
    if unknown:
        raise FetchError(f"unknown target(s) {unknown}: give OpenCell gene names or ENSG ids (e.g. LAMP2 or "
                         f"ENSG00000005893), a label rule {list(RULES)}, or {ALL!r}")
    if absent:
        raise FetchError(f"target(s) {absent} not found under the release prefix; check the names, or the --prefix / "
                         "--endpoint-url settings")
    return sorted(chosen), []


def list_fovs(fs, release: Release, folder: str, max_fovs: int | None) -> list[RemoteFov]:
    """The z-projections of one target folder (first `max_fovs` by name)."""
    entries = fs.ls(f"{release.base}/{folder}", detail=True, refresh=True)
    fovs = []
    for entry in entries:
        if entry.get("type") != "file":
            continue
        name = entry["name"].rsplit("/", 1)[-1]
        if FILE_PATTERN.match(name):
            etag = str(entry.get("ETag") or entry.get("etag") or "").strip('"')
            fovs.append(RemoteFov(entry["name"], int(entry["size"]), etag, folder, name))
    fovs.sort(key=lambda f: f.name)
    return fovs[:max_fovs] if max_fovs is not None else fovs


@dataclass
class Plan:
    fovs: list[RemoteFov]
    absent: list[str] = field(default_factory=list)  # targets of the rule that the release lacks
    empty: list[str] = field(default_factory=list)   # target folders without a z-projection


def plan(release: Release, selection: str | Sequence[str] = "single_grade3", max_fovs: int | None = None,
         workers: int = 8, fs=None) -> Plan:
    """Every file a fetch of `selection` covers (target folders listed in parallel)."""
    if max_fovs is not None and max_fovs < 1:
        raise FetchError(f"max_fovs={max_fovs}: give a positive number of FOVs per target, or none for all")
    fs = fs or release.filesystem()
    folders, absent = selected_targets(selection, target_folders(fs, release))
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            listed = list(pool.map(lambda folder: list_fovs(fs, release, folder, max_fovs), folders))
    except Exception as err:  # noqa: BLE001 - botocore / aiohttp errors: one clear message
        raise _unreachable(release, err) from err
    empty = [folder for folder, fovs in zip(folders, listed) if not fovs]
    return Plan([fov for fovs in listed for fov in fovs], absent, empty)


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


class _ManifestWriter:
    def __init__(self, root: Path, release: Release):
        self.path, self.release = Path(root) / MANIFEST, release
        self._lock = threading.Lock()

    def add(self, fov: RemoteFov, sha256: str) -> None:
        record = {"path": fov.relpath, "key": fov.key, "size": fov.size, "etag": fov.etag, "sha256": sha256,
                  "endpoint": self.release.endpoint_url, "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        line = json.dumps(record, sort_keys=True) + "\n"
        with self._lock, open(self.path, "a") as f:  # one short append per file: a kill tears at most the last line
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in read_blocks(f):
            h.update(chunk)
    return h.hexdigest()


def is_complete(path: Path, fov: RemoteFov, record: dict | None) -> bool | None:
    """True: present and the version listed. None: present but another version (it changed on
    the server since it was fetched). False: absent."""
    if not path.is_file():
        return False
    if path.stat().st_size != fov.size:
        return None
    if record is not None and record.get("size") == fov.size:
        return record.get("etag") == fov.etag or None
    return fov.md5 is None or _md5(path) == fov.md5 or None


# ---------------------------------------------------------------- fetching

def fetch(release: Release, root: str | Path, selection: str | Sequence[str] = "single_grade3",
          max_fovs: int | None = None, workers: int = 8, progress: bool = True,
          planned: Plan | None = None, fs=None) -> Summary:
    """Fetch what `plan` finds (or `planned`) into `root`; returns the summary (failures
    included, not raised). `KeyboardInterrupt` stops it with every finished file kept."""
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    fs = fs or release.filesystem()
    started = time.monotonic()
    planned = plan(release, selection, max_fovs, workers, fs) if planned is None else planned
    summary = Summary(planned=len(planned.fovs), absent=planned.absent, empty=planned.empty)
    with _sole_writer(root):
        for folder in sorted({fov.folder for fov in planned.fovs}):  # temporaries of a fetch that was killed
            for stale in (root / folder).glob(".OC-FOV_*.tmp-*"):
                stale.unlink(missing_ok=True)
        manifest, todo = read_manifest(root), []
        for fov in planned.fovs:
            state = is_complete(root / fov.relpath, fov, manifest.get(fov.relpath))
            if state:
                summary.skipped += 1
                continue
            if state is None:
                summary.updated.append(fov.relpath)
            todo.append(fov)
        _download_all(fs, todo, root, _ManifestWriter(root, release), summary, workers, progress)
    summary.seconds = time.monotonic() - started
    return summary


@contextmanager
def _sole_writer(root: Path) -> Iterator[None]:
    lock = FileLock(str(root / ".fetch.lock"), timeout=10)
    try:
        lock.acquire()
    except Timeout as err:
        raise FetchError(f"another fetch is writing into {root} (it holds {lock.lock_file}); wait for it to end, "
                         "or fetch into another folder") from err
    try:
        yield
    finally:
        lock.release()


def _download_all(fs, todo: list[RemoteFov], root: Path, writer: _ManifestWriter, summary: Summary, workers: int,
                  progress: bool) -> None:
    bar = Progress(len(todo), sum(f.size for f in todo), what="OpenCell images", enabled=progress)
    counting = threading.Lock()

    def one(fov: RemoteFov) -> None:
        streamed = 0

        def count(n: int) -> None:
            nonlocal streamed
            streamed += n
            bar.add_bytes(n)

        try:
            digest = _download(fs, fov, root / fov.relpath, count)
        except Exception as err:  # noqa: BLE001 - recorded in the summary, with the file named
            with counting:
                summary.failed[fov.relpath] = str(err)
        else:
            writer.add(fov, digest)
            with counting:
                summary.fetched += 1
                summary.bytes += fov.size
        finally:
            bar.file_done(max(0, fov.size - streamed))

    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        for _ in pool.map(one, todo):
            pass
    except BaseException:  # Ctrl-C: files being written finish or vanish; queued ones never start
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        bar.close()


def _download(fs, fov: RemoteFov, dest: Path, on_bytes) -> str:
    from fsspec.exceptions import FSTimeoutError
    from s3fs.utils import FileExpired

    source = f"s3://{fov.key}"
    try:
        with fs.open(fov.key, "rb", block_size=8 << 20) as f:
            return stream_to(dest, read_blocks(f), source=source, size=fov.size, md5=fov.md5, on_bytes=on_bytes)
    except TransferError:
        raise
    except FileNotFoundError as err:
        raise TransferError(f"{source}: gone from the server since it was listed; run the command again") from err
    except FileExpired as err:
        raise TransferError(f"{source}: changed on the server while downloading (its ETag changed); nothing was "
                            "kept; run the command again") from err
    except (OSError, FSTimeoutError) as err:
        name = type(err).__name__
        raise TransferError(f"{source}: download failed ({name}: {err}); nothing was kept; run the command "
                            "again to resume") from err
