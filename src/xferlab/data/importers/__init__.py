"""Importers: real microscopy data layouts -> xferlab's image store (`xferlab.data.store`).

Each is a dataset source built by Hydra from `conf/dataset/<name>.yaml`; `open(data_dir)` builds the
store under `data_dir` on first use (named after a digest of the config and the input files) and
reuses it afterwards.

- `opencell_raw.OpenCellRawSource`: OpenCell raw 2-channel FOVs, whole or as nucleus-centred crops;
- `cytoself.CytoselfSource`: cytoself's preprocessed per-protein crops (`*_pro.npy`, `*_nuc.npy`);
- `folder.FolderSource`: TIFF/PNG images listed in a CSV (`path, label, group[, split]`).
"""

from xferlab.data.importers.common import DataImportError
from xferlab.data.importers.cytoself import CytoselfSource
from xferlab.data.importers.folder import FolderSource
from xferlab.data.importers.opencell_raw import OpenCellRawSource

__all__ = ["CytoselfSource", "DataImportError", "FolderSource", "OpenCellRawSource"]
