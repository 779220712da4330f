"""`python -m xferlab.export <run dir or cache entry> [--out file.h5ad]`: a run's (or a cache
entry's) embeddings as AnnData (`.h5ad`): embeddings in X, the sample table in obs, provenance in
uns["xferlab"]. Read it with `anndata.read_h5ad` (or scanpy)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def default_out(source: Path) -> Path:
    """Beside a run's files (`<run dir>/embeddings.h5ad`); for a cache entry, `<key>.h5ad` here."""
    return source / "embeddings.h5ad" if (source / "run_info.json").exists() else Path(source.stem + ".h5ad")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xferlab.export", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a run folder (with run_info.json) or outputs/cache/<key>.zarr")
    parser.add_argument("--out", type=Path, default=None, help="the .h5ad file to write (default: see above)")
    parser.add_argument("--store", type=Path, default=None,
                        help="the image store the embeddings were computed from, if it moved since")
    args = parser.parse_args(argv)
    from xferlab.embeddings.export import ExportError, load, to_anndata
    from xferlab.runtime.io import temp_sibling

    out = args.out or default_out(args.source)
    if out.suffix != ".h5ad":
        print(f"xferlab.export: --out {out}: the file name must end in .h5ad", file=sys.stderr)
        return 2
    try:
        adata = to_anndata(load(args.source, args.store))
    except (ExportError, FileNotFoundError) as err:
        print(f"xferlab.export: {err}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(out)
    try:
        adata.write_h5ad(tmp)
        tmp.replace(out)  # complete or absent
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {out}: {adata.n_obs} samples x {adata.n_vars} dimensions (anndata.read_h5ad({str(out)!r}))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
