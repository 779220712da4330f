"""The peers' loops run on tiny inputs: the same images reach the same model through each, and
the rows report xferlab over each peer (no timing assertions)."""

import numpy as np
import pytest
import torch
from PIL import Image

from xferlab.benchmarks.peers import ChannelFiles, bench_peer_feed, bench_peers, export_files
from xferlab.benchmarks.gpu import SECTIONS, check_staged_copies, run


def test_exported_files_hold_the_store_pixels(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 65536, size=(3, 2, 8, 8)).astype(np.uint16)
    d4c, folder = export_files(images, tmp_path)
    np.testing.assert_array_equal(np.array(Image.open(d4c / "000002_c1.png")), images[2, 1])
    rgb = np.array(Image.open(folder / "class0" / "000001.png"))
    assert rgb.shape == (8, 8, 3) and rgb[..., 2].max() == 0
    assert np.corrcoef(rgb[..., 0].ravel(), images[1, 0].ravel())[0, 1] > 0.99  # 8-bit: the same image, fewer levels
    x = ChannelFiles(d4c, 3, 2, 16)[0]
    assert x.shape == (2, 16, 16) and torch.allclose(x.mean(dim=(1, 2)), torch.zeros(2), atol=1e-5)


def test_peer_rows_compare_xferlab_with_each_loop():
    rows = bench_peers([("tiny", ["backbone=pixels"], 16, 24, 8, ("32-true",))], rounds=1)
    assert [r["benchmark"] for r in rows] == ["peers/tiny/32-true/xferlab_over_dino4cells",
                                              "peers/tiny/32-true/xferlab_over_imagefolder"]
    for row in rows:
        assert row["value"] == pytest.approx(row["xferlab_images_per_s"] / row["peer_images_per_s"], rel=0.02)
        assert row["workers"] == 0 and row["device"] == "cpu"


def test_the_gpu_check_names_its_sections_and_refuses_a_machine_without_cuda(tmp_path):
    assert list(SECTIONS) == ["staged_copies", "extraction_gpu", "peers", "host_feed", "codecs"]
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the refusal is for machines without one")
    with pytest.raises(RuntimeError, match="needs a CUDA device and this machine has none"):
        run(["codecs"], tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compares two ways of copying batches to a CUDA device")
def test_staged_copies_give_the_embeddings_of_lightnings_transfer():
    (row,) = check_staged_copies(n=64, size=32, batch_size=16)
    assert row["value"] is True


def test_peer_feed_rows_give_each_loops_host_rate():
    rows = bench_peer_feed(sizes=(16,), n=12, batch_size=4, input_size=32, rounds=1)
    assert [r["benchmark"] for r in rows] == ["peer_feed/16px/xferlab", "peer_feed/16px/dino4cells",
                                              "peer_feed/16px/imagefolder"]
    rate = {r["benchmark"].rsplit("/", 1)[1]: r["value"] for r in rows}
    assert all(v > 0 for v in rate.values())
    for row in rows:
        assert row["xferlab_over_this"] == pytest.approx(rate["xferlab"] / row["value"], rel=0.05)
