"""The OpenCell z-projections from the release's public S3 bucket, into the layout
`dataset=opencell_raw` imports::

    <root>/<GENE>_<ENSG>/OC-FOV_<GENE>_<ENSG>_<CID>_<FID>_proj.tif
    <root>/FETCHED.jsonl      one line per file fetched: key, size, ETag, sha256, time

Read anonymously with s3fs (bucket, prefix, endpoint and region are settings, see `Release`).
Targets are chosen by label rule (`single_grade3`: the 825 targets of the study; `multilabel`),
by a list of gene names or ENSG ids, or `all`; at most `max_fovs` FOVs per target (first by name).

A file already present with the listed size and recorded in `FETCHED.jsonl` with the listed ETag
is skipped: a second run resumes where an interrupted one stopped. A file present without a
record is skipped only when its bytes give the listed ETag (see below). Everything else is fetched
again and the summary says why: the ETag changed on the server since the last fetch, or the local
copy is damaged or incomplete (its size or checksum differs while the server's ETag did not).
Each file is streamed to a temporary name and renamed only once it is verified, so nothing
half-written or unverified ever carries a final name or a manifest record. The root folder is
created only once the listing succeeded; a run that wrote no file leaves no folder, lock or
empty target folder it created behind (a folder that was there before is kept).

Verification (ETags, see `xferlab.data.etags`):

- single-part upload: the ETag is the md5 of the bytes; compared with the md5 of what arrived.
- multipart upload (ETag ``<hex>-<n>``): ``HEAD`` with ``PartNumber=1`` gives the part size
  (its ContentLength) and ``PartsCount``; the md5 of each part is computed while streaming and
  the ETag recomputed and compared. Parts of unequal sizes are asked for one by one. A server
  that gives no ``PartsCount`` (or a different one than the ETag's) fails the file with a message
  saying so: it is never kept unverified. A multipart file present without a record is checked
  the same way from its local bytes (one HEAD), and fetched again if it differs.
- any other ETag (none, or not an md5, as with some server-side encryption): size only.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from xferlab.data import etags
from xferlab.data.fetched import (CHANGED, COMPLETE, DAMAGED, MANIFEST, FetchError, ManifestWriter, local_copy,
                                  read_manifest, writing_into)
from xferlab.data.importers.opencell_raw import FILE_PATTERN, FOLDER_PATTERN
from xferlab.data.labels import RULES, opencell_annotations, target_labels
from xferlab.runtime.io import DiskFullError, NotWritableError
from xferlab.runtime.transfer import Progress, TransferError, read_blocks, stream_to

log = logging.getLogger(__name__)

ALL = "all"
__all__ = ["ALL", "MANIFEST", "FetchError", "Plan", "Release", "RemoteFov", "Summary", "fetch", "plan", "read_manifest"]


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
        return self.etag.lower() if len(self.etag) == 32 and "-" not in self.etag else None

    @property
    def parts(self) -> int | None:
        """The number of parts of a multipart upload's ETag (`<hex>-<n>`); None for other ETags."""
        return etags.parts(self.etag)


@dataclass
class Summary:
    planned: int = 0
    fetched: int = 0
    bytes: int = 0
    skipped: int = 0
    updated: list[str] = field(default_factory=list)   # present but changed on the server: fetched again
    repaired: dict[str, str] = field(default_factory=dict)  # relpath -> what is wrong with the local copy
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
        again = "fetched again" if not self.failed else "fetched again (unless FAILED below)"
        out += [f"  changed on the server since the last fetch (its ETag differs), {again}: {p}" for p in self.updated]
        out += [f"  {why}; {again}: {p}" for p, why in self.repaired.items()]
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


# ---------------------------------------------------------------- fetching

def fetch(release: Release, root: str | Path, selection: str | Sequence[str] = "single_grade3",
          max_fovs: int | None = None, workers: int = 8, progress: bool = True,
          planned: Plan | None = None, fs=None) -> Summary:
    """Fetch what `plan` finds (or `planned`) into `root`; returns the summary (failures
    included, not raised). `KeyboardInterrupt` stops it with every finished file kept."""
    root = Path(root).expanduser()
    fs = fs or release.filesystem()
    started = time.monotonic()
    planned = plan(release, selection, max_fovs, workers, fs) if planned is None else planned
    summary = Summary(planned=len(planned.fovs), absent=planned.absent, empty=planned.empty)
    folders = sorted({fov.folder for fov in planned.fovs})
    with writing_into(root, folders, wrote=lambda: summary.fetched > 0):
        for folder in folders:  # temporaries of a fetch that was killed
            for stale in (root / folder).glob(".OC-FOV_*.tmp-*"):
                stale.unlink(missing_ok=True)
        manifest, todo = read_manifest(root), []
        for fov in planned.fovs:
            state, why = local_copy(root / fov.relpath, fov, manifest.get(fov.relpath), fs)
            if state == COMPLETE:
                summary.skipped += 1
                continue
            if state == CHANGED:
                summary.updated.append(fov.relpath)
            elif state == DAMAGED:
                summary.repaired[fov.relpath] = why
            todo.append(fov)
        _download_all(fs, todo, root, ManifestWriter(root, release.endpoint_url), summary, workers, progress)
    summary.seconds = time.monotonic() - started
    return summary


def _download_all(fs, todo: list[RemoteFov], root: Path, writer: ManifestWriter, summary: Summary, workers: int,
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
        except BaseException as err:
            bar.file_failed(streamed)  # what a failed file streamed is not fetched: the bar ends short of 100 %
            if not isinstance(err, Exception):
                raise
            with counting:  # recorded in the summary, with the file named
                summary.failed[fov.relpath] = str(err)
        else:
            writer.add(fov, digest)
            bar.file_done()
            with counting:
                summary.fetched += 1
                summary.bytes += fov.size

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
        check, digests = None, ()
        if fov.parts is not None:
            etag = etags.MultipartEtag(etags.remote_part_sizes(fs, fov.key, fov.size, fov.etag))
            check, digests = _etag_check(fs, etag, fov, dest), (etag,)
        with fs.open(fov.key, "rb", block_size=8 << 20) as f:
            return stream_to(dest, read_blocks(f), source=source, size=fov.size, md5=fov.md5, on_bytes=on_bytes,
                             check=check, digests=digests)
    except (TransferError, DiskFullError, NotWritableError):
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


def _etag_check(fs, etag: etags.MultipartEtag, fov: RemoteFov, dest: Path):
    def check(tmp: Path) -> None:
        got, sizes = etags.settle(tmp, fov.etag, etag.hexdigest(), etag.sizes,
                                  lambda: etags.remote_part_sizes(fs, fov.key, fov.size, fov.etag, every_part=True))
        if got != fov.etag.lower():
            raise TransferError(f"s3://{fov.key}: checksum mismatch: multipart ETag {got} of the received bytes "
                                f"({len(sizes)} parts, the first {sizes[0]:,} bytes), the server lists {fov.etag}; "
                                f"the file changed on the server or was damaged in transit. Nothing was kept at "
                                f"{dest}. Run the command again")
    return check
