"""Downloading the public checkpoints of `locations.KNOWN_CHECKPOINTS` by name, verified.

- DINO files: one HTTPS download from DINO's server (`XFERLAB_DINO_URL`, default
  https://dl.fbaipublicfiles.com/dino), size checked against Content-Length.
- DINOv2 / DINOv3 files: timm's `model.safetensors` from the Hugging Face hub (`HF_ENDPOINT`,
  default https://huggingface.co), size checked, and its sha256 against the one the hub announces
  (`X-Linked-Etag`).
- SubCell encoders: from CZI's public bucket over HTTPS (`XFERLAB_SUBCELL_URL`, default
  https://czi-subcell-public.s3.amazonaws.com/models), size checked.
- DINO4Cells files: the Zenodo record's file list is read from the REST API
  (`<XFERLAB_ZENODO_URL>/api/records/<id>`, default https://zenodo.org), which gives each file's
  md5. A checkpoint listed in the record is downloaded and its md5 checked; one inside a zip in the
  record is read alone with HTTP range requests (fsspec's zip over http; the member's CRC32 is
  checked), not the whole archive.

Then, before the file gets its final name, it is loaded strictly into the backbone it is for,
and its sha256 is recorded in `weights.lock`. One attempt, no retries; with `HF_HUB_OFFLINE=1`
nothing is attempted: one error says what to fetch and where to put it.
"""

from __future__ import annotations

import logging
import os
import posixpath
from pathlib import Path
from typing import Callable

from xferlab.backbones.locations import (KNOWN_CHECKPOINTS, KnownCheckpoint, record_lock, source_url, weights_dir,
                                         zenodo_url)
from xferlab.backbones.weights import WeightsError
from xferlab.runtime.transfer import OFFLINE_ENV, Progress, TransferError, offline, read_blocks, stream_to

log = logging.getLogger(__name__)

TIMEOUT = 30  # seconds to connect, and between bytes


def download_checkpoint(name: str, folder: Path | None = None, progress: bool = True,
                        verify: Callable[[Path, str], None] | None = None) -> Path:
    """Download the public checkpoint `name` into `folder` (default: the weights folder), verify
    it (publisher's checksum where there is one; strict loading into its backbone always), record
    its sha256 in `weights.lock`, and return its path. Two processes asking at once: one
    downloads, the other waits and finds the file."""
    from filelock import FileLock

    known = KNOWN_CHECKPOINTS.get(name)
    folder = Path(folder or weights_dir()).expanduser()
    dest = folder / name
    if known is None or not known.downloadable:
        from xferlab.backbones.locations import where_to_get

        raise WeightsError(f"{name} cannot be downloaded by xferlab: {where_to_get(name)}; put it at {dest}")
    if offline():
        raise WeightsError(
            f"{name} is not in the weights folder and downloads are off ({OFFLINE_ENV}=1). Fetch it online with "
            f"`{OFFLINE_ENV}=0 python -m xferlab.fetch weights {name}` (or run with {OFFLINE_ENV}=0 to download it "
            f"on first use), or download {source_url(known)} by hand and put it at {dest}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    verify = verify or verify_checkpoint
    with FileLock(str(folder / f".{name}.download.lock"), timeout=-1):
        if dest.is_file():
            return dest
        log.info("downloading %s (%s)", name, source_url(known))
        try:
            digest = _from_url(known, dest, verify, progress) if known.url else _from_zenodo(known, dest, verify, progress)
        except TransferError as err:
            raise WeightsError(f"{name}: {err}. By hand: download {source_url(known)} and put it at {dest}") from err
        record_lock(folder, name, digest)
    log.info("%s verified and recorded in weights.lock (sha256 %s)", dest, digest)
    return dest


def verify_checkpoint(path: Path, backbone: str) -> None:
    """Load `path` strictly into backbone `backbone` (its config in conf/backbone/), or raise."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import xferlab
    from xferlab.runtime.building import build

    overrides = [f"backbone={backbone}", f"backbone.weights={Path(path).resolve()}"]
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app (the preflight): its config path
        cfg = compose("train", overrides=overrides)
    else:
        conf = Path(xferlab.__file__).parent / "conf"
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
    build(cfg.backbone)


# ---------------------------------------------------------------- sources

def _http_error(url: str, err: Exception) -> TransferError:
    return TransferError(f"cannot download {url} ({type(err).__name__}: {err}). Offline, or the server is "
                         "unreachable; not retried. Run again when online, or download it by hand")


def _checker(known: KnownCheckpoint, source: str, verify) -> Callable[[Path], None]:
    def check(tmp: Path) -> None:
        try:
            verify(tmp, known.backbone)
        except (RuntimeError, ValueError) as err:  # WeightsError and timm's errors
            raise WeightsError(f"{known.file} downloaded from {source} does not load into backbone={known.backbone} "
                               f"({err}); nothing was kept. The publisher may have replaced the file: report it, "
                               "or use your own copy via backbone.weights=/path/to/file") from err

    return check


def _with_sha256(check: Callable[[Path], None], expected: str, source: str) -> Callable[[Path], None]:
    def checked(tmp: Path) -> None:
        from xferlab.backbones.weights import file_sha256

        got = file_sha256(tmp)
        if got != expected:
            raise TransferError(f"{source}: checksum mismatch: sha256 {got} of the received bytes, the server lists "
                                f"{expected}; the file changed on the server or was damaged in transit. Nothing was "
                                "kept. Run the command again")
        check(tmp)

    return checked


def _from_url(known: KnownCheckpoint, dest: Path, verify, progress: bool) -> str:
    return _get(source_url(known), dest, known, verify, progress, md5=None)


def published_sha256(response) -> str | None:
    """The sha256 the Hugging Face hub announces for a large file (`X-Linked-Etag` on its answer
    before the redirect to the storage), or None where the server gives none."""
    for r in [*response.history, response]:
        tag = (r.headers.get("X-Linked-Etag") or "").strip('"').lower()
        if len(tag) == 64 and all(c in "0123456789abcdef" for c in tag):
            return tag
    return None


def _get(url: str, dest: Path, known: KnownCheckpoint, verify, progress: bool, md5: str | None,
         size: int | None = None) -> str:
    import requests

    try:
        with requests.get(url, stream=True, timeout=TIMEOUT) as response:
            response.raise_for_status()
            length = response.headers.get("Content-Length")
            size = size if size is not None else (int(length) if length else None)
            bar = Progress(1, size or 0, what=dest.name, enabled=progress)
            check, sha256 = _checker(known, url, verify), published_sha256(response)
            if sha256 is not None:
                check = _with_sha256(check, sha256, url)
            try:
                return stream_to(dest, response.iter_content(1 << 20), source=url, size=size, md5=md5,
                                 check=check, on_bytes=bar.add_bytes)
            finally:
                bar.file_done()
                bar.close()
    except requests.exceptions.ChunkedEncodingError as err:  # the body ended before its Content-Length
        raise TransferError(f"download of {url} interrupted: the connection broke before the end of the file "
                            f"({err}); nothing was kept. Run again") from err
    except requests.RequestException as err:
        raise _http_error(url, err) from err


def record_files(record: str) -> list[dict]:
    """The Zenodo record's files: `key`, `size`, `md5` (or None), `url`."""
    import requests

    api = f"{zenodo_url()}/api/records/{record}"
    try:
        response = requests.get(api, timeout=TIMEOUT, headers={"Accept": "application/json"})
        response.raise_for_status()
        files = response.json().get("files")
    except requests.RequestException as err:
        raise _http_error(api, err) from err
    except ValueError as err:
        raise TransferError(f"{api} did not answer with a Zenodo record (JSON): {err}") from err
    if isinstance(files, dict):  # the newer layout: {"entries": {key: {...}}}
        files = list((files.get("entries") or {}).values())
    if not files:
        raise TransferError(f"{api} lists no files; the record may be restricted or moved: open "
                            f"{zenodo_url()}/records/{record} in a browser")
    out = []
    for f in files:
        key = f.get("key") or f.get("filename")
        checksum = str(f.get("checksum") or "")
        links = f.get("links") or {}
        out.append({"key": key, "size": f.get("size"), "md5": checksum[4:] if checksum.startswith("md5:") else None,
                    "url": links.get("content") or links.get("self") or f"{api}/files/{key}/content"})
    return out


def _from_zenodo(known: KnownCheckpoint, dest: Path, verify, progress: bool) -> str:
    wanted = known.member or known.file
    files = record_files(known.zenodo)
    for f in files:
        if posixpath.basename(f["key"]) == posixpath.basename(wanted):
            return _get(f["url"], dest, known, verify, progress, md5=f["md5"], size=f["size"])
    seen = []
    for f in files:
        if f["key"].lower().endswith(".zip"):
            try:
                fs = _zip_fs(f["url"])
            except Exception as err:  # noqa: BLE001 - aiohttp / zip errors: one clear message
                raise _http_error(f["url"], err) from err
            member, names = _find_member(fs, f["url"], wanted)
            seen += [f"{f['key']}:{n}" for n in names if n.endswith((".pth", ".pt", ".ckpt"))]
            if member is not None:
                return _member(fs, f["url"], f["key"], member, dest, known, verify, progress)
    raise TransferError(
        f"Zenodo record {known.zenodo} holds no {wanted}, neither as a file nor inside its zip archives. Files: "
        f"{[f['key'] for f in files]}; checkpoints inside archives: {seen[:20]}. Download the right one by hand "
        f"and put it at {dest}"
    )


def _zip_fs(url: str):
    import aiohttp
    import fsspec

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=TIMEOUT, sock_read=TIMEOUT)
    # 1 MiB range requests: the read-ahead past the member's end stays small
    return fsspec.filesystem("zip", fo=url, target_protocol="http", block_size=1 << 20,
                             target_options={"client_kwargs": {"timeout": timeout}, "block_size": 1 << 20})


def _find_member(fs, url: str, wanted: str) -> tuple[str | None, list[str]]:
    """The archive member named `wanted` (a path, or a base name anywhere), reading only the
    zip's central directory (a few range requests)."""
    try:
        names = list(fs.find(""))
    except Exception as err:  # noqa: BLE001 - aiohttp / zip errors: one clear message
        raise _http_error(url, err) from err
    exact = [n for n in names if n == wanted]
    by_name = [n for n in names if posixpath.basename(n) == posixpath.basename(wanted)]
    match = exact or by_name
    if len(match) > 1:
        raise TransferError(f"{url} holds several {posixpath.basename(wanted)}: {match}; name the one to use")
    return (match[0] if match else None), names


def _member(fs, url: str, key: str, member: str, dest: Path, known: KnownCheckpoint, verify, progress: bool) -> str:
    import zipfile

    source = f"{url} ({key}, member {member})"
    try:
        size = int(fs.info(member)["size"])
        bar = Progress(1, size, what=dest.name, enabled=progress)
        try:
            with fs.open(member, "rb") as f:  # zipfile checks the member's CRC32 when the read reaches its end
                return stream_to(dest, read_blocks(f), source=source, size=size,
                                 check=_checker(known, source, verify), on_bytes=bar.add_bytes)
        finally:
            bar.file_done()
            bar.close()
    except (TransferError, WeightsError):
        raise
    except zipfile.BadZipFile as err:
        raise TransferError(f"{source}: damaged in the archive or in transit ({err}); nothing was kept at {dest}. "
                            "Run again") from err
    except Exception as err:  # noqa: BLE001 - aiohttp / fsspec errors: one clear message
        raise _http_error(source, err) from err
