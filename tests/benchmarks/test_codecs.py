"""The codec and host-feed benchmarks run end to end on tiny inputs and report what they measured
(no timing assertions: benchmarks measure, tests check behaviour)."""

import numpy as np

from xferlab.benchmarks.codecs import bench_codecs, measure_codec, synthcell_crops
from xferlab.benchmarks.host_feed import bench_host_feed
from xferlab.data.codecs import DEFAULT_CODEC


def test_codec_rows_cover_every_codec_and_size():
    rows = bench_codecs(sizes=(16,), codecs=("none", "zstd", "blosc-lz4-5"), chunk_rows=8, chunks=2, rounds=1,
                        other_rows=(4,))
    names = [r["benchmark"] for r in rows]
    assert names == ["codec_decode/16px/none", "store_read/16px/none", "codec_decode/16px/zstd", "store_read/16px/zstd",
                     "codec_decode/16px/blosc-lz4-5", "store_read/16px/blosc-lz4-5", f"chunk_rows/16px/{DEFAULT_CODEC}/4"]
    assert all(r["value"] > 0 and r["unit"] == "GB/s/core" for r in rows)
    by = {r["benchmark"]: r for r in rows}
    assert by["codec_decode/16px/none"]["ratio"] == 1.0 and by["codec_decode/16px/zstd"]["ratio"] > 1.0


def test_a_codec_that_changed_pixels_would_be_caught(monkeypatch):
    import xferlab.benchmarks.codecs as codecs

    chunk = synthcell_crops(16, 4)
    real = codecs.chunk_codec_pipeline

    class Lossy:  # decodes to other pixels
        def __init__(self, pipeline):
            self.pipeline = pipeline

        async def encode(self, items):
            return await self.pipeline.encode(items)

        async def decode(self, items):
            (out,) = await self.pipeline.decode(items)
            array = out.as_numpy_array().copy()
            array.flat[0] ^= 1
            return [type(out).from_numpy_array(array)]

    monkeypatch.setattr(codecs, "chunk_codec_pipeline", lambda name, c: (Lossy(real(name, c)[0]), real(name, c)[1]))
    try:
        measure_codec("zstd", chunk, rounds=1)
    except AssertionError as err:
        assert "zstd did not give back the pixels" in str(err)
    else:
        raise AssertionError("a lossy codec passed")


def test_synthcell_crops_are_uint16_cells_of_the_size_asked():
    crops = synthcell_crops(32, 40)
    assert crops.shape == (40, 2, 32, 32) and crops.dtype == np.uint16
    assert crops.std() > 0 and not np.array_equal(crops[0], crops[1])


def test_host_feed_rows_predict_from_the_per_core_rates():
    rows = bench_host_feed(sizes=(16,), codecs=("blosc-lz4-5",), n=64, batch_size=16, rounds=1)
    main, reader = rows
    assert main["benchmark"] == "host_feed/main/16px" and reader["benchmark"] == "host_feed/reader/16px/blosc-lz4-5"
    assert main["value"] > 0 and reader["value"] > 0
    predicted = reader["predicted_images_per_s"]  # auto workers (cores - 2) per core rate, capped by the main process
    assert predicted == {str(c): min((c - 2) * reader["value"], main["value"]) for c in (8, 16, 32)}
