"""The extraction benchmarks run end to end on tiny inputs and report what they measured
(no timing assertions: benchmarks measure, tests check behaviour)."""

from xferlab.benchmarks.extraction import bench_extraction
from xferlab.benchmarks.memory import bench_extraction_memory


def test_extraction_ratio_rows():
    (row,) = bench_extraction([("tiny", ["backbone=pixels"], 16, 40, 8, ("32-true",))], rounds=1)
    assert row["benchmark"] == "extraction/tiny/32-true" and row["unit"] == "ratio"
    assert row["value"] > 0 and row["raw_images_per_s"] > 0 and row["pipeline_images_per_s"] > 0
    assert row["meets_target"] == (row["value"] >= 0.9)


def test_memory_rows():
    (row,) = bench_extraction_memory(small=16, large=64, size=16)
    assert row["images_large"] == 64 and row["peak_extra_mib_large"] >= 0
    assert row["meets_target"] == (row["value"] <= 1.1)
