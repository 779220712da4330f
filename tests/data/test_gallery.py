from PIL import Image

from tests.conftest import write_store
from xferlab.data.gallery import composite, write_gallery


def test_gallery_has_one_row_per_class(tmp_path):
    store = write_store(tmp_path / "s.zarr", n_per_class=3, classes=("a", "b", "c"), size=16)
    path = write_gallery(store, tmp_path / "g.png", per_class=2, scale=2)
    image = Image.open(path)
    assert image.size[1] == 3 * (16 * 2 + 2)
    assert image.size[0] == 130 + 2 * (32 + 2)


def test_composite_colours_channels():
    import numpy as np

    img = np.zeros((2, 4, 4))
    img[0, :2] = 1  # nucleus top half
    img[1, 2:] = 1  # protein bottom half
    rgb = composite(img, ["nucleus", "protein"])
    assert rgb[0, 0, 2] > rgb[0, 0, 1] and rgb[3, 0, 1] > rgb[3, 0, 2]
