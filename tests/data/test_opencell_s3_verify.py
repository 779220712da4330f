"""What an OpenCell fetch verifies and reports, against the moto S3 server on 127.0.0.1 of
`test_opencell_s3`: multipart ETags recomputed (moto answers HEAD with PartNumber with the part's
ContentLength and PartsCount, as AWS does), damaged local copies told apart from server changes,
the progress bar, the root folder a failed run leaves (none), and an unwritable root."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

import xferlab
import xferlab.data.opencell_s3 as module
from tests.data.test_opencell_s3 import PREFIX, TARGETS, Bucket, endpoint, proj_files  # noqa: F401 - fixture
from xferlab import fetch as fetch_command
from xferlab.data.opencell_s3 import MANIFEST, FetchError, fetch, plan, read_manifest

MiB = 1 << 20
LAMP2 = f"LAMP2_{TARGETS['LAMP2']}"


@pytest.fixture
def bucket(endpoint) -> Bucket:  # noqa: F811 - the imported server fixture
    return Bucket(endpoint)


def big_fov_tiff(seed: int, shape=(2, 1900, 1600)) -> bytes:
    """A realistic (2, 1900, 1600) uint16 FOV TIFF of 11.6 MiB: enough for parts of 5 MiB."""
    image = np.random.default_rng(seed).integers(0, 4096, shape).astype(np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, image)
    return buf.getvalue()


def put_multipart(bucket: Bucket, relpath: str, data: bytes, part_sizes: list[int]) -> str:
    """Upload `data` in parts of `part_sizes` bytes (the last part takes the rest); its ETag."""
    key, bounds = PREFIX + relpath, np.cumsum([0, *part_sizes]).tolist() + [len(data)]
    upload = bucket.client.create_multipart_upload(Bucket=bucket.name, Key=key, ACL="public-read")
    parts = []
    for n, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]), 1):
        done = bucket.client.upload_part(Bucket=bucket.name, Key=key, PartNumber=n, UploadId=upload["UploadId"],
                                         Body=data[a:b])
        parts.append({"ETag": done["ETag"], "PartNumber": n})
    bucket.client.complete_multipart_upload(Bucket=bucket.name, Key=key, UploadId=upload["UploadId"],
                                            MultipartUpload={"Parts": parts})
    bucket.objects[relpath] = data
    return bucket.client.head_object(Bucket=bucket.name, Key=key)["ETag"].strip('"')


def fov_path(n: int) -> str:
    return f"{LAMP2}/OC-FOV_LAMP2_{TARGETS['LAMP2']}_CID001_FID0000{n}_proj.tif"


def flip_a_byte_of(path_fragment: str, monkeypatch) -> list:
    """Damage in flight: one byte of the first block of the file named `path_fragment` flips
    between the server and the disk (the size stays right)."""
    real, damaged = module.stream_to, []

    def stream_to(dest, blocks, **kw):
        if path_fragment not in str(dest):
            return real(dest, blocks, **kw)
        damaged.append(dest)

        def flipped():
            for i, chunk in enumerate(blocks):
                yield (bytes([chunk[0] ^ 0xFF]) + chunk[1:]) if i == 0 else chunk
        return real(dest, flipped(), **kw)

    monkeypatch.setattr(module, "stream_to", stream_to)
    return damaged


def test_moto_reports_the_part_layout_of_a_multipart_object(bucket):
    data = big_fov_tiff(0)
    etag = put_multipart(bucket, fov_path(1), data, [5 * MiB, 5 * MiB])
    head = bucket.client.head_object(Bucket=bucket.name, Key=PREFIX + fov_path(1), PartNumber=1)
    assert etag.endswith("-3") and head["PartsCount"] == 3 and head["ContentLength"] == 5 * MiB


def test_multipart_objects_are_verified_by_their_recomputed_etag(bucket, tmp_path):
    uniform, uneven = big_fov_tiff(0), big_fov_tiff(1)
    put_multipart(bucket, fov_path(1), uniform, [5 * MiB, 5 * MiB])
    put_multipart(bucket, fov_path(2), uneven, [5 * MiB, 6 * MiB])  # fits one part size too: 5 + 5 + 1.6 MiB
    root = tmp_path / "opencell"
    summary = fetch(bucket.release, root, selection=["LAMP2"], workers=2, progress=False)
    assert (summary.fetched, summary.failed) == (2, {})
    manifest = read_manifest(root)
    for relpath, data in ((fov_path(1), uniform), (fov_path(2), uneven)):
        assert (root / relpath).read_bytes() == data
        assert manifest[relpath]["sha256"] == hashlib.sha256(data).hexdigest()
        assert manifest[relpath]["etag"].endswith("-3")
    summary = fetch(bucket.release, root, selection=["LAMP2"], progress=False)
    assert (summary.skipped, summary.fetched) == (2, 0)


def test_a_multipart_object_damaged_in_flight_is_refused_and_fetched_by_the_next_run(bucket, tmp_path, monkeypatch):
    data, small = big_fov_tiff(0), b"a single-part FOV"
    etag = put_multipart(bucket, fov_path(1), data, [5 * MiB, 5 * MiB])
    bucket.put(fov_path(2), small)
    root = tmp_path / "opencell"
    damaged = flip_a_byte_of("FID00001", monkeypatch)
    summary = fetch(bucket.release, root, selection=["LAMP2"], workers=2, progress=False)
    assert damaged and summary.fetched == 1 and list(summary.failed) == [fov_path(1)]
    why = summary.failed[fov_path(1)]
    assert f"{bucket.name}/{PREFIX}{fov_path(1)}" in why and "checksum mismatch: multipart ETag" in why and etag in why
    assert any("FAILED" in line and "checksum mismatch: multipart ETag" in line for line in summary.lines())
    assert not (root / fov_path(1)).exists() and not [p for p in root.rglob("*") if ".tmp-" in p.name]
    assert set(read_manifest(root)) == {fov_path(2)}

    monkeypatch.undo()
    summary = fetch(bucket.release, root, selection=["LAMP2"], progress=False)
    assert (summary.fetched, summary.skipped, summary.failed) == (1, 1, {})
    assert read_manifest(root)[fov_path(1)]["sha256"] == hashlib.sha256(data).hexdigest()
    assert proj_files(root) == {fov_path(1): data, fov_path(2): small}


def test_an_unrecorded_multipart_file_is_verified_before_it_is_trusted(bucket, tmp_path):
    data = big_fov_tiff(0)
    put_multipart(bucket, fov_path(1), data, [5 * MiB, 5 * MiB])
    root = tmp_path / "opencell"
    fetch(bucket.release, root, selection=["LAMP2"], progress=False)
    (root / MANIFEST).unlink()  # e.g. killed between the rename and the manifest line
    summary = fetch(bucket.release, root, selection=["LAMP2"], progress=False)
    assert (summary.skipped, summary.fetched) == (1, 0)  # its bytes give the ETag

    assert not (root / MANIFEST).exists()  # a file verified but not fetched adds no record
    local = bytearray(data)
    local[6 * MiB] ^= 0xFF  # same size, one byte off in the second part
    (root / fov_path(1)).write_bytes(bytes(local))
    summary = fetch(bucket.release, root, selection=["LAMP2"], progress=False)
    assert (summary.skipped, summary.fetched, summary.failed) == (0, 1, {})
    assert "local copy damaged" in summary.repaired[fov_path(1)] and summary.updated == []
    assert (root / fov_path(1)).read_bytes() == data


class IgnoresPartNumber:
    """An S3 server that ignores PartNumber on HEAD (answers for the whole object, no PartsCount):
    the real moto server behind s3fs, with the parameter dropped from the request."""

    def __init__(self, fs):
        self._fs = fs

    def __getattr__(self, name):
        return getattr(self._fs, name)

    def call_s3(self, method, **kwargs):
        kwargs.pop("PartNumber", None)
        return self._fs.call_s3(method, **kwargs)


def test_a_server_without_a_part_count_fails_a_multipart_file_clearly(bucket, tmp_path):
    put_multipart(bucket, fov_path(1), big_fov_tiff(0), [5 * MiB, 5 * MiB])
    bucket.put(fov_path(2), b"a single-part FOV")
    root = tmp_path / "opencell"
    fs = IgnoresPartNumber(bucket.release.filesystem())
    summary = fetch(bucket.release, root, selection=["LAMP2"], progress=False, fs=fs)
    assert summary.fetched == 1 and list(summary.failed) == [fov_path(1)]
    assert "no PartsCount" in summary.failed[fov_path(1)] and "not kept unverified" in summary.failed[fov_path(1)]
    assert not (root / fov_path(1)).exists() and set(read_manifest(root)) == {fov_path(2)}


def test_a_truncated_local_copy_is_reported_as_damaged_not_as_changed_on_the_server(bucket, tmp_path):
    files = bucket.add_target("LAMP2", 3)
    root = tmp_path / "opencell"
    fetch(bucket.release, root, selection=["LAMP2"], progress=False)
    truncated, changed = files[0], files[1]
    (root / truncated).write_bytes(bucket.objects[truncated][:100])  # the manifest still records the same ETag
    bucket.put(changed, bucket.objects[files[2]])  # a real change on the server: another ETag
    summary = fetch(bucket.release, root, selection=["LAMP2"], progress=False)
    assert summary.updated == [changed] and list(summary.repaired) == [truncated]
    assert "local copy damaged or incomplete" in summary.repaired[truncated] and "100 bytes on disk" in \
        summary.repaired[truncated]
    lines = "\n".join(summary.lines())
    assert f"changed on the server since the last fetch (its ETag differs), fetched again: {changed}" in lines
    assert "local copy damaged or incomplete" in lines and f"fetched again: {truncated}" in lines
    assert not any("changed on the server" in line and truncated in line for line in summary.lines())
    assert proj_files(root) == {p: bucket.objects[p] for p in files}


def test_fetch_command_takes_no_progress_after_the_command(bucket, tmp_path, capsys, monkeypatch):
    files = bucket.add_target("CYP51A1", 2)
    root = tmp_path / "opencell"
    assert fetch_command.main(["images", "--root", str(root), "--bucket", bucket.name, "--endpoint-url",
                               bucket.release.endpoint_url, "--targets", "CYP51A1", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "2 fetched" in out and "OpenCell images" not in err  # no bar
    assert proj_files(root) == {p: bucket.objects[p] for p in files}
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path / "weights"))
    assert fetch_command.main(["weights", "--list", "--no-progress", "--offline"]) == 0
    assert "weights folder:" in capsys.readouterr().out


def every_download_fails(bucket: Bucket):
    """A plan of two FOVs both truncated on the server after the listing: both downloads fail."""
    files = bucket.add_target("LAMP2", 2)
    planned = plan(bucket.release, ["LAMP2"])
    for relpath in files:
        bucket.put(relpath, bucket.objects[relpath][:100])
    return planned


def test_a_run_that_fetched_nothing_leaves_no_folder_behind(bucket, tmp_path):
    root = tmp_path / "new" / "opencell"
    bucket.add_target("LAMP2", 1)
    with pytest.raises(FetchError, match="unknown target"):
        fetch(bucket.release, root, selection=["NOT_A_GENE"], progress=False)
    assert not (tmp_path / "new").exists()

    planned = every_download_fails(bucket)
    summary = fetch(bucket.release, root, planned=planned, progress=False)
    assert len(summary.failed) == 2 and summary.fetched == 0
    assert not (tmp_path / "new").exists()  # neither the root nor the parent it needed

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    summary = fetch(bucket.release, mine, planned=planned, progress=False)
    assert len(summary.failed) == 2
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]  # kept, with nothing of the run's in it


def test_the_progress_bar_counts_only_what_was_fetched(bucket, tmp_path, monkeypatch, capsys):
    bars = []

    class Recorded(module.Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(module, "Progress", Recorded)
    planned = every_download_fails(bucket)
    summary = fetch(bucket.release, tmp_path / "opencell", planned=planned, workers=1, progress=True)
    assert len(summary.failed) == 2
    err = capsys.readouterr().err
    assert "100%" not in err and " 0%|" in err.split("\r")[-1] and "2 failed" in err
    assert bars[-1].bytes == 0 and bars[-1].failed == 2

    good = bucket.add_target("CYP51A1", 1, seed=3)[0]
    truncated = bucket.add_target("CDC27", 1, seed=4)[0]
    planned = plan(bucket.release, ["CYP51A1", "CDC27"])
    bucket.put(truncated, bucket.objects[truncated][:100])
    summary = fetch(bucket.release, tmp_path / "opencell", planned=planned, workers=1, progress=True)
    assert summary.fetched == 1 and list(summary.failed) == [truncated]
    assert bars[-1].bytes == len(bucket.objects[good]) and "100%" not in capsys.readouterr().err


def run_as_another_user(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python -m xferlab.fetch args` as a user the permission bits bind: this user, or `nobody`
    (via setpriv) when the tests run as root, whom no permission bit stops."""
    command = [sys.executable, "-m", "xferlab.fetch", *args]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: no user that permission bits stop")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    env = {**os.environ, "PYTHONPATH": str(Path(xferlab.__file__).parents[1]), "HOME": str(cwd)}
    if os.geteuid() == 0:  # `nobody` must reach the interpreter and xferlab (a clone in a 0700 folder it cannot)
        probe = subprocess.run([*command[:4], sys.executable, "-c", "import xferlab.fetch"], cwd=cwd, env=env,
                               capture_output=True, text=True, timeout=120)
        if probe.returncode:
            pytest.skip(f"user nobody cannot run this checkout's python and xferlab (a folder above it is not "
                        f"readable by others): {probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else ''}")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_a_root_that_is_not_writable_is_named_with_the_fix_not_a_retry(bucket):
    files = bucket.add_target("LAMP2", 1)
    base = Path(tempfile.mkdtemp(prefix="xferlab-readonly-"))  # outside pytest's private tmp: `nobody` can reach it
    try:
        base.chmod(0o777)
        used = base / "used"  # fetched into before, then made read-only; its lock file still writable
        used.mkdir()
        (used / ".fetch.lock").touch()
        (used / ".fetch.lock").chmod(0o666)
        locked = base / "locked" / "opencell"  # its parent cannot be written: the root cannot be created
        locked.parent.mkdir()
        folder = base / "folder"  # the root is writable, the target folder in it is not
        (folder / LAMP2).mkdir(parents=True)
        folder.chmod(0o777)
        for path in (used, locked.parent, folder / LAMP2):
            path.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        common = ["--no-progress", "images", "--bucket", bucket.name, "--endpoint-url", bucket.release.endpoint_url,
                  "--targets", "LAMP2", "--root"]
        for root, rc, named in ((used, 2, used), (locked, 2, locked.parent), (folder, 1, folder / LAMP2)):
            done = run_as_another_user(common + [str(root)], base)
            said = done.stdout + done.stderr
            assert done.returncode == rc, said
            assert f"{named} is not writable" in said and "check its permissions" in said, said
            assert "resume" not in said and "Traceback" not in said, said
        assert not (folder / files[0]).exists() and not (base / "locked" / "opencell").exists()
    finally:
        for path in base.rglob("*"):
            path.chmod(0o777) if path.is_dir() else None
        shutil.rmtree(base)
