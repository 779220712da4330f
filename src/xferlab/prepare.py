"""`python -m xferlab.prepare dataset=<name> [gallery=true]`: build a dataset's image store (or open
an existing one) and print where it is and what it holds; `gallery=true` also writes a PNG
gallery beside the store. `xferlab.train` builds the store the same way on first use."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import xferlab.runtime.resolvers  # noqa: F401 - registers the resolvers the configs use


@hydra.main(version_base="1.3", config_path="conf", config_name="prepare")
def main(cfg: DictConfig) -> None:
    from xferlab.runtime.building import build
    from xferlab.runtime.integrity import verification

    with verification(cfg.get("verify")):
        store = build(cfg.dataset).open(cfg.paths.data_dir)
    counts = store.samples["label"].value_counts().sort_index()
    print(store)
    print(f"fingerprint {store.fingerprint}")
    for label, count in counts.items():
        name = store.classes[label] if label >= 0 else "(unlabelled)"
        print(f"  {name:<24} {count:>7} samples")
    if cfg.gallery:
        from xferlab.data.gallery import write_gallery

        path = write_gallery(store, store.path.with_suffix(".gallery.png"), per_class=cfg.gallery_per_class)
        print(f"gallery written to {path}")


if __name__ == "__main__":
    main()
