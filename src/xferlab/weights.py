"""`python -m xferlab.weights` (`make weights`): fetch the study's public checkpoints into the
weights folder and verify them; `--list` shows what is there and what is missing.

Verification: the file loads strictly into the backbone it is for (`backbone=<name>`), and its
sha256 is recorded in `<weights folder>/MANIFEST.json`. DINO4Cells checkpoints live in Zenodo
records that hold many files; the command says which file to fetch and where to put it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.request
from pathlib import Path

from xferlab.backbones.locations import KNOWN_CHECKPOINTS, weights_dir
from xferlab.backbones.weights import WeightsError, file_sha256
from xferlab.runtime.io import atomic_write_json, temp_sibling

BACKBONE_OF = {"dino_deitsmall16_pretrain.pth": "imagenet", "dino_deitsmall16_pretrain_full_checkpoint.pth": "imagenet",
               "dino_vitbase8_pretrain.pth": "imagenet_vitb8", "DINO_FOV_checkpoint.pth": "hpa",
               "DINO_single_cell_checkpoint.pth": "hpa_sc", "opencell_dino.pth": "opencell"}


def download(url: str, dest: Path, timeout: float = 30) -> None:
    tmp = temp_sibling(dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f, length=1 << 20)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


def verify(path: Path, backbone: str) -> str:
    """Load strictly with the backbone's config; return the file's sha256."""
    from hydra import compose, initialize_config_dir

    import xferlab
    from xferlab.runtime.building import build

    conf = Path(xferlab.__file__).parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("train", overrides=[f"backbone={backbone}", f"backbone.weights={path}", "paths.output_dir=."])
    build(cfg.backbone)
    return file_sha256(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xferlab.weights", description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="only show which checkpoints are present")
    args = parser.parse_args(argv)
    folder = weights_dir()
    folder.mkdir(parents=True, exist_ok=True)
    manifest, failures = {}, 0
    for name, known in KNOWN_CHECKPOINTS.items():
        path = folder / name
        if not path.exists() and not args.list and known.url:
            print(f"downloading {known.url}")
            try:
                download(known.url, path)
            except OSError as err:
                print(f"  failed ({err}); offline? fetch it by hand and put it at {path}", file=sys.stderr)
                failures += 1
                continue
        if not path.exists():
            where = known.how or known.url or f"{known.path_in_record} from {known.record}"
            print(f"missing  {name:<46} get {where} -> {path}")
            continue
        if args.list:
            print(f"present  {name:<46} {path}")
            continue
        try:
            digest = verify(path, BACKBONE_OF[name])
        except WeightsError as err:
            print(f"INVALID  {name}: {err}", file=sys.stderr)
            failures += 1
            continue
        manifest[name] = {"sha256": digest, "backbone": BACKBONE_OF[name], "source": known.url or known.record}
        print(f"verified {name:<46} sha256 {digest}")
    if manifest:
        atomic_write_json(folder / "MANIFEST.json", manifest)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
