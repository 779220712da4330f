"""The backbones shipped with xferlab load strictly, match their manifest, stay small, and learned:
their manifests hold the per-epoch curves (DINO loss, kNN accuracy on the evaluation domain's
validation split) that show it."""

import pytest

from tests.conftest import compose_config
from xferlab.backbones.weights import file_sha256
from xferlab.runtime.building import build
from xferlab.ssl.export import read_manifest, shipped_dir

SOURCES = ("synth_opencell", "synth_hpa", "synth_photos")
PRETRAIN_SEEDS = (0, 1, 2)
SHIFTS = ("synth_shift33", "synth_shift67", "synth_shift100")
SHIPPED = [(s, k) for s in SOURCES for k in PRETRAIN_SEEDS] + [(s, 0) for s in SHIFTS]


@pytest.mark.parametrize("name, seed", SHIPPED)
def test_shipped_backbone_loads_strictly_and_matches_its_manifest(name, seed):
    manifest = read_manifest()
    key = f"{name}_s{seed}"
    assert key in manifest, f"{key} is not in {shipped_dir() / 'manifest.json'}; run `make pretrain`"
    entry = manifest[key]
    path = shipped_dir() / entry["file"]
    assert file_sha256(path) == entry["sha256"]
    assert path.stat().st_size <= 10 * 1024 * 1024
    for k in ("command", "config", "git_revision", "data_fingerprint", "pretrain_seconds", "curves"):
        assert entry[k], k
    backbone = build(compose_config([f"backbone={name}", f"backbone.pretrain_seed={seed}",
                                     "paths.output_dir=/tmp/x"]).backbone)
    assert backbone.file_sha256 == entry["sha256"] and backbone.pretrain_seed == seed
    assert len(backbone.in_channels) == len(entry["in_channels"])


@pytest.mark.parametrize("name, seed", SHIPPED)
def test_shipped_backbone_learned(name, seed):
    """The loss ends well below its uniform bound ln(out_dim) (a teacher that says nothing), and the
    kNN accuracy has levelled off: its last epochs gain little next to what training gained."""
    entry = read_manifest()[f"{name}_s{seed}"]
    curves = entry["curves"]
    assert len(curves) == entry["epochs"] >= 4
    assert entry["final_loss"] < 0.8 * entry["uniform_loss"]
    knn = [c["val/knn_accuracy"] for c in curves]
    gained = max(knn) - knn[0]
    assert gained > 0
    assert max(knn[-3:]) - min(knn[-3:]) < 0.5 * gained + 0.01
