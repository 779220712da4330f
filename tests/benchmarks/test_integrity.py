"""The integrity benchmarks run end to end on tiny inputs and report what they measured (no timing
assertions: benchmarks measure, tests check behaviour)."""

from xferlab.benchmarks.integrity import bench_integrity
from xferlab.runtime import io


def test_integrity_rows():
    real = io.fsync_path, io.fsync_tree
    rows = bench_integrity([("tiny", ["backbone=pixels"], 16, 40, 8)], fsync_case=(40, 16, 8), rounds=1)
    assert (io.fsync_path, io.fsync_tree) == real  # the timers are undone
    assert [r["benchmark"] for r in rows] == ["verify_reads/tiny", "fsync/image_store", "fsync/cache_entry"]
    verify = rows[0]
    assert verify["unit"] == "% of extract" and verify["value"] >= 0 and verify["extract_s"] > 0
    assert verify["meets_target"] == (verify["value"] <= 5.0)
    assert all(0 < r["fsync_s"] < r["publish_s"] and 0 < r["value"] < 100 for r in rows[1:])
