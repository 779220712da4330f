"""OpenCell z-projections fetched from a real S3-compatible server (moto) on 127.0.0.1 holding
2-channel TIFF FOVs in the release's layout."""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pytest
import tifffile

from tests.conftest import compose_config
from xferlab import fetch as fetch_command
from xferlab.data.labels import opencell_annotations, target_labels
from xferlab.data.opencell_s3 import MANIFEST, FetchError, Release, fetch, plan, read_manifest
from xferlab.runtime.building import build

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

PREFIX = "microscopy/raw/"
TARGETS = {  # real targets: LAMP2 and CYP51A1 are in single_grade3, CDC27 is not (two grade-3 classes)
    "LAMP2": "ENSG00000005893",
    "CYP51A1": "ENSG00000001630",
    "CDC27": "ENSG00000004897",
}


@pytest.fixture(scope="module")
def endpoint():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


class Bucket:
    def __init__(self, endpoint: str):
        self.name = f"opencell-{uuid.uuid4().hex[:12]}"
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-west-2",
                                   aws_access_key_id="test", aws_secret_access_key="test")
        self.client.create_bucket(Bucket=self.name, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        self.release = Release(bucket=self.name, prefix=PREFIX, endpoint_url=endpoint)
        self.objects: dict[str, bytes] = {}

    def put(self, relpath: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=PREFIX + relpath, Body=data, ACL="public-read")
        self.objects[relpath] = data

    def add_target(self, gene: str, n_fovs: int, seed: int = 0) -> list[str]:
        ensg, rng, paths = TARGETS[gene], np.random.default_rng(seed), []
        for i in range(n_fovs):
            stem = f"{gene}_{ensg}/OC-FOV_{gene}_{ensg}_CID00{i % 3}_FID0000{i}"
            self.put(f"{stem}_proj.tif", fov_tiff(rng))
            self.put(f"{stem}_stack.tif", b"a z-stack: not fetched")
            paths.append(f"{stem}_proj.tif")
        return paths


def fov_tiff(rng, size: int = 48) -> bytes:
    """A (2, size, size) uint16 FOV: two bright nuclei on the Hoechst channel, noise on the protein's."""
    yy, xx = np.mgrid[:size, :size]
    nucleus = np.full((size, size), 100, np.uint16)
    for y, x in ((14, 14), (32, 30)):
        nucleus[(yy - y) ** 2 + (xx - x) ** 2 <= 36] = 3000
    protein = rng.integers(50, 800, (size, size)).astype(np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.stack([nucleus, protein]))
    return buf.getvalue()


@pytest.fixture
def bucket(endpoint) -> Bucket:
    return Bucket(endpoint)


def proj_files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and p.parent != root}


def test_fetch_by_label_rule_caps_fovs_records_a_manifest_and_imports(bucket, tmp_path):
    lamp2 = bucket.add_target("LAMP2", 3)
    cyp = bucket.add_target("CYP51A1", 2, seed=1)
    bucket.add_target("CDC27", 2, seed=2)
    root = tmp_path / "opencell"
    summary = fetch(bucket.release, root, selection="single_grade3", max_fovs=2, workers=3, progress=False)
    expected = lamp2[:2] + cyp  # the rule's targets only, the first 2 FOVs by name; no z-stacks
    assert proj_files(root) == {p: bucket.objects[p] for p in expected}
    assert (summary.fetched, summary.skipped, summary.failed) == (4, 0, {})
    assert summary.bytes == sum(len(bucket.objects[p]) for p in expected)
    rule = target_labels(opencell_annotations(), "single_grade3").table
    assert len(summary.absent) == int((rule["label"] >= 0).sum()) - 2  # the rule's targets this bucket lacks
    manifest = read_manifest(root)
    assert set(manifest) == set(expected)
    record = manifest[lamp2[0]]
    assert record["key"] == f"{bucket.name}/{PREFIX}{lamp2[0]}" and record["size"] == len(bucket.objects[lamp2[0]])
    assert record["etag"] and record["fetched_at"]

    cfg = compose_config(["dataset=opencell_raw", f"dataset.root={root}", "dataset.mode=fov", "dataset.size=16",
                          f"paths.output_root={tmp_path / 'out'}"])
    store = build(cfg.dataset).open(tmp_path / "data")
    assert len(store.samples) == 4
    assert sorted(set(store.samples["target"])) == ["CYP51A1", "LAMP2"]
    assert (store.samples["label"] >= 0).all()


def test_an_interrupted_fetch_keeps_no_partial_file_and_resumes(bucket, tmp_path, monkeypatch):
    files = sorted(bucket.add_target("LAMP2", 5))  # fetched in this order with one worker
    root = tmp_path / "opencell"
    import xferlab.data.opencell_s3 as module

    real, calls = module.stream_to, []

    def interrupted_on_third(dest, blocks, **kw):
        calls.append(dest)
        if len(calls) == 3:
            def half():
                for chunk in blocks:
                    yield chunk[: len(chunk) // 2]
                    raise KeyboardInterrupt
            return real(dest, half(), **kw)
        return real(dest, blocks, **kw)

    monkeypatch.setattr(module, "stream_to", interrupted_on_third)
    with pytest.raises(KeyboardInterrupt):
        fetch(bucket.release, root, selection=["LAMP2"], workers=1, progress=False)
    monkeypatch.setattr(module, "stream_to", real)
    done = proj_files(root)  # the first two, and the one a busy worker may have finished meanwhile
    assert set(files[:2]) <= set(done) and files[2] not in done and len(done) < len(files)
    assert done == {p: bucket.objects[p] for p in done}  # every file under its final name is complete
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]
    assert set(read_manifest(root)) == set(done)

    summary = fetch(bucket.release, root, selection=["LAMP2"], workers=2, progress=True)
    assert (summary.skipped, summary.fetched, summary.failed) == (len(done), len(files) - len(done), {})
    assert proj_files(root) == {p: bucket.objects[p] for p in files}


def test_an_object_changed_or_truncated_after_listing_is_named_and_not_kept(bucket, tmp_path):
    files = bucket.add_target("LAMP2", 3)
    planned = plan(bucket.release, ["LAMP2"])
    changed, truncated = files[0], files[1]
    original = bucket.objects[changed]
    bucket.put(changed, original[:-4] + b"\x00\x01\x02\x03")  # same size, other bytes
    bucket.put(truncated, bucket.objects[truncated][:100])
    root = tmp_path / "opencell"
    summary = fetch(bucket.release, root, planned=planned, workers=2, progress=False)
    assert set(summary.failed) == {changed, truncated} and summary.fetched == 1
    for path, why in summary.failed.items():
        assert f"{bucket.name}/{PREFIX}{path}" in why and ("changed" in why or "truncated" in why)
        assert not (root / path).exists()
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]

    summary = fetch(bucket.release, root, selection=["LAMP2"], progress=False)  # a fresh listing: all fetched
    assert summary.failed == {} and proj_files(root) == {p: bucket.objects[p] for p in files}
    bucket.put(files[2], bucket.objects[files[0]])  # a new version on the server after the fetch
    summary = fetch(bucket.release, root, selection=["LAMP2"], progress=False)
    assert summary.updated == [files[2]] and summary.skipped == 2
    assert (root / files[2]).read_bytes() == bucket.objects[files[2]]


def test_empty_prefix_and_missing_targets_are_clear_errors(bucket, tmp_path):
    root = tmp_path / "opencell"
    with pytest.raises(FetchError, match=f"s3://{bucket.name}/nothing/ .*holds no <GENE>_<ENSG> target folders"):
        fetch(Release(bucket.name, "nothing/", bucket.release.endpoint_url), root, progress=False)
    bucket.add_target("LAMP2", 1)
    with pytest.raises(FetchError, match=r"target\(s\) \['CYP51A1 \(ENSG00000001630\)'\] not found"):
        fetch(bucket.release, root, selection=["LAMP2", "CYP51A1"], progress=False)
    with pytest.raises(FetchError, match=r"unknown target\(s\) \['NOT_A_GENE'\]"):
        fetch(bucket.release, root, selection=["LAMP2", "NOT_A_GENE"], progress=False)
    assert proj_files(root) == {}


def test_fetch_images_command(bucket, tmp_path, capsys):
    files = bucket.add_target("CYP51A1", 2)
    root = tmp_path / "opencell"
    args = ["--no-progress", "images", "--root", str(root), "--bucket", bucket.name,
            "--endpoint-url", bucket.release.endpoint_url]
    assert fetch_command.main(args + ["--targets", "CYP51A1"]) == 0
    out = capsys.readouterr().out
    assert "2 fetched" in out and f"dataset.root={root}" in out
    assert proj_files(root) == {p: bucket.objects[p] for p in files}
    assert fetch_command.main(args + ["--targets", "CYP51A1"]) == 0
    assert "2 already complete" in capsys.readouterr().out
    assert fetch_command.main(args + ["--targets", "LAMP2"]) == 2
    assert "LAMP2" in capsys.readouterr().err
    lines = (root / MANIFEST).read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["path"] in files for line in lines)


def test_an_unreachable_endpoint_is_one_clear_error(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError, match=r"cannot list s3://czb-opencell/microscopy/raw/ .*Offline, the endpoint"):
        fetch(Release(endpoint_url=f"http://127.0.0.1:{port}"), tmp_path / "opencell", progress=False)
