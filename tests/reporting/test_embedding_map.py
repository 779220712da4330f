"""The report's 2-D map of each condition's test embeddings."""

import numpy as np
import pandas as pd
import pytest

from tests.embeddings.test_export import entry, fake_run  # noqa: F401 - the fixture is used below
from xferlab.reporting import plots
from xferlab.reporting.embedding_map import condition_maps, project, held_out_rows


def table_of(run_dirs: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame([{"condition": name, "_runs": pd.DataFrame({"run_dir": [str(d)], "seed": [0], "split_seed": [0]})}
                         for name, d in run_dirs.items()])


def test_a_run_maps_its_test_rows_coloured_by_class(entry, tmp_path):  # noqa: F811
    store, cache = entry
    targets = fake_run(tmp_path / "run", store, cache)
    X, classes = held_out_rows(tmp_path / "run")
    test = store.samples["target"].isin(targets[4:]).to_numpy()
    np.testing.assert_array_equal(X, cache.load()[test])
    assert list(classes) == [store.classes[i] for i in store.labels[test]]
    maps, missing = condition_maps(table_of({"t": tmp_path / "run", "gone": tmp_path / "nope"}), "pca")
    assert list(maps) == ["t"] and maps["t"][0].shape == (int(test.sum()), 2)
    assert len(missing) == 1 and missing[0].startswith("gone: ") and "run_info.json" in missing[0]
    png = plots.embedding_maps(maps, tmp_path / "map.png", "pca")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projections_are_two_dimensional_finite_and_seeded(method):
    X = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    a, b = project(X, method), project(X, method)
    assert a.shape == (40, 2) and np.isfinite(a).all()
    np.testing.assert_allclose(a, b)


@pytest.mark.slow  # numba compiles UMAP's kernels on first use: about a minute on 2 cores
def test_umap_projection_is_seeded():
    X = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    np.testing.assert_allclose(project(X, "umap"), project(X, "umap"))


def test_an_unknown_method_and_too_few_points_are_refused():
    with pytest.raises(ValueError, match="choose one of"):
        project(np.zeros((5, 2)), "mds")
    with pytest.raises(ValueError, match="at least 3 points"):
        project(np.zeros((2, 2)), "pca")
