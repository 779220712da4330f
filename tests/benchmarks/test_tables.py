"""The benchmark tables the documentation quotes say what their records hold: each row's value with
what it was measured from, a target reported as met or NOT met, the record's machine, load and note."""

from xferlab.bench import markdown
from xferlab.benchmarks import codecs, host_feed, peers


def record(rows, **extra):
    return {"time": "2026-12-03T19:00:00", "git_revision": "abc123",
            "machine": {"processor": "x86_64", "cpu_count": 2, "torch_threads": 2, "torch": "2.14.1", "cuda": None},
            "results": rows, **extra}


def test_the_bench_table_names_the_machine_and_reports_a_missed_target_as_not_met():
    rows = [{"benchmark": "sweep_cost/5_seeds_over_1", "value": 1.67, "unit": "x", "target": 1.5, "meets_target": False,
             "seeds": 5, "sweep_seconds": 50.1, "one_seed_seconds": 29.9},
            {"benchmark": "verify_reads/demo", "value": 0.25, "unit": "% of extract", "target": "<=5.0",
             "meets_target": True, "chunk_mib": 86.8, "read_checked_s": 0.168, "read_unchecked_s": 0.1,
             "extract_s": 27.66, "images": 8192, "input_px": 64},
            {"benchmark": "heads/unit/x/split0", "value": 0.1, "unit": "F1"}]
    text = markdown(record(rows, load_average={"before": 1.4, "after": 1.8}, note="another job ran beside it"))
    assert text.startswith("Measured 2026-12-03 at revision `abc123` on x86_64, 2 cores, 2 torch threads, torch 2.14.1; "
                           "load average 1.4 before, 1.8 after. Another job ran beside it.")
    assert "| `sweep_cost/5_seeds_over_1` | **1.67** x | 5 seeds 50.1 s vs one seed 29.9 s, cold cache | 1.5 (NOT met) |" in text
    assert "0.168 s checked vs 0.1 s not; extraction 27.66 s (8,192 images, 64 px) | <=5.0 (met) |" in text
    assert "heads/unit" not in text  # per-unit rows have their own table (heads.md)
    only = markdown(record(rows), ("verify_reads/",))
    assert "verify_reads/demo" in only and "sweep_cost" not in only and "load average" not in only


def test_codec_host_feed_and_peer_tables_place_each_value_in_its_row_and_column():
    rows = []
    for size, (zstd, lz4) in {128: (0.44, 1.35), 224: (0.39, 1.14)}.items():
        for codec, decode in (("zstd", zstd), ("blosc-lz4-9", lz4)):
            common = {"codec": codec, "crop_px": size, "chunk_rows": 256, "ratio": 1.25}
            rows += [{"benchmark": f"codec_decode/{size}px/{codec}", "value": decode, **common},
                     {"benchmark": f"store_read/{size}px/{codec}", "value": decode / 2, **common}]
    lines = codecs.table(rows).splitlines()
    assert lines[0] == "| codec | ratio (128 / 224 px) | decode 128 px | decode 224 px | read 128 px | read 224 px |"
    assert lines[2] == "| `zstd` | 1.25 / 1.25 | 0.44 | 0.39 | 0.22 | 0.20 |"
    assert lines[3] == "| **`blosc-lz4-9` (default)** | 1.25 / 1.25 | 1.35 | 1.14 | 0.68 | 0.57 |"

    feed = [{"benchmark": "host_feed/main/128px", "value": 30000, "crop_px": 128},
            {"benchmark": "host_feed/reader/128px/blosc-lz4-9", "value": 5000, "crop_px": 128, "codec": "blosc-lz4-9",
             "predicted_images_per_s": {"16": 30000, "8": 30000}},
            {"benchmark": "host_feed/reader/128px/zstd", "value": 4000, "crop_px": 128, "codec": "zstd",
             "predicted_images_per_s": {"16": 30000, "8": 24000}}]
    lines = host_feed.table(feed).splitlines()
    assert "predicted, 8 cores" in lines[0].split("predicted, 16 cores")[0]  # cores in numeric order
    assert lines[2] == "| 128 px | 5,000 | 4,000 | 30,000 | 30,000 | 30,000 |"

    loops = [{"benchmark": f"peer_feed/128px/{name}", "value": v, "stored_px": 128, "xferlab_over_this": 6000 / v}
             for name, v in (("xferlab", 6000), ("dino4cells", 300), ("imagefolder", 400))]
    assert peers.feed_table(loops).splitlines()[2] == "| 128 px | 6,000 | 300 | 400 | 20.0x | 15.0x |"
