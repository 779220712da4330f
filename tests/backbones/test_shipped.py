"""The backbones shipped with xferlab load strictly, match their manifest, and stay small."""

import pytest

from tests.conftest import compose_config
from xferlab.backbones.weights import file_sha256
from xferlab.runtime.building import build
from xferlab.ssl.export import read_manifest, shipped_dir

SHIPPED = ("synth_opencell", "synth_hpa", "synth_photos")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_backbone_loads_strictly_and_matches_its_manifest(name):
    manifest = read_manifest()
    assert name in manifest, f"{name} is not in {shipped_dir() / 'manifest.json'}; run `make pretrain`"
    entry = manifest[name]
    path = shipped_dir() / entry["file"]
    assert file_sha256(path) == entry["sha256"]
    assert path.stat().st_size <= 10 * 1024 * 1024
    for key in ("command", "config", "git_revision", "data_fingerprint", "pretrain_seconds"):
        assert entry[key], key
    backbone = build(compose_config([f"backbone={name}", "paths.output_dir=/tmp/x"]).backbone)
    assert backbone.file_sha256 == entry["sha256"]
    assert len(backbone.in_channels) == len(entry["in_channels"])
