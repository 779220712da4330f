import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from tests.conftest import write_store
from xferlab.backbones.channels import NaturalMapping
from xferlab.backbones.preprocess import Preprocessor
from xferlab.backbones.registry import build_backbone
from xferlab.embeddings.extractor import StoreBlocks, block_rows, extract_embeddings, widen


def make_trainer(**kwargs):
    kwargs.setdefault("devices", 1)
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False, **kwargs)


def tiny_backbone(size: int = 16):
    return build_backbone(name="t", arch="vit_tiny_patch16_224", in_channels=["protein", "nucleus"],
                          init="random", preprocess={"input_size": size, "normalize": "zscore"},
                          model_kwargs={"img_size": size, "patch_size": 8, "depth": 1})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    store = write_store(root / "s.zarr", n_per_class=5, size=16, chunk_rows=4)  # 20 images in chunks of 4
    backbone = tiny_backbone()
    adapter = NaturalMapping("natural", store.channel_names, backbone.in_channels)
    return store, backbone, adapter, Preprocessor(16, "zscore")


def test_extraction_equals_a_direct_forward_pass_and_is_cached(setup, tmp_path):
    store, backbone, adapter, pre = setup
    emb, info = extract_embeddings(store, backbone, adapter, pre, tmp_path / "cache", make_trainer, batch_size=6)
    assert info["cache_hit"] is False
    assert emb.shape == (20, 192)

    images = torch.from_numpy(store.read(0, 20).astype(np.float32))
    x = (images - images.mean((2, 3), keepdim=True)) / (images.std((2, 3), keepdim=True, unbiased=False) + 1e-6)
    x = x[:, [1, 0]]  # backbone slots are (protein, nucleus)
    with torch.no_grad():
        expected = backbone.model.forward_features(x)[:, 0]
    np.testing.assert_allclose(emb, expected.numpy(), rtol=1e-4, atol=1e-4)

    again, info2 = extract_embeddings(store, backbone, adapter, pre, tmp_path / "cache", make_trainer, batch_size=6)
    assert info2["cache_hit"] is True and info2["cache_key"] == info["cache_key"]
    np.testing.assert_array_equal(again, emb)


def test_blocks_are_whole_store_chunks_and_every_row_comes_once(setup):
    store, *_ = setup
    assert block_rows(4, 6) == 8 and block_rows(256, 64) == 256 and block_rows(256, 512) == 512
    dataset = StoreBlocks(store, batch_size=6)
    batches = list(dataset)
    assert [len(rows) for rows, _ in batches] == [6, 2, 6, 2, 4]  # blocks of 8, 8, 4 rows
    rows = torch.cat([r for r, _ in batches]).numpy()
    np.testing.assert_array_equal(rows, np.arange(20))
    images = torch.cat([x for _, x in batches])
    assert images.dtype == torch.int16  # uint16 bits in transit, widened on the device
    np.testing.assert_array_equal(widen(images, np.uint16).numpy(), store.read(0, 20))


def test_uint16_above_int16_range_survives_the_transport():
    values = np.array([0, 1, 32767, 32768, 65535], dtype=np.uint16)
    bits = torch.from_numpy(values.view(np.int16))
    np.testing.assert_array_equal(widen(bits, np.uint16).numpy(), values.astype(np.int64))
    assert widen(bits, np.int16) is bits


def test_nan_pixels_in_a_store_are_refused_at_extraction_naming_store_and_row(tmp_path):
    """A store that holds NaN pixels (hand-made, or from before the writer refused them): extraction
    stops naming the store, the row and its sample id, and caches nothing."""
    import zarr

    from xferlab.data.store import ImageStore, StoreError
    from xferlab.runtime.integrity import write_manifest

    store = write_store(tmp_path / "f.zarr", n_per_class=5, size=16, dtype="float32")
    zarr.open_array(store.path / "images", mode="r+")[13, 1, 2, 3] = np.nan
    write_manifest(store.path)  # as a writer that let NaN through would have recorded it
    store = ImageStore(store.path)
    backbone = tiny_backbone()
    adapter = NaturalMapping("natural", store.channel_names, backbone.in_channels)
    with pytest.raises(StoreError, match=r"row\(s\) \[13\] \(sample id\(s\) \['b1_1'\]\) hold NaN") as err:
        extract_embeddings(store, backbone, adapter, Preprocessor(16, "zscore"), tmp_path / "cache", make_trainer,
                           batch_size=6)
    assert str(store.path) in str(err.value) and "Rebuild the store" in str(err.value)
    assert not list((tmp_path / "cache").glob("*.zarr")) and not list((tmp_path / "cache").glob(".*"))


def test_nan_embeddings_from_the_backbone_are_refused(setup, tmp_path, monkeypatch):
    from xferlab.embeddings.extractor import NonFiniteEmbeddingError

    store, _, adapter, pre = setup
    backbone = tiny_backbone()
    forward = backbone.forward
    monkeypatch.setattr(backbone, "forward", lambda x: forward(x).index_fill(0, torch.tensor([1]), float("nan")))
    with pytest.raises(NonFiniteEmbeddingError, match=r"row\(s\) \[1\] \(sample id\(s\) \['a0_1'\]\)") as err:
        extract_embeddings(store, backbone, adapter, pre, tmp_path / "cache", make_trainer, batch_size=6)
    assert str(store.path) in str(err.value) and "extract.precision" in str(err.value)
    assert not list((tmp_path / "cache").glob("*.zarr")) and not list((tmp_path / "cache").glob(".*"))


@pytest.mark.parametrize("normalize", ["zscore", "dataset"])
def test_constant_images_give_finite_embeddings(tmp_path, normalize):
    """Zero variance: under zscore a constant channel of an image becomes 0 (x - mean = 0, divided by
    std + 1e-6); under dataset statistics a channel constant over the whole store does too."""
    import pandas as pd

    from xferlab.data.store import ImageStore, StoreWriter

    images = np.zeros((4, 2, 16, 16), dtype=np.uint16)  # all black
    images[1] = 7                                         # constant, both channels
    images[2, 0] = 65535                                  # saturated nucleus, ramp protein
    images[2, 1] = np.arange(256).reshape(16, 16)
    images[3, 1] = 3                                      # nucleus black, protein flat
    with StoreWriter(tmp_path / "c.zarr", n_samples=4, channel_names=["nucleus", "protein"], image_size=(16, 16),
                     dtype="uint16", classes=["a"]) as writer:
        writer.append(images)
        writer.write_samples(pd.DataFrame({"sample_id": list("wxyz"), "target": list("wxyz"), "label": [0] * 4}))
    store = ImageStore(tmp_path / "c.zarr")
    backbone = tiny_backbone()
    adapter = NaturalMapping("natural", store.channel_names, backbone.in_channels)
    # dataset: statistics of a store whose every pixel is 7 (std 0): image 1 is that store's image
    pre = Preprocessor(16, normalize, dataset_mean=[7.0, 7.0], dataset_std=[0.0, 0.0])
    x = pre(torch.from_numpy(images.astype(np.float32)), adapter)
    constant = [0, 1] if normalize == "zscore" else [1]
    assert torch.isfinite(x).all() and x[constant].eq(0).all()
    emb, _ = extract_embeddings(store, backbone, adapter, pre, tmp_path / "cache", make_trainer, batch_size=4)
    assert emb.shape == (4, 192) and np.isfinite(emb).all()


def test_workers_and_float16_storage(setup, tmp_path):
    """Two DataLoader workers deliver blocks out of order; the cache is the same. float16 storage is
    a separate entry holding the float32 values rounded to half precision."""
    store, backbone, adapter, pre = setup
    base, _ = extract_embeddings(store, backbone, adapter, pre, tmp_path / "a", make_trainer, batch_size=6)
    workers, info = extract_embeddings(store, backbone, adapter, pre, tmp_path / "b", make_trainer,
                                       batch_size=6, num_workers=2)
    assert info["extract_workers"] == 2
    np.testing.assert_array_equal(workers, base)
    half, half_info = extract_embeddings(store, backbone, adapter, pre, tmp_path / "a", make_trainer,
                                         batch_size=6, dtype="float16")
    assert half_info["cache_hit"] is False and half.dtype == np.float32
    np.testing.assert_array_equal(half, base.astype(np.float16).astype(np.float32))


def test_ddp_extraction_on_two_processes_equals_one(setup, tmp_path):
    """Lightning DDP (gloo on CPU, two spawned processes): each rank writes its own chunks. Each
    rank computes with one thread (Lightning splits the cores), so the one-process run does too:
    then the caches are equal bit for bit."""
    store, backbone, adapter, pre = setup
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single, _ = extract_embeddings(store, backbone, adapter, pre, tmp_path / "one", make_trainer, batch_size=6)
    finally:
        torch.set_num_threads(threads)
    ddp, info = extract_embeddings(store, backbone, adapter, pre, tmp_path / "two", make_trainer,
                                   batch_size=6, devices=2)
    assert info["extract_devices"] == 2 and info["cache_hit"] is False
    np.testing.assert_array_equal(ddp, single)


@pytest.mark.slow  # compiling takes about a minute on 2 cores
def test_compiled_backbone_gives_the_same_embeddings_in_its_own_entry(setup, tmp_path):
    store, backbone, adapter, pre = setup
    plain, info = extract_embeddings(store, backbone, adapter, pre, tmp_path, make_trainer, batch_size=6)
    compiled, info_c = extract_embeddings(store, backbone, adapter, pre, tmp_path, make_trainer, batch_size=6,
                                          compile=True)
    assert info_c["cache_hit"] is False and info_c["cache_key"] != info["cache_key"]
    np.testing.assert_allclose(compiled, plain, rtol=1e-4, atol=1e-5)


def _extract_after_barrier(store_path, backbone, cache_root, barrier, results):
    """One of several workers that need the same cache entry at the same moment."""
    import time

    from xferlab.data.store import ImageStore

    store = ImageStore(store_path)
    adapter = NaturalMapping("natural", store.channel_names, backbone.in_channels)

    def slow_trainer(**kwargs):  # the builder holds the lock long enough for the others to queue up
        time.sleep(2.0)
        return make_trainer(**kwargs)

    barrier.wait()
    emb, info = extract_embeddings(store, backbone, adapter, Preprocessor(16, "zscore"), cache_root, slow_trainer,
                                   batch_size=6)
    results.put((info, float(np.asarray(emb, dtype=np.float64).sum())))


@pytest.mark.parametrize("workers", ["threads", pytest.param("processes", marks=pytest.mark.slow)])
def test_concurrent_builders_extract_an_entry_once_and_the_others_wait_for_it(tmp_path, workers):
    """The file lock: threads hold separate lock-file descriptors, exactly as separate processes do
    (multirun jobs); the process variant is the real thing but spends ~15 s per process importing torch."""
    import multiprocessing as mp
    import queue
    import threading

    store = write_store(tmp_path / "s.zarr", n_per_class=5, size=16)
    backbone = build_backbone(name="t", arch="vit_tiny_patch16_224", in_channels=["protein", "nucleus"],
                              init="random", preprocess={"input_size": 16, "normalize": "zscore"},
                              model_kwargs={"img_size": 16, "patch_size": 8, "depth": 1})
    n = 3
    if workers == "threads":
        barrier, results, make = threading.Barrier(n), queue.Queue(), threading.Thread
    else:
        ctx = mp.get_context("spawn")
        barrier, results, make = ctx.Barrier(n), ctx.Queue(), ctx.Process
    runners = [make(target=_extract_after_barrier, args=(store.path, backbone, tmp_path / "cache", barrier, results))
               for _ in range(n)]
    for r in runners:
        r.start()
    got = [results.get(timeout=300) for _ in range(n)]
    for r in runners:
        r.join(timeout=60)
    infos = [info for info, _ in got]
    assert sorted(info["cache_hit"] for info in infos) == [False] + [True] * (n - 1)  # built once
    # every worker found the entry missing and queued on the lock; those that did not build it
    # waited there for the builder (>= its 2 s) and then read its entry
    assert all("lock_wait_seconds" in info for info in infos)
    assert len({info["cache_key"] for info in infos}) == 1 and len({s for _, s in got}) == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f"{infos[0]['cache_key']}.zarr",
                                                                      f"{infos[0]['cache_key']}.zarr.lock"]


def test_two_extractions_into_different_caches_are_bit_identical(setup, tmp_path):
    from xferlab.runtime.integrity import write_manifest

    store, backbone, adapter, pre = setup
    first, a = extract_embeddings(store, backbone, adapter, pre, tmp_path / "a", make_trainer, batch_size=6)
    second, b = extract_embeddings(store, backbone, adapter, pre, tmp_path / "b", make_trainer, batch_size=6)
    assert a["cache_hit"] is b["cache_hit"] is False and a["cache_path"] != b["cache_path"]
    assert first.tobytes() == second.tobytes()
    # every file of the two entries, chunks and metadata, has the same sha256
    manifests = [json.loads((Path(i["cache_path"]) / "MANIFEST.json").read_text()) for i in (a, b)]
    assert manifests[0] == manifests[1] == write_manifest(Path(a["cache_path"]))


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "no_marker", "unreadable_without_manifest"])
def test_a_damaged_cache_entry_is_rebuilt_with_a_warning_naming_it(setup, tmp_path, caplog, damage):
    store, backbone, adapter, pre = setup
    good, info = extract_embeddings(store, backbone, adapter, pre, tmp_path, make_trainer, batch_size=6)
    entry = Path(info["cache_path"])
    chunk = sorted(p for p in (entry / "embeddings" / "c").rglob("*") if p.is_file())[1]
    data = chunk.read_bytes()
    if damage == "flip":
        chunk.write_bytes(data[:20] + bytes([data[20] ^ 0xFF]) + data[21:])
    elif damage == "truncate":
        chunk.write_bytes(data[: len(data) // 2])
    elif damage == "delete":  # zarr would read it as zeros
        chunk.unlink()
    elif damage == "no_marker":  # e.g. left by an older xferlab or by hand: never used as complete
        (entry / "COMPLETE").unlink()
    else:  # an entry from before manifests: used unchecked, but one that cannot be read is rebuilt
        (entry / "MANIFEST.json").unlink()
        chunk.write_bytes(b"\0garbage" * 3)
    with caplog.at_level("WARNING", logger="xferlab.embeddings.cache"):
        again, info2 = extract_embeddings(store, backbone, adapter, pre, tmp_path, make_trainer, batch_size=6)
    assert f"embedding cache entry {entry} is damaged" in caplog.text
    assert info2["cache_hit"] is False and again.tobytes() == good.tobytes()
    assert (entry / "MANIFEST.json").exists() and not list(tmp_path.glob(".*tmp*"))
    third, info3 = extract_embeddings(store, backbone, adapter, pre, tmp_path, make_trainer, batch_size=6)
    assert info3["cache_hit"] is True and third.tobytes() == good.tobytes()


def test_an_entry_written_before_manifests_is_used_unchecked(setup, tmp_path):
    store, backbone, adapter, pre = setup
    good, info = extract_embeddings(store, backbone, adapter, pre, tmp_path, make_trainer, batch_size=6)
    (Path(info["cache_path"]) / "MANIFEST.json").unlink()
    again, info2 = extract_embeddings(store, backbone, adapter, pre, tmp_path, make_trainer, batch_size=6)
    assert info2["cache_hit"] is True and again.tobytes() == good.tobytes()


def image_chunk(store_path, i):
    return store_path / "images" / "c" / str(i) / "0" / "0" / "0"


@pytest.mark.parametrize("damage,workers", [("flip", 0), ("flip", 1), ("other_store", 0), ("truncate", 0)])
def test_a_damaged_store_chunk_stops_extraction_and_nothing_is_cached(setup, tmp_path, damage, workers):
    from xferlab.data.store import ImageStore, StoreDamagedError

    _, backbone, adapter, pre = setup
    store = write_store(tmp_path / "s.zarr", n_per_class=5, size=16, chunk_rows=4, dtype="uint8")
    reference, _ = extract_embeddings(store, backbone, adapter, pre, tmp_path / "ref", make_trainer, batch_size=6)
    target = image_chunk(store.path, 2)
    original = target.read_bytes()
    if damage == "flip":  # one bit, same size: passes the quick check on open
        target.write_bytes(original[:100] + bytes([original[100] ^ 0x04]) + original[101:])
    elif damage == "other_store":  # a same-size chunk of another store
        other = write_store(tmp_path / "other.zarr", n_per_class=5, size=16, chunk_rows=4, dtype="uint8", seed=7)
        assert image_chunk(other.path, 2).stat().st_size == len(original)
        target.write_bytes(image_chunk(other.path, 2).read_bytes())
    else:  # truncated while a job had the store open
        target.write_bytes(original[: len(original) // 2])
    cache = tmp_path / "cache"
    with pytest.raises(StoreDamagedError) as err:
        extract_embeddings(store, backbone, adapter, pre, cache, make_trainer, batch_size=6, num_workers=workers)
    message = str(err.value)
    assert str(store.path) in message and "images/c/2/0/0/0 (image chunk 2: rows 8-11" in message
    assert "Restore the store from a backup" in message
    assert not list(cache.glob("*.zarr")) and not list(cache.glob(".*tmp*"))  # nothing published, no leftovers
    if damage == "truncate":  # and the next open refuses it at once
        with pytest.raises(StoreDamagedError, match="images/c/2/0/0/0: .* bytes"):
            ImageStore(store.path)

    target.write_bytes(original)  # repaired (restored from a backup)
    again, info = extract_embeddings(ImageStore(store.path), backbone, adapter, pre, cache, make_trainer,
                                     batch_size=6, num_workers=workers)
    assert info["cache_hit"] is False and again.tobytes() == reference.tobytes()


def test_an_entry_computed_from_a_damaged_store_is_rebuilt_once_the_store_is_repaired(setup, tmp_path, caplog,
                                                                                     capsys):
    """A store without a manifest (older xferlab) cannot be checked as it is read: the entry computed
    from its damaged bytes records their digests, so once the store is restored (with its manifest)
    the entry is found stale, named by `xferlab.verify`, and rebuilt by the next job."""
    from xferlab.data.store import ImageStore
    from xferlab.verify import main as verify

    _, backbone, adapter, pre = setup
    store = write_store(tmp_path / "s.zarr", n_per_class=5, size=16, chunk_rows=4, dtype="uint8")
    reference, _ = extract_embeddings(store, backbone, adapter, pre, tmp_path / "ref", make_trainer, batch_size=6)
    manifest = (store.path / "MANIFEST.json").read_bytes()
    target = image_chunk(store.path, 1)
    original = target.read_bytes()
    (store.path / "MANIFEST.json").unlink()
    target.write_bytes(original[:50] + bytes([original[50] ^ 0x01]) + original[51:])
    cache = tmp_path / "cache"
    wrong, info = extract_embeddings(ImageStore(store.path), backbone, adapter, pre, cache, make_trainer, batch_size=6)
    changed = np.nonzero((wrong != reference).any(axis=1))[0]
    assert len(changed) == 1 and 4 <= changed[0] < 8  # one image of chunk 1: a silently wrong embedding

    target.write_bytes(original)  # the store restored from a backup, manifest and all
    (store.path / "MANIFEST.json").write_bytes(manifest)
    assert verify([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    stale = f"STALE       {info['cache_path']}: computed from images/c/1/0/0/0 (rows 4-7) of {store.path.resolve()}"
    assert stale in out
    with caplog.at_level("WARNING", logger="xferlab.embeddings.cache"):
        fixed, info2 = extract_embeddings(ImageStore(store.path), backbone, adapter, pre, cache, make_trainer,
                                          batch_size=6)
    assert info2["cache_hit"] is False and info2["cache_path"] == info["cache_path"]  # same key, rebuilt
    assert f"embedding cache entry {info['cache_path']} is damaged (computed from 1 file(s)" in caplog.text
    assert fixed.tobytes() == reference.tobytes()
    assert verify([str(tmp_path)]) == 0


def test_each_batch_is_written_once_the_next_forward_is_queued_and_the_last_at_the_end(setup, tmp_path, monkeypatch):
    """The writer lags one batch (so that on a GPU the host's wait overlaps the next forward): the
    order of events is forward 0, forward 1, write 0, forward 2, write 1, ..., write of the last."""
    from xferlab.embeddings.cache import ChunkWriter

    store, _, adapter, pre = setup
    backbone = tiny_backbone()
    events = []
    forward = backbone.forward
    monkeypatch.setattr(backbone, "forward", lambda x: events.append("forward") or forward(x))
    write = ChunkWriter.write
    monkeypatch.setattr(ChunkWriter, "write", lambda self, rows, emb: events.append("write") or write(self, rows, emb))
    emb, _ = extract_embeddings(store, backbone, adapter, pre, tmp_path / "cache", make_trainer, batch_size=6)
    batches = 5  # blocks of 8, 8, 4 rows in batches of 6: 6, 2, 6, 2, 4
    assert events == ["forward"] + ["forward", "write"] * (batches - 1) + ["write"]
    reference, _ = extract_embeddings(store, tiny_backbone(), adapter, pre, tmp_path / "other", make_trainer,
                                      batch_size=6)
    np.testing.assert_array_equal(emb, reference)


def test_nan_embeddings_in_the_last_batch_are_refused_too(setup, tmp_path, monkeypatch):
    from xferlab.embeddings.extractor import NonFiniteEmbeddingError

    store, _, adapter, pre = setup
    backbone = tiny_backbone()
    forward = backbone.forward
    monkeypatch.setattr(backbone, "forward",  # the last batch holds rows 16-19
                        lambda x: forward(x).index_fill(0, torch.tensor([len(x) - 1]), float("nan")) if len(x) == 4
                        else forward(x))
    with pytest.raises(NonFiniteEmbeddingError, match=r"row\(s\) \[19\]"):
        extract_embeddings(store, backbone, adapter, pre, tmp_path / "cache", make_trainer, batch_size=6)
    assert not list((tmp_path / "cache").glob("*.zarr"))


def test_tiles_of_an_image_are_embedded_and_averaged_into_its_one_row(setup, tmp_path):
    """`fit=tiles`: each 16 px image (scale=match at its own pixel size) is four 8 px tiles; its
    row is the mean of the four tiles' embeddings, the forward seeing one batch's worth at a time."""
    from xferlab.embeddings.extractor import per_image

    store, _, adapter, _ = setup
    backbone = tiny_backbone(size=8)
    pre = Preprocessor(8, "zscore", scale="match", pixel_size_um=0.5, pretrained_pixel_size_um=0.5, fit="tiles")
    emb, info = extract_embeddings(store, backbone, adapter, pre, tmp_path / "cache", make_trainer, batch_size=6)
    assert emb.shape == (20, 192)
    images = torch.from_numpy(store.read(0, 20).astype(np.float32))
    x = (images - images.mean((2, 3), keepdim=True)) / (images.std((2, 3), keepdim=True, unbiased=False) + 1e-6)
    x = x[:, [1, 0]]
    with torch.no_grad():
        tiles = [backbone.model.forward_features(x[:, :, y : y + 8, left : left + 8])[:, 0]
                 for y in (0, 8) for left in (0, 8)]
    np.testing.assert_allclose(emb, torch.stack(tiles).mean(0).numpy(), rtol=1e-4, atol=1e-4)
    untiled = Preprocessor(8, "zscore", scale="match", pixel_size_um=0.5, pretrained_pixel_size_um=0.5)
    _, centre = extract_embeddings(store, backbone, adapter, untiled, tmp_path / "cache", make_trainer, batch_size=6)
    assert centre["cache_key"] != info["cache_key"]
    sizes = []
    out = per_image(lambda v: sizes.append(len(v)) or v.flatten(1)[:, :3], torch.arange(24.0).view(24, 1), 6)
    assert sizes == [6, 6, 6, 6] and out.shape == (6, 1)
    torch.testing.assert_close(out[:, 0], torch.arange(24.0).view(6, 4).mean(1))
