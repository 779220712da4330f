"""`dataset=fovs`: fields of view in OME-TIFF and OME-Zarr (written by their own writers) listed by
a table -> store; the pixel size, channel names and dtype from the metadata; the same store as
`opencell_raw` from the same pixels; every bad input refused naming the file, leaving nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.data.importers.ome_files import (
    nuclei_field,
    write_multi_scene,
    write_ome_tiff,
    write_ome_zarr,
)
from tests.data.importers.test_opencell_raw import GENES, MAIN_FINGERPRINTS, assert_nothing_left, fov_path
from tests.data.importers.test_opencell_raw import source as opencell_source
from xferlab.data.importers.common import DataImportError
from xferlab.data.importers.fovs import FovsSource

NAMES = ("Hoechst 33342", "mNeonGreen")
MAPPING = {"nucleus": NAMES[0], "protein": NAMES[1]}


def table(folder: Path, rows: list[str], header: str = "path,group,label") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / "fovs.csv"
    csv.write_text("\n".join([header, *rows]) + "\n")
    return csv


def fovs(csv: Path, **options) -> FovsSource:
    settings = {"channels": MAPPING, "size": 32, "crop_size": 64, "workers": 1}
    return FovsSource(name="fovs", table=str(csv), **{**settings, **options})


def four_fields(folder: Path, pixel=0.25, names=NAMES) -> Path:
    rows = []
    for i in range(4):
        write_ome_tiff(folder / "plate" / f"w{i}.ome.tif", nuclei_field(i, protein=200 + 300 * (i % 2)), pixel, names)
        rows.append(f"plate/w{i}.ome.tif,P{i},{'ab'[i % 2]}")
    return table(folder, rows)


def test_ome_tiff_fields_become_nucleus_crops_with_the_metadata_pixel_size(tmp_path):
    store = fovs(four_fields(tmp_path)).open(tmp_path / "data")
    assert store.channel_names == ["nucleus", "protein"] and store.images.dtype == np.uint16
    assert store.pixel_size_um == pytest.approx(0.25 * 64 / 32)  # the files' 0.25 um, 64 px windows stored at 32
    assert store.attrs["pixel_size_from"] == "file metadata" and store.attrs["field_pixel_size_um"] == 0.25
    samples = store.samples
    assert len(store) == 4 * 5 and list(store.classes) == ["a", "b"]
    assert sorted(set(samples["target"])) == ["P0", "P1", "P2", "P3"]
    assert (samples.groupby("target")["label"].first() == [0, 1, 0, 1]).all()
    assert samples["sample_id"].iloc[0] == f"w0_y{samples['crop_y'].iloc[0]}_x{samples['crop_x'].iloc[0]}"
    centre = store.read(0, len(store))[:, 0, 16, 16]
    assert (centre > 2000).all()  # every crop is centred on a nucleus
    # dataset.pixel_size_um overrides the metadata (and names a new store)
    typed = fovs(tmp_path / "fovs.csv", pixel_size_um=0.5).open(tmp_path / "data")
    assert typed.path != store.path and typed.pixel_size_um == pytest.approx(1.0)
    assert typed.attrs["pixel_size_from"] == "dataset.pixel_size_um"
    assert typed.images_fingerprint == store.images_fingerprint  # the same pixels and ids


def test_channels_are_taken_by_name_whatever_their_order_in_the_file(tmp_path):
    first = fovs(four_fields(tmp_path / "a")).open(tmp_path / "data")
    swapped = tmp_path / "b"
    rows = []
    for i in range(4):
        image = nuclei_field(i, protein=200 + 300 * (i % 2))[::-1]  # protein first in the file
        write_ome_tiff(swapped / "plate" / f"w{i}.ome.tif", image, 0.25, NAMES[::-1])
        rows.append(f"plate/w{i}.ome.tif,P{i},{'ab'[i % 2]}")
    second = fovs(table(swapped, rows)).open(tmp_path / "data")
    assert second.images_fingerprint == first.images_fingerprint
    # null channels: the files' own names become the store's, the nucleus named by dataset.nucleus
    own = fovs(tmp_path / "a" / "fovs.csv", channels=None, nucleus=NAMES[0]).open(tmp_path / "data")
    assert own.channel_names == list(NAMES) and np.array_equal(own.read(0, len(own)), first.read(0, len(first)))


def test_scenes_and_time_points_are_fields_and_z_is_projected_as_asked(tmp_path):
    a, b = nuclei_field(1), nuclei_field(2)
    write_multi_scene(tmp_path / "multi.ome.tif", [a, b], 0.25, NAMES)
    stack = np.stack([nuclei_field(3), nuclei_field(4), nuclei_field(5)], axis=1)  # (C, Z, Y, X)
    write_ome_tiff(tmp_path / "z.ome.tif", stack, 0.25, NAMES, axes="CZYX")
    timed = np.stack([nuclei_field(6), nuclei_field(7)])  # (T, C, Y, X)
    write_ome_tiff(tmp_path / "t.ome.tif", timed, 0.25, NAMES, axes="TCYX")
    csv = table(tmp_path, ["multi.ome.tif,A,a", "z.ome.tif,B,b", "t.ome.tif,C,a", "multi.ome.tif,D,b,1,second"],
                header="path,group,label,scene,field")
    expected = {"multi_s0": a, "multi_s1": b, "z": stack.max(axis=1), "t_t0": timed[0], "t_t1": timed[1],
                "second": b}
    whole = {"mode": "fov", "size": 256}  # whole fields at their own size: the stored pixels are the field's
    store = fovs(csv, **whole).open(tmp_path / "data")
    assert list(store.samples["sample_id"]) == list(expected)
    images = store.read(0, len(store))
    for row, name in enumerate(expected):
        assert np.array_equal(images[row], expected[name]), name
    mean = fovs(csv, z_projection="mean", **whole).open(tmp_path / "data").read(2, 3)[0]
    assert np.array_equal(mean, np.rint(stack.mean(axis=1)).astype(np.uint16))
    plane = fovs(csv, z_projection=2, **whole).open(tmp_path / "data").read(2, 3)[0]
    assert np.array_equal(plane, stack[:, 2])
    problems = fovs(csv, z_projection=3, **whole).input_problems()
    assert any(str(tmp_path / "z.ome.tif") in p and "3 z plane(s)" in p for p in problems)
    with pytest.raises(ValueError, match="dataset.z_projection"):
        fovs(csv, z_projection="median")


def test_ome_zarr_gives_the_store_of_the_same_pixels_as_ome_tiff(tmp_path):
    rows_tiff, rows_zarr = [], []
    for i in range(3):
        image = nuclei_field(i)
        write_ome_tiff(tmp_path / f"f{i}.ome.tif", image, 0.3, NAMES)
        write_ome_zarr(tmp_path / f"f{i}.ome.zarr", image, 0.3, NAMES)
        rows_tiff.append(f"f{i}.ome.tif,P{i},a")
        rows_zarr.append(f"f{i}.ome.zarr,P{i},a")
    tiff = fovs(table(tmp_path / "t", [f"../{r}" for r in rows_tiff])).open(tmp_path / "data")
    zarr_store = fovs(table(tmp_path / "z", [f"../{r}" for r in rows_zarr])).open(tmp_path / "data")
    assert tiff.path != zarr_store.path
    assert zarr_store.images_fingerprint == tiff.images_fingerprint
    assert zarr_store.pixel_size_um == tiff.pixel_size_um == pytest.approx(0.3 * 64 / 32)


# main's opencell_raw store of these fields and settings (tests/data/importers/test_opencell_raw.py)
MAIN_OPENCELL_RAW = MAIN_FINGERPRINTS["crops"]


def test_real_fields_in_ome_tiff_and_ome_zarr_give_the_opencell_raw_store(tmp_path):
    """The real Hoechst fields (with a protein channel) in the OpenCell layout with the pixel size
    typed in, as OME-TIFF and as OME-Zarr with it in the metadata: one images fingerprint, the one
    main's opencell_raw wrote (the shared importer changed no byte), and one pixel size."""
    from tests.real_data import hoechst_fields, with_protein

    fields = hoechst_fields()
    root = tmp_path / "raw"
    rows_tiff, rows_zarr = [], []
    for fid, (name, gene) in enumerate(zip(sorted(fields), ["LAMP2", "LAMP2", "CYP51A1", "CYP51A1"]), start=1):
        image = with_protein(fields, name)
        path = fov_path(root, gene, GENES[gene][0], fid)
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, image)
        field = f"{GENES[gene][0]}_CID000{fid % 7}_FID0000{fid}"  # the id opencell_raw gives this FOV
        write_ome_tiff(tmp_path / "tiff" / f"{name}.ome.tif", image, 0.206, NAMES)
        write_ome_zarr(tmp_path / "zarr" / f"{name}.ome.zarr", image, 0.206, NAMES)
        rows_tiff.append((path.parent.name, f"{name}.ome.tif,{gene},x,{field}"))
        rows_zarr.append((path.parent.name, f"{name}.ome.zarr,{gene},x,{field}"))
    rows_tiff, rows_zarr = ([row for _, row in sorted(rows)] for rows in (rows_tiff, rows_zarr))  # opencell_raw's order
    options = {"crop_size": 200, "size": 48, "max_crops_per_fov": 5}
    reference = opencell_source(root, pixel_size_um=0.206, workers=1, **options).open(tmp_path / "data")
    assert reference.images_fingerprint == MAIN_OPENCELL_RAW
    header = "path,group,label,field"
    tiff = fovs(table(tmp_path / "tiff", rows_tiff, header), **options).open(tmp_path / "data")
    zarr_store = fovs(table(tmp_path / "zarr", rows_zarr, header), **options).open(tmp_path / "data")
    assert tiff.images_fingerprint == zarr_store.images_fingerprint == reference.images_fingerprint
    assert tiff.pixel_size_um == zarr_store.pixel_size_um == pytest.approx(reference.pixel_size_um)
    assert list(tiff.samples["target"]) == list(reference.samples["target"])


@pytest.mark.slow  # ~20 s on 2 cores, mostly starting the workers; the one-command test imports with 2 workers too
def test_a_parallel_import_writes_the_same_store_as_a_serial_one(tmp_path):
    """Fields read through bioio in spawned worker processes: the same store, byte for byte."""
    csv = four_fields(tmp_path)
    serial = fovs(csv, workers=1, single_cell={"enabled": True}).open(tmp_path / "serial")
    parallel = fovs(csv, workers=2, single_cell={"enabled": True}).open(tmp_path / "parallel")
    assert parallel.fingerprint == serial.fingerprint and len(serial) == 20
    assert np.array_equal(parallel.read(0, len(parallel)), serial.read(0, len(serial)))


# ---------------------------------------------------------------- bad input: named, before any pixel, nothing left

def refused(source: FovsSource, data: Path, *needles: str) -> str:
    """The problem is listed by the check before the jobs and raised by the import; no store left."""
    problems = "\n".join(source.input_problems())
    assert all(n in problems for n in needles), problems
    with pytest.raises((DataImportError, FileNotFoundError)) as err:
        source.open(data)
    assert all(n in str(err.value) for n in needles), str(err.value)
    assert_nothing_left(data)
    return problems


def test_a_missing_or_unreadable_file_is_named(tmp_path):
    csv = four_fields(tmp_path)
    (tmp_path / "plate" / "w2.ome.tif").unlink()
    refused(fovs(csv), tmp_path / "data", str(tmp_path / "plate" / "w2.ome.tif"), "data row 3", "no such file")
    (tmp_path / "plate" / "w2.ome.tif").write_bytes(b"not an image")
    refused(fovs(csv), tmp_path / "data", str(tmp_path / "plate" / "w2.ome.tif"), "Re-export it as OME-TIFF")


def test_a_vendor_file_without_its_reader_names_the_extra(tmp_path):
    import importlib.util

    if importlib.util.find_spec("bioio_czi") is not None:
        pytest.skip("bioio-czi is installed here: the message for a missing reader cannot show")
    (tmp_path / "scan.czi").write_bytes(b"ZISRAWFILE" + bytes(100))
    refused(fovs(table(tmp_path, ["scan.czi,P0,a"])), tmp_path / "data", str(tmp_path / "scan.czi"),
            "pip install 'xferlab[czi]'")


def test_a_channel_name_not_in_the_file_is_named_with_the_names_there(tmp_path):
    csv = four_fields(tmp_path)
    refused(fovs(csv, channels={"nucleus": "DAPI", "protein": NAMES[1]}), tmp_path / "data",
            str(tmp_path / "plate" / "w0.ome.tif"), "no channel named 'DAPI'", "dataset.channels.nucleus", NAMES[0])
    with pytest.raises(ValueError, match="dataset.nucleus"):
        fovs(csv, channels={"dna": NAMES[0]})


def test_mixed_pixel_sizes_are_refused_naming_both_files(tmp_path):
    csv = four_fields(tmp_path)
    write_ome_tiff(tmp_path / "plate" / "w3.ome.tif", nuclei_field(3), 0.5, NAMES)
    refused(fovs(csv), tmp_path / "data", str(tmp_path / "plate" / "w3.ome.tif"), "pixel size (um) 0.5",
            str(tmp_path / "plate" / "w0.ome.tif"), "0.25")
    # a pixel size typed in is the fix when the metadata is wrong
    assert fovs(csv, pixel_size_um=0.25).input_problems() == []


def test_no_pixel_size_anywhere_gives_a_store_without_one(tmp_path):
    csv = four_fields(tmp_path, pixel=None)
    source = fovs(csv)
    assert source.input_problems() == [] and source.planned_geometry()["pixel_size_um"] is None
    assert source.open(tmp_path / "data").pixel_size_um is None


def test_a_table_with_two_labels_for_one_group_is_refused(tmp_path):
    four_fields(tmp_path)
    csv = table(tmp_path, ["plate/w0.ome.tif,P0,a", "plate/w1.ome.tif,P0,b"])
    refused(fovs(csv), tmp_path / "data", str(csv), "group 'P0' has labels ['a', 'b']")


def test_a_field_without_nuclei_is_warned_and_counted_and_none_at_all_is_an_error(tmp_path, caplog):
    csv = four_fields(tmp_path)
    blank = np.random.default_rng(0).normal(200, 20, (2, 256, 256)).astype(np.uint16)
    write_ome_tiff(tmp_path / "plate" / "w1.ome.tif", blank, 0.25, NAMES)
    with caplog.at_level("WARNING"):
        store = fovs(csv).open(tmp_path / "data")
    assert any("w1.ome.tif" in r.getMessage() and "no crop" in r.getMessage() for r in caplog.records)
    summary = store.attrs["import_summary"]
    assert summary["fovs"] == 4 and summary["fovs_without_crops"] == 1 and list(summary["why_without_crops"]) == ["w1"]
    assert "P1" not in set(store.samples["target"]) and summary["samples_per_target"]["P1"] == 0
    only_blank = table(tmp_path / "blank", ["../plate/w1.ome.tif,P1,a"])
    with pytest.raises(DataImportError, match="no nucleus crops found in 1 FOV") as err:
        fovs(only_blank).open(tmp_path / "data2")
    assert str(only_blank) in str(err.value)
    assert_nothing_left(tmp_path / "data2")
