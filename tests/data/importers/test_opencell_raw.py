"""OpenCell raw FOVs (`<GENE>_<ENSG>/OC-FOV_*_proj.tif`) -> store, on tiny FOVs written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from hydra.utils import instantiate

from tests.conftest import compose_config
from xferlab.data.importers.crop_rules import CropRule
from xferlab.data.importers.opencell_raw import OpenCellRawSource, crop_centres
from xferlab.data.store import StoreError

FOV = 256
NUCLEI = [(60, 60), (60, 190), (190, 128)]  # fully inside a 64 px window
EDGE_NUCLEUS = (12, 128)                     # too close to the border for a 64 px crop
GENES = {  # real targets: single grade-3 class under the OpenCell rule, or none
    "LAMP2": ("ENSG00000005893", "vesicles"),
    "CYP51A1": ("ENSG00000001630", "er"),
    "CDC27": ("ENSG00000004897", None),  # cytoplasmic 3 + nucleoplasm 3: unlabelled under single_grade3
}


def fov_image(nuclei=NUCLEI + [EDGE_NUCLEUS], protein_level: int = 500, radius: int = 14) -> np.ndarray:
    """A (2, FOV, FOV) uint16 FOV: bright disks in the Hoechst channel, a flat protein channel."""
    yy, xx = np.mgrid[:FOV, :FOV]
    hoechst = np.full((FOV, FOV), 100, dtype=np.uint16)
    for y, x in nuclei:
        hoechst[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = 4000
    protein = np.full((FOV, FOV), protein_level, dtype=np.uint16)
    return np.stack([hoechst, protein])


def fov_path(root: Path, gene: str, ensg: str, fid: int) -> Path:
    return root / f"{gene}_{ensg}" / f"OC-FOV_{gene}_{ensg}_CID000{fid % 7}_FID0000{fid}_proj.tif"


def write_tree(root: Path, fovs_per_gene: int = 2) -> Path:
    fid = 0
    for gene, (ensg, _) in GENES.items():
        for _ in range(fovs_per_gene):
            fid += 1
            path = fov_path(root, gene, ensg, fid)
            path.parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(path, fov_image(protein_level=100 * fid))
            # z-stacks beside the projections are ignored (garbage here, so reading one would fail)
            path.with_name(path.name.replace("_proj", "_stack")).write_bytes(b"not read")
    return root


def source(root, **kwargs) -> OpenCellRawSource:
    options = {"mode": "crops", "size": 32, "crop_size": 64, "max_crops_per_fov": 10, "workers": 1,
               "segmentation": {"sigma": 2.0, "min_area": 200}, "labels": {"rule": "single_grade3", "min_targets": 15}}
    return OpenCellRawSource(name="opencell_raw", root=str(root) if root else root, **{**options, **kwargs})


def assert_nothing_left(data_dir: Path) -> None:
    left = [p.name for p in data_dir.iterdir() if not p.name.endswith(".lock")] if data_dir.exists() else []
    assert left == []


def test_crops_sit_on_nuclei_and_carry_labels(tmp_path):
    root = write_tree(tmp_path / "raw")
    store = source(root).open(tmp_path / "data")
    assert len(store) == len(GENES) * 2 * len(NUCLEI)
    assert store.images.dtype == np.uint16 and store.read(0, 1).shape == (1, 2, 32, 32)
    assert store.channel_names == ["nucleus", "protein"]
    samples = store.samples
    assert {"sample_id", "target", "ensg_id", "fov_id", "crop_y", "crop_x", "label"} <= set(samples.columns)
    centres = sorted(zip(samples["crop_y"][:3], samples["crop_x"][:3]))
    for (y, x), (ny, nx) in zip(centres, sorted(NUCLEI)):
        assert abs(y - ny) <= 1 and abs(x - nx) <= 1
    crops = store.read(0, len(store))
    assert (crops[:, 0, 16, 16] > 3000).all()  # a nucleus at every crop centre
    first = samples.iloc[0]
    assert first["target"] == "CDC27" and first["fov_id"] == "CID0005_FID00005"  # folders sorted by name
    assert (crops[0, 1] == 500).all()  # that FOV's protein channel, unchanged by resizing
    for gene, (ensg, cls) in GENES.items():
        labels = set(samples.loc[samples["target"] == gene, "label"])
        assert labels == {store.classes.index(cls) if cls else -1}
        assert set(samples.loc[samples["target"] == gene, "ensg_id"]) == {ensg}
    assert store.label_rule == "single_grade3" and len(store.classes) == 12
    assert store.attrs["source"]["mode"] == "crops" and store.attrs["source"]["root"] == str(root.resolve())
    assert store.label_sets is None


def test_crop_centres_every_single_nucleus_or_a_spread_cap():
    hoechst = fov_image()[0]
    assert crop_centres(hoechst, 64) == [(60, 60), (60, 190), (190, 128)]  # default: every one, raster order
    assert crop_centres(hoechst, 64, CropRule(10)) == [(60, 60), (60, 190), (190, 128)]
    two = crop_centres(hoechst, 64, CropRule(2), field="a")
    assert len(two) == 2 and set(two) <= {(60, 60), (60, 190), (190, 128)} and two == sorted(two)
    assert len(crop_centres(hoechst, 64, CropRule(10), {"min_area": 1000})) == 0  # disks of ~615 px are below min_area


def test_fov_mode_keeps_one_sample_per_fov(tmp_path):
    root = write_tree(tmp_path / "raw", fovs_per_gene=1)
    store = source(root, mode="fov", size=64).open(tmp_path / "data")
    assert len(store) == len(GENES)
    assert store.read(0, 3).shape == (3, 2, 64, 64)
    assert set(store.samples["crop_y"]) == {FOV // 2} and set(store.samples["crop_x"]) == {FOV // 2}
    assert store.attrs["source"]["mode"] == "fov"


def test_multilabel_writes_label_sets(tmp_path):
    root = write_tree(tmp_path / "raw", fovs_per_gene=1)
    store = source(root, mode="fov", labels={"rule": "multilabel", "min_targets": 15}).open(tmp_path / "data")
    assert store.label_rule == "multilabel"
    row = int(np.nonzero(store.samples["target"].to_numpy() == "CDC27")[0][0])
    assert {store.classes[k] for k in np.nonzero(store.label_sets[row])[0]} == {"cytoplasmic", "nucleoplasm"}


def write_one(root: Path, image: np.ndarray, gene: str = "LAMP2") -> Path:
    path = fov_path(root, gene, GENES[gene][0], 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, image)
    return path


@pytest.mark.parametrize("image,message", [
    (fov_image()[0], "one channel"),                       # missing channel
    (fov_image().astype(np.float32), "dtype float32"),     # wrong dtype
    (np.stack([fov_image()] * 2), "shape"),               # wrong shape (4-D)
])
@pytest.mark.parametrize("mode", ["crops", "fov"])
def test_bad_fovs_are_refused_and_leave_no_store(tmp_path, image, message, mode):
    path = write_one(tmp_path / "raw", image)
    with pytest.raises(StoreError, match=message) as err:
        source(tmp_path / "raw", mode=mode).open(tmp_path / "data")
    assert str(path) in str(err.value)
    assert_nothing_left(tmp_path / "data")


def test_unreadable_file_is_refused(tmp_path):
    path = fov_path(tmp_path / "raw", "LAMP2", GENES["LAMP2"][0], 1)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00garbage, not a TIFF" * 10)
    with pytest.raises(StoreError, match="cannot be read as a TIFF") as err:
        source(tmp_path / "raw").open(tmp_path / "data")
    assert str(path) in str(err.value)
    assert_nothing_left(tmp_path / "data")


def test_unknown_target_is_refused_unless_allowed(tmp_path):
    root = tmp_path / "raw"
    write_one(root, fov_image())
    folder = root / "NOTAGENE_ENSG00000999999"
    folder.mkdir()
    tifffile.imwrite(folder / "OC-FOV_NOTAGENE_ENSG00000999999_CID1_FID9_proj.tif", fov_image())
    with pytest.raises(StoreError, match="ENSG00000999999 is not in the OpenCell annotation table") as err:
        source(root).open(tmp_path / "data")
    assert str(folder) in str(err.value) and "allow_unknown_targets" in str(err.value)
    assert_nothing_left(tmp_path / "data")
    store = source(root, allow_unknown_targets=True).open(tmp_path / "data")
    assert set(store.samples.loc[store.samples["target"] == "NOTAGENE", "label"]) == {-1}


def test_empty_folder_and_missing_root_are_refused(tmp_path):
    (tmp_path / "raw" / "LAMP2_ENSG00000005893").mkdir(parents=True)
    with pytest.raises(StoreError, match="no OpenCell FOVs"):
        source(tmp_path / "raw").open(tmp_path / "data")
    with pytest.raises(FileNotFoundError, match="dataset.root"):
        source(None).open(tmp_path / "data")
    with pytest.raises(FileNotFoundError, match="dataset.root"):
        source(tmp_path / "nope").open(tmp_path / "data")
    assert_nothing_left(tmp_path / "data")


def test_misnamed_file_is_refused(tmp_path):
    folder = tmp_path / "raw" / "LAMP2_ENSG00000005893"
    folder.mkdir(parents=True)
    tifffile.imwrite(folder / "fov1_proj.tif", fov_image())
    with pytest.raises(StoreError, match="fov1_proj.tif: file name is not OC-FOV"):
        source(tmp_path / "raw").open(tmp_path / "data")


def test_the_same_fov_twice_is_refused_naming_both_files(tmp_path):
    first = write_one(tmp_path / "raw", fov_image())
    copy = tmp_path / "raw" / "LAMP2b_ENSG00000005893" / first.name.replace("LAMP2_", "LAMP2b_")
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())
    with pytest.raises(StoreError, match="the same FOV") as err:
        source(tmp_path / "raw").open(tmp_path / "data")
    assert str(first) in str(err.value) and str(copy) in str(err.value) and "Remove the copy" in str(err.value)
    assert_nothing_left(tmp_path / "data")


def test_hydra_config_builds_and_reuses_the_store(tmp_path, monkeypatch):
    root = write_tree(tmp_path / "raw", fovs_per_gene=1)
    cfg = compose_config(["dataset=opencell_raw", f"dataset.root={root}", "dataset.crop_size=64",
                          "dataset.size=32", "paths.output_dir=/tmp/x"])
    assert cfg.dataset.labels.rule == "single_grade3" and cfg.dataset.labels.min_targets == 15
    first = instantiate(cfg.dataset).open(tmp_path / "data")
    assert len(first) == len(GENES) * len(NUCLEI)
    monkeypatch.setattr(OpenCellRawSource, "build", lambda *a: pytest.fail("store rebuilt"))
    second = instantiate(cfg.dataset).open(tmp_path / "data")
    assert second.path == first.path and second.fingerprint == first.fingerprint
    with pytest.raises(FileNotFoundError, match="set dataset.root="):
        instantiate(compose_config(["dataset=opencell_raw", "paths.output_dir=/tmp/x"]).dataset).open(tmp_path)


def write_real_fields(root: Path) -> dict[str, np.ndarray]:
    """The four real OpenCell Hoechst fields, each with a protein channel, in the OpenCell layout
    under `root` (two targets of two fields each); returns the Hoechst fields by name."""
    from tests.real_data import hoechst_fields, with_protein

    fields = hoechst_fields()
    for fid, (name, gene) in enumerate(zip(sorted(fields), ["LAMP2", "LAMP2", "CYP51A1", "CYP51A1"]), start=1):
        path = fov_path(root, gene, GENES[gene][0], fid)
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, with_protein(fields, name))
    return fields


def test_real_fields_give_crops_on_single_nuclei_and_an_empty_field_is_named_and_counted(tmp_path, caplog):
    """The four real OpenCell Hoechst fields (paired with a protein channel) and one field without
    nuclei: every real field gives at least 20 crops (every single nucleus, no cap), each on a nucleus; the
    empty one gives none, is named in a warning and counted in the store's import summary."""
    from xferlab.data.importers.nuclei import segment_nuclei

    root = tmp_path / "raw"
    fields = write_real_fields(root)
    names = sorted(fields)
    background = fields[names[0]][segment_nuclei(fields[names[0]]).labels == 0]
    blank = np.random.default_rng(0).choice(background, size=(2, *fields[names[0]].shape)).astype(np.uint16)
    empty = write_one(root, blank, gene="CDC27")
    with caplog.at_level("WARNING"):
        store = source(root, crop_size=200, size=32, max_crops_per_fov=None).open(tmp_path / "data")
    assert any(empty.name in r.getMessage() and "no crop" in r.getMessage() for r in caplog.records)
    summary = store.attrs["import_summary"]
    assert summary["fovs"] == len(names) + 1 and summary["fovs_without_crops"] == 1
    assert list(summary["why_without_crops"]) == [empty.name] and summary["samples"] == len(store)
    per_fov = store.samples.groupby("fov_id").size()
    assert len(per_fov) == len(names) and (per_fov >= 20).all(), per_fov.to_dict()
    centre = store.read(0, len(store))[:, 0, 16, 16]  # the Hoechst value at each crop's centre
    assert (centre > np.median(background)).all()


def test_the_store_records_micrometres_per_stored_pixel(tmp_path):
    root = write_tree(tmp_path / "raw", fovs_per_gene=1)
    crops = source(root, pixel_size_um=0.25).open(tmp_path / "data")
    assert crops.pixel_size_um == pytest.approx(0.25 * 64 / 32)  # 64 px windows stored at 32 px
    fov = source(root, mode="fov", size=64, pixel_size_um=0.25).open(tmp_path / "data")
    assert fov.pixel_size_um == pytest.approx(0.25 * FOV / 64)
    assert source(root, mode="fov", size=64).open(tmp_path / "data").pixel_size_um is None
    with pytest.raises(ValueError, match="dataset.pixel_size_um"):
        source(root, pixel_size_um=0)
    # whole FOVs of two sizes would have two pixel sizes in one store
    small = fov_path(root, "LAMP2", GENES["LAMP2"][0], 9)
    tifffile.imwrite(small, fov_image()[:, :128, :128])
    with pytest.raises(StoreError, match="first FOV has 256 px") as err:
        source(root, mode="fov", size=64, pixel_size_um=0.25).open(tmp_path / "data2")
    assert str(small) in str(err.value)


def test_single_cell_crops_keep_their_own_cell_and_blank_the_others(tmp_path):
    """On a real field: each crop keeps its own nucleus untouched, and every pixel of another
    nucleus becomes one background value per channel (below the nuclei's intensities)."""
    from tests.real_data import hoechst_fields, with_protein
    from xferlab.data.importers.nuclei import segment_nuclei

    fields = hoechst_fields()
    name = sorted(fields)[1]
    image = with_protein(fields, name)
    path = fov_path(tmp_path / "raw", "LAMP2", GENES["LAMP2"][0], 1)
    path.parent.mkdir(parents=True)
    tifffile.imwrite(path, image)
    options = {"crop_size": 200, "size": 200, "max_crops_per_fov": 6}
    masked = source(tmp_path / "raw", single_cell={"enabled": True, "growth": 1.0}, **options).open(tmp_path / "d")
    plain = source(tmp_path / "raw", **options).open(tmp_path / "d")
    assert masked.path != plain.path and len(masked) == len(plain) == 6
    labels = segment_nuclei(image[0]).labels
    for row, (y, x) in enumerate(zip(masked.samples["crop_y"], masked.samples["crop_x"])):
        window = labels[y - 100 : y + 100, x - 100 : x + 100]
        own, other = window == labels[y, x], (window > 0) & (window != labels[y, x])
        crop, original = masked.read(row, row + 1)[0], plain.read(row, row + 1)[0]
        assert other.any() and np.array_equal(crop[:, own], original[:, own])
        for c in range(2):
            assert len(np.unique(crop[c][other])) == 1
        assert crop[0][other][0] < np.median(original[0][own])
    with pytest.raises(ValueError, match="dataset.single_cell"):
        source(tmp_path / "raw", mode="fov", single_cell={"enabled": True})
    with pytest.raises(ValueError, match="dataset.single_cell.growth"):
        source(tmp_path / "raw", single_cell={"enabled": True, "growth": -1})


def test_a_parallel_import_writes_the_same_store_as_a_serial_one(tmp_path):
    """Real fields, every FOV read once in worker processes: the same fingerprint, samples and
    pixels as one process, byte for byte (single-cell masking included)."""
    root = tmp_path / "raw"
    write_real_fields(root)
    options = {"crop_size": 200, "size": 48, "max_crops_per_fov": None, "single_cell": {"enabled": True}}
    serial = source(root, workers=1, **options).open(tmp_path / "serial")
    parallel = source(root, workers=2, **options).open(tmp_path / "parallel")
    assert serial.fingerprint == parallel.fingerprint and len(serial) > 60
    assert serial.samples.equals(parallel.samples)
    assert np.array_equal(serial.read(0, len(serial)), parallel.read(0, len(parallel)))
    per_target = serial.attrs["import_summary"]["samples_per_target"]
    assert per_target == serial.samples.groupby("target").size().to_dict()
    assert serial.attrs["source"]["crop_rule"] == {"rule": "all_single_nuclei"}
    with pytest.raises(ValueError, match="dataset.workers=0"):
        source(root, workers=0)


# Images fingerprints main's opencell_raw (commit b0c6238, before its field import moved to
# `importers.fields`, shared with dataset=fovs) wrote from the four real fields laid out as below:
MAIN_FINGERPRINTS = {
    "crops": "52462f92c8567d2bf33ee90752c8c4b6a7b59417590706e712d70683f1261b4b",
    "single_cell": "cb7b788e18e2057f2a78cf7e6536d12faa8b7af9bfd905602425394da068a0ff",
    "fov": "c8dd171b93d2a05cc113a04e6af4e2ad675d8b9626264857400e9175488eb844",
}


def test_the_shared_field_importer_writes_main_s_stores_byte_for_byte(tmp_path):
    """Real fields: capped crops, single-cell crops and whole FOVs have the pixels, sample ids and
    pixel sizes main wrote (so importer_version stays 3: stores built before are still valid)."""
    root = tmp_path / "raw"
    write_real_fields(root)
    options = {
        "crops": {"crop_size": 200, "size": 48, "max_crops_per_fov": 5, "pixel_size_um": 0.206},
        "single_cell": {"crop_size": 200, "size": 48, "max_crops_per_fov": 5, "single_cell": {"enabled": True}},
        "fov": {"mode": "fov", "size": 64, "pixel_size_um": 0.206},
    }
    pixel = {"crops": 0.206 * 200 / 48, "single_cell": None, "fov": 0.206 * 1024 / 64}
    for name, settings in options.items():
        store = source(root, **settings).open(tmp_path / "data")
        assert store.images_fingerprint == MAIN_FINGERPRINTS[name], name
        assert store.pixel_size_um == (None if pixel[name] is None else pytest.approx(pixel[name]))
        assert store.attrs["source"]["importer_version"] == 3
