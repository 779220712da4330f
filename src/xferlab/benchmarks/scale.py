"""The real path at scale: an OpenCell-layout release built from the real Hoechst fields, served by
an S3 server on the loopback, through fetch -> import -> extraction -> linear head -> report.

The release: `--targets` real single_grade3 targets (each class given at least 3, the rest drawn in
proportion to the classes' sizes, seeded) x `--fovs` FOVs each. Every FOV is one of the real
1024 x 1024 Hoechst fields (`../shared/data/opencell/hoechst-fovs`) under one of its 8 rotations and
flips and a seeded circular shift, paired with another real field (shifted) as its protein channel:
real nuclei, real camera counts, no two FOVs alike. The files are served by moto's S3 server on
127.0.0.1 in the release's bucket layout.

Stages, each in its own process (its peak memory: the process and its workers together, sampled):
- fetch: `xferlab.data.opencell_s3.fetch` (8 parallel downloads): files/s, MiB/s;
- import: `dataset=opencell_raw`, crops mode (every single nucleus), with one worker and with the
  usable cores: FOVs/s, crops/s, the ratio of the two (target >= 1.7 on 2 cores) and whether the
  stores are the same (fingerprint);
- extract + head: one job (`backbone=random`, the demo's ViT-Tiny/8 at 64 px, on CPU; `head=linear`)
  on that store: images/s of the extraction, the head's seconds;
- report: `xferlab.report` on the job.

Projection to the study (825 targets): per 1,000 FOVs and for 825 x `--fovs` FOVs, on this machine
and on a 16-core GPU node, where import scales with the cores as measured here (per-worker rate
of the parallel import x 16) and extraction runs at the H200 record's pipeline rate for ViT-S/16 at
224 px (docs/bench/h200-extraction-*.json); fetch is bounded by the network there, so the loopback
rate is an upper bound. The release's FOVs per target is not known here: scale by it.

    python -m xferlab.benchmarks.scale --record docs/bench/scale-<date>.json --table docs/results/scale.md
    python -m xferlab.benchmarks.scale --from docs/bench/scale-<date>.json --table docs/results/scale.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[3]
FIELDS = REPO.parent / "shared" / "data" / "opencell" / "hoechst-fovs"
PREFIX = "microscopy/raw/"
STUDY_TARGETS = 825
GPU_CORES = 16
CROP_SIZE, SIZE, PIXEL_SIZE_UM = 200, 128, 0.206
STAGES = ("fetch", "import", "extract", "head")


# ---------------------------------------------------------------- the release

def study_targets(n: int, seed: int = 0):
    """`n` real single_grade3 targets: at least 3 per class, the rest in proportion to the classes."""
    import pandas as pd

    from xferlab.data.labels import opencell_annotations, target_labels

    labels = target_labels(opencell_annotations(), "single_grade3")
    table = labels.table[labels.table["label"] >= 0].drop_duplicates("ensg_id").sort_values("ensg_id")
    rng = np.random.default_rng(seed)
    sizes = table["label"].value_counts().sort_index()
    if n < 3 * len(sizes):
        raise ValueError(f"--targets {n}: at least {3 * len(sizes)} (3 for each of the {len(sizes)} classes)")
    share = 3 + np.floor((n - 3 * len(sizes)) * sizes / sizes.sum()).astype(int)
    share.iloc[: n - int(share.sum())] += 1  # the remainder, one each to the first classes
    picked = [table[table["label"] == k].sample(int(m), random_state=int(rng.integers(2**31))) for k, m in share.items()]
    return pd.concat(picked).sort_values("target_name").reset_index(drop=True), labels.classes


def field_image(fields: list[np.ndarray], k: int, rng: np.random.Generator) -> np.ndarray:
    """FOV k: a real Hoechst field under one of 8 rotations / flips and a seeded shift, with another
    real field (shifted) as its protein channel; (2, H, W) uint16."""
    nucleus = np.rot90(fields[k % len(fields)], (k // len(fields)) % 4)
    if (k // (4 * len(fields))) % 2:
        nucleus = nucleus[:, ::-1]
    protein = np.roll(fields[(k + 1) % len(fields)], (37 + 11 * k, 91 + 7 * k), axis=(0, 1))
    shift = tuple(int(s) for s in rng.integers(0, nucleus.shape[0], size=2))
    return np.ascontiguousarray(np.stack([np.roll(nucleus, shift, axis=(0, 1)), protein]).astype(np.uint16))


def write_release(folder: Path, targets, fovs: int, fields_dir: Path = FIELDS, seed: int = 0) -> list[Path]:
    import tifffile

    files = sorted(fields_dir.glob("FOV_*_RAW.tif"))
    if not files:
        raise FileNotFoundError(f"no real Hoechst fields (FOV_*_RAW.tif) in {fields_dir}; pass --fields")
    fields = [np.asarray(tifffile.imread(f)) for f in files]
    rng, written, k = np.random.default_rng(seed), [], 0
    for row in targets.itertuples():
        stem = f"{row.target_name}_{row.ensg_id}"
        for fid in range(fovs):
            path = folder / stem / f"OC-FOV_{stem}_CID{1 + fid // 2:05d}_FID{fid:05d}_proj.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(path, field_image(fields, k, rng))
            written.append(path)
            k += 1
    return written


class LoopbackS3:
    """moto's S3 server on 127.0.0.1 holding `folder` under the release's bucket layout."""

    def __init__(self, folder: Path):
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.folder = folder

    def __enter__(self) -> "LoopbackS3":
        import logging

        import boto3

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's line per request

        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint, self.bucket = f"http://{host}:{port}", f"opencell-{uuid.uuid4().hex[:8]}"
        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-west-2",
                              aws_access_key_id="bench", aws_secret_access_key="bench")
        client.create_bucket(Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        for path in sorted(self.folder.rglob("*_proj.tif")):
            client.put_object(Bucket=self.bucket, Key=PREFIX + str(path.relative_to(self.folder)),
                              Body=path.read_bytes(), ACL="public-read")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.stop()


# ---------------------------------------------------------------- stages, each in its own process

class PeakMemory:
    """The largest resident memory of this process and its worker processes together, sampled every
    0.2 s while the stage runs (a process's own high-water mark would include what a parent it
    was forked from held)."""

    def __init__(self) -> None:
        import threading

        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:  # a worker that just ended
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(0.2)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mib(self) -> float:
        return round(self.peak / 2**20, 1)


def _run(queue, fn: Callable[..., dict], args: tuple) -> None:
    try:
        with PeakMemory() as memory:
            result = fn(*args)
        queue.put({**result, "peak_rss_mib": memory.mib})
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which raises it
        queue.put({"error": f"{type(err).__name__}: {err}"})


def in_process(fn: Callable[..., dict], *args: Any) -> dict:
    """`fn(*args)` in a fresh (spawned) process: its result with the process's peak memory."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_run, args=(queue, fn, args))
    process.start()
    result = queue.get()
    process.join()
    if "error" in result:
        raise RuntimeError(f"stage {fn.__name__} failed: {result['error']}")
    return result


def stage_fetch(endpoint: str, bucket: str, root: str, targets: list[str]) -> dict:
    from xferlab.data.opencell_s3 import Release, fetch

    started = time.perf_counter()
    summary = fetch(Release(bucket=bucket, prefix=PREFIX, endpoint_url=endpoint), root, targets, workers=8,
                    progress=False)
    seconds = time.perf_counter() - started
    if summary.failed or summary.fetched != summary.planned:
        raise RuntimeError(f"fetch: {summary.lines()}")
    return {"files": summary.fetched, "mib": summary.bytes / 2**20, "seconds": seconds}


def stage_import(root: str, data_dir: str, workers: int | str) -> dict:
    from xferlab.data.importers.opencell_raw import OpenCellRawSource
    from xferlab.data.importers.parallel import import_workers

    source = OpenCellRawSource("opencell_raw", root, mode="crops", size=SIZE, crop_size=CROP_SIZE,
                               pixel_size_um=PIXEL_SIZE_UM, workers=workers)
    fovs = len(source.scan()[1])
    started = time.perf_counter()
    store = source.open(data_dir)
    seconds = time.perf_counter() - started
    return {"fovs": fovs, "crops": len(store), "seconds": seconds, "workers": import_workers(workers, fovs),
            "fingerprint": store.fingerprint, "store_mib": sum(f.stat().st_size for f in store.path.rglob("*")
                                                               if f.is_file()) / 2**20}


def stage_job(root: str, data_dir: str, out: str) -> dict:
    from xferlab.benchmarks.common import compose_config
    from xferlab.job import run_job

    cfg = compose_config(["dataset=opencell_raw", f"dataset.root={root}", f"dataset.size={SIZE}",
                          f"dataset.crop_size={CROP_SIZE}", f"dataset.pixel_size_um={PIXEL_SIZE_UM}",
                          "backbone=random", "head=linear", "logger=csv", f"paths.data_dir={data_dir}",
                          f"paths.output_dir={out}/job", f"paths.cache_dir={out}/cache", "seed=0"])  # extracted here
    started = time.perf_counter()
    result = run_job(cfg)
    seconds = time.perf_counter() - started
    info = result.info
    return {"seconds": seconds, "images": int(info["images_per_second"] * info["extract_seconds"] + 0.5),
            "extract_seconds": info["extract_seconds"], "images_per_second": info["images_per_second"],
            "head_seconds": info.get("head_seconds", info.get("fit_seconds")),
            "test_macro_f1": result.metrics["test/macro_f1"], "run_dir": str(result.run_dir),
            "targets": result.metrics["samples_per_target"]["targets"],
            "fingerprint": result.metrics["data_fingerprint"]}


def stage_report(run_dir: str, out: str) -> dict:
    from xferlab.reporting.build import build_report

    started = time.perf_counter()
    build_report([Path(run_dir)], Path(out), n_boot=1000, embedding_map="none")
    return {"seconds": time.perf_counter() - started}


# ---------------------------------------------------------------- the benchmark

def row(name: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    return {"benchmark": f"scale/{name}", "value": round(float(value), 3), "unit": unit, **extra}


def bench_scale(targets: int = 100, fovs: int = 4, fields_dir: Path = FIELDS, keep: Path | None = None) -> list[dict]:
    from xferlab.embeddings.extractor import usable_cores

    work = Path(tempfile.mkdtemp(prefix="xferlab-scale-")) if keep is None else keep
    try:
        chosen, classes = study_targets(targets)
        started = time.perf_counter()
        files = write_release(work / "release", chosen, fovs, fields_dir)
        built = time.perf_counter() - started
        with LoopbackS3(work / "release") as s3:
            fetched = in_process(stage_fetch, s3.endpoint, s3.bucket, str(work / "fetched"),
                                 list(chosen["target_name"]))
        serial = in_process(stage_import, str(work / "fetched"), str(work / "data-serial"), 1)
        parallel = in_process(stage_import, str(work / "fetched"), str(work / "data"), "auto")
        job = in_process(stage_job, str(work / "fetched"), str(work / "data"), str(work / "out"))
        report = in_process(stage_report, job["run_dir"], str(work / "report"))
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    cores = usable_cores()
    speedup = (serial["seconds"] / parallel["seconds"])
    common = {"targets": targets, "fovs_per_target": fovs, "classes": int(chosen["label"].nunique()), "cores": cores}
    per_fov = {  # seconds per FOV of each stage on this machine
        "fetch": fetched["seconds"] / fetched["files"], "import": parallel["seconds"] / parallel["fovs"],
        "extract": job["extract_seconds"] / parallel["fovs"], "head": job["head_seconds"] / parallel["fovs"]}
    return [
        row("release", len(files), "FOVs", seconds=round(built, 1), **common),
        row("fetch/files_per_s", fetched["files"] / fetched["seconds"], "files/s", mib_per_s=round(
            fetched["mib"] / fetched["seconds"], 1), mib=round(fetched["mib"], 1), seconds=round(fetched["seconds"], 1),
            peak_rss_mib=fetched["peak_rss_mib"], **common),
        row("import/serial_fovs_per_s", serial["fovs"] / serial["seconds"], "FOVs/s", crops_per_s=round(
            serial["crops"] / serial["seconds"], 1), seconds=round(serial["seconds"], 1), workers=1,
            peak_rss_mib=serial["peak_rss_mib"], **common),
        row("import/parallel_fovs_per_s", parallel["fovs"] / parallel["seconds"], "FOVs/s", crops_per_s=round(
            parallel["crops"] / parallel["seconds"], 1), seconds=round(parallel["seconds"], 1),
            workers=parallel["workers"], crops=parallel["crops"], store_mib=round(parallel["store_mib"], 1),
            peak_rss_mib=parallel["peak_rss_mib"], **common),
        row("import/parallel_over_serial", speedup, "ratio", target=">=1.7", meets_target=bool(speedup >= 1.7),
            same_store=serial["fingerprint"] == parallel["fingerprint"], fingerprint=parallel["fingerprint"][:16],
            **common),
        row("extract/images_per_s", job["images_per_second"], "images/s", images=job["images"],
            same_store=job["fingerprint"] == parallel["fingerprint"],
            seconds=round(job["extract_seconds"], 1), backbone="random (ViT-Tiny/8, 64 px)", **common),
        row("head/seconds", job["head_seconds"], "s", test_macro_f1=round(job["test_macro_f1"], 4),
            job_seconds=round(job["seconds"], 1), peak_rss_mib=job["peak_rss_mib"], **common),
        row("report/seconds", report["seconds"], "s", peak_rss_mib=report["peak_rss_mib"], **common),
        *projections(per_fov, parallel, cores, fovs, common),
    ]


def gpu_extraction_rate() -> tuple[float | None, str | None]:
    """The H200 record's pipeline images/s for ViT-S/16 at 224 px, fp32 (the newest record)."""
    records = sorted((REPO / "docs" / "bench").glob("h200-extraction-*.json"))
    for record in reversed(records):
        for r in json.loads(record.read_text())["results"]:
            if r.get("benchmark") == "extraction_gpu/vit_small16_224px/32-true" and r.get("pipeline_images_per_s"):
                return float(r["pipeline_images_per_s"]), record.name
    return None, None


def projections(per_fov: dict[str, float], parallel: dict, cores: int, fovs: int, common: dict) -> list[dict]:
    """Hours for 1,000 FOVs and for the study (825 targets x `fovs`), here and on a 16-core GPU node."""
    study = STUDY_TARGETS * fovs
    crops_per_fov = parallel["crops"] / parallel["fovs"]
    per_worker = per_fov["import"] * parallel["workers"]  # seconds per FOV of one worker
    gpu_rate, record = gpu_extraction_rate()
    here = sum(per_fov.values())
    node = {"fetch": per_fov["fetch"], "import": per_worker / GPU_CORES,
            "extract": crops_per_fov / gpu_rate if gpu_rate else None, "head": per_fov["head"]}
    rows = [row("project/here_hours_per_1000_fovs", here * 1000 / 3600, "hours", stages={
        k: round(v * 1000 / 3600, 3) for k, v in per_fov.items()}, **common),
        row("project/here_hours_study", here * study / 3600, "hours", study_fovs=study, **common)]
    if gpu_rate:
        total = sum(node.values())
        rows += [row("project/gpu_node_hours_per_1000_fovs", total * 1000 / 3600, "hours", stages={
            k: round(v * 1000 / 3600, 3) for k, v in node.items()}, gpu_images_per_s=gpu_rate, gpu_record=record,
            node_cores=GPU_CORES, **common),
            row("project/gpu_node_hours_study", total * study / 3600, "hours", study_fovs=study, **common)]
    return rows


def table(rows: list[dict]) -> str:
    by = {r["benchmark"].split("/", 1)[1]: r for r in rows}
    c = rows[0]
    lines = [f"Scale benchmark: {c['targets']} real-label targets x {c['fovs_per_target']} FOVs ({by['release']['value']:.0f} "
             f"real 1024 x 1024 fields, rotated, flipped and shifted; {c['classes']} classes) on an S3 server on the "
             f"loopback, {c['cores']} cores, CPU only.", "",
             "| stage | throughput | time | peak memory |", "|---|---|---|---|"]
    f = by["fetch/files_per_s"]
    lines.append(f"| fetch (8 downloads) | {f['value']:.1f} files/s, {f['mib_per_s']:.1f} MiB/s | {f['seconds']:.0f} s "
                 f"({f['mib']:.0f} MiB) | {f['peak_rss_mib']:.0f} MiB |")
    s, p, r = by["import/serial_fovs_per_s"], by["import/parallel_fovs_per_s"], by["import/parallel_over_serial"]
    lines.append(f"| import, 1 worker | {s['value']:.2f} FOVs/s, {s['crops_per_s']:.1f} crops/s | {s['seconds']:.0f} s | "
                 f"{s['peak_rss_mib']:.0f} MiB |")
    lines.append(f"| import, {p['workers']} workers | {p['value']:.2f} FOVs/s, {p['crops_per_s']:.1f} crops/s "
                 f"({r['value']:.2f}x; same store: {'yes' if r['same_store'] else 'NO'}) | {p['seconds']:.0f} s, "
                 f"{p['crops']} crops ({p['crops'] / by['release']['value']:.1f} per FOV: every single nucleus with its "
                 f"window inside) | {p['peak_rss_mib']:.0f} MiB |")
    per_worker, per_serial = p["workers"] / p["value"], 1 / s["value"]
    note = ("" if r["value"] <= p["workers"] else
            f" Above {p['workers']}x: each worker spent {per_worker:.2f} s per FOV, the one-process import "
            f"{per_serial:.2f} s: the rest is not parallelism (the one-process import ran slower per FOV on this run).")
    e, h, rep = by["extract/images_per_s"], by["head/seconds"], by["report/seconds"]
    lines.append(f"| extraction ({e['backbone']}) | {e['value']:.0f} images/s | {e['seconds']:.0f} s | "
                 f"{h['peak_rss_mib']:.0f} MiB (job) |")
    lines.append(f"| linear head | | {h['value']:.1f} s (test macro F1 {h['test_macro_f1']:.4f}) | |")
    lines.append(f"| report | | {rep['value']:.1f} s | {rep['peak_rss_mib']:.0f} MiB |")
    if note:
        lines += ["", note.strip()]
    here, study = by["project/here_hours_per_1000_fovs"], by["project/here_hours_study"]
    lines += ["", f"Projected, per 1,000 FOVs: {here['value']:.2f} h here ("
              + ", ".join(f"{k} {here['stages'][k]:.2f}" for k in STAGES) + f"); the study's 825 targets x "
              f"{c['fovs_per_target']} FOVs ({study['study_fovs']} FOVs): {study['value']:.1f} h here."]
    if "project/gpu_node_hours_study" in by:
        node, total = by["project/gpu_node_hours_per_1000_fovs"], by["project/gpu_node_hours_study"]
        lines.append(f"On a {node['node_cores']}-core GPU node (import per worker as measured here x {node['node_cores']}, "
                     f"ViT-S/16 extraction at {node['gpu_images_per_s']:.0f} images/s from {node['gpu_record']}; fetch at "
                     f"the loopback rate, an upper bound): {node['value']:.2f} h per 1,000 FOVs ("
                     + ", ".join(f"{k} {node['stages'][k]:.2f}" for k in STAGES) + f"), {total['value']:.1f} h for "
                     "the study. The release's FOVs per target are not known here: scale by them.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xferlab.benchmarks.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--fovs", type=int, default=4, help="FOVs per target")
    parser.add_argument("--fields", type=Path, default=FIELDS, help="folder of real Hoechst fields (FOV_*_RAW.tif)")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temporary one)")
    parser.add_argument("--record", type=Path, help="write the rows, machine and revision here (JSON)")
    parser.add_argument("--from", dest="source", type=Path, help="render the table of a saved record instead")
    parser.add_argument("--table", type=Path, help="write the markdown table here")
    args = parser.parse_args(argv)
    from xferlab.benchmarks.common import publish

    if args.source:
        publish(json.loads(args.source.read_text())["results"], table, table_path=args.table)
        return 0
    from xferlab.bench import machine
    from xferlab.benchmarks.common import versions

    publish(bench_scale(args.targets, args.fovs, args.fields, args.keep), table, args.record, args.table,
            machine=machine(), versions=versions())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
