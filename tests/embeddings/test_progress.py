"""An extraction shows how many images are embedded, at what rate (forced on: tests have no terminal)."""

from tests.conftest import write_store
from tests.embeddings.test_extractor import make_trainer, tiny_backbone
from xferlab.backbones.channels import NaturalMapping
from xferlab.backbones.preprocess import Preprocessor
from xferlab.embeddings.extractor import extract_embeddings


def test_extraction_counts_every_image_with_its_rate(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XFERLAB_PROGRESS", "1")
    store = write_store(tmp_path / "s.zarr", n_per_class=5, size=16, chunk_rows=4)
    backbone = tiny_backbone()
    adapter = NaturalMapping("natural", store.channel_names, backbone.in_channels)
    capsys.readouterr()
    extract_embeddings(store, backbone, adapter, Preprocessor(16, "zscore"), tmp_path / "cache", make_trainer,
                       batch_size=6)
    err = capsys.readouterr().err
    assert f"extract {backbone.name}" in err and f"{len(store)}/{len(store)}" in err and "img/s" in err
    extract_embeddings(store, backbone, adapter, Preprocessor(16, "zscore"), tmp_path / "cache", make_trainer)
    assert "extract" not in capsys.readouterr().err  # a cache hit extracts nothing
