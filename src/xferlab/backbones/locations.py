"""Where weight files live, the study's public checkpoints (which backbone each is for and where
it comes from), and the lock that pins their contents.

`backbone.weights` is a path, or the bare name of a file in the weights folder
(`$XFERLAB_WEIGHTS`, default `$XDG_CACHE_HOME/xferlab/weights`, i.e. `~/.cache/xferlab/weights`).
A public checkpoint missing from the folder is downloaded on first use when `backbone.download`
is `auto` (the default) and downloads are allowed (`HF_HUB_OFFLINE=0`), see `resolve` and `download`;
otherwise it is an error naming the file, where to get it and where to put it.

`<weights folder>/weights.lock` lists `<sha256>  <file name>` (the `sha256sum` format), written
when a file is first verified; every later load compares the file with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from xferlab.backbones.weights import WeightsError

DOWNLOAD_MODES = ("auto", "never")
LOCK_FILE = "weights.lock"
# how to make the OpenCell DINO (`backbone=opencell`): the one command the README and the errors give
OPENCELL_DINO_COMMAND = "python -m xferlab.pretrain experiment=opencell_dino dataset.root=<images>"
SHIPPED_PREFIX = "shipped:"


@dataclass(frozen=True)
class KnownCheckpoint:
    file: str
    backbone: str  # the backbone config (conf/backbone/<name>.yaml) the file loads into
    what: str
    url: str | None = None  # direct download, relative to its host's address (`HOSTS`)
    host: str = "dino"  # dino (DINO's server), huggingface (the Hugging Face hub), subcell (CZI's SubCell bucket)
    zenodo: str | None = None  # Zenodo record id holding the file (directly or inside a zip)
    member: str | None = None  # the file's name in the record or its archive (default: `file`)
    how: str | None = None  # for files users make themselves

    @property
    def downloadable(self) -> bool:
        return bool(self.url or self.zenodo)


KNOWN_CHECKPOINTS = {c.file: c for c in (
    KnownCheckpoint("dino_deitsmall16_pretrain.pth", "imagenet", "DINO ViT-S/16 trained on ImageNet-1k, backbone only",
                    url="dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth"),
    KnownCheckpoint("dino_deitsmall16_pretrain_full_checkpoint.pth", "imagenet",
                    "DINO ViT-S/16 ImageNet-1k full training checkpoint",
                    url="dino_deitsmall16_pretrain/dino_deitsmall16_pretrain_full_checkpoint.pth"),
    KnownCheckpoint("dino_vitbase8_pretrain.pth", "imagenet_vitb8", "DINO ViT-B/8 trained on ImageNet-1k, backbone only",
                    url="dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth"),
    KnownCheckpoint("dino_vitbase8_pretrain_full_checkpoint.pth", "imagenet_vitb8",
                    "DINO ViT-B/8 ImageNet-1k full training checkpoint",
                    url="dino_vitbase8_pretrain/dino_vitbase8_pretrain_full_checkpoint.pth"),
    KnownCheckpoint("DINO_FOV_checkpoint.pth", "hpa", "DINO4Cells, HPA fields of view (4 channels)",
                    zenodo="8061392", member="DINO_FOV_checkpoint.pth"),
    KnownCheckpoint("DINO_single_cell_checkpoint.pth", "hpa_sc", "DINO4Cells, HPA single cells (4 channels)",
                    zenodo="8061426", member="DINO_single_cell_checkpoint.pth"),
    *(KnownCheckpoint(f"{hub_id}.safetensors", backbone, f"{what}, timm's layout on the Hugging Face hub",
                      url=f"timm/{hub_id}/resolve/main/model.safetensors", host="huggingface")
      for hub_id, backbone, what in (
          ("vit_small_patch14_dinov2.lvd142m", "dinov2_vits14", "DINOv2 ViT-S/14, LVD-142M"),
          ("vit_small_patch14_reg4_dinov2.lvd142m", "dinov2_vits14_reg4", "DINOv2 ViT-S/14 with 4 registers, LVD-142M"),
          ("vit_base_patch14_dinov2.lvd142m", "dinov2_vitb14", "DINOv2 ViT-B/14, LVD-142M"),
          ("vit_base_patch14_reg4_dinov2.lvd142m", "dinov2_vitb14_reg4", "DINOv2 ViT-B/14 with 4 registers, LVD-142M"),
          ("vit_small_patch16_dinov3.lvd1689m", "dinov3_vits16", "DINOv3 ViT-S/16, LVD-1689M"),
          ("vit_base_patch16_dinov3.lvd1689m", "dinov3_vitb16", "DINOv3 ViT-B/16, LVD-1689M"),
      )),
    *(KnownCheckpoint(f"{prefix}_{kind}.pth", backbone, f"SubCell {what} encoder and pooler ({channels})",
                      url=f"{prefix}_{kind}.pth", host="subcell")
      for prefix, backbone, channels in (
          ("all_channels", "subcell_rybg", "microtubules, ER, nucleus, protein"),
          ("MT-DNA-Protein", "subcell_rbg", "microtubules, nucleus, protein"),
          ("ER-DNA-Protein", "subcell_ybg", "ER, nucleus, protein"),
          ("DNA-Protein", "subcell_bg", "nucleus, protein"),
      )
      for kind, what in (("MAE-CellS-ProtS-Pool", "MAE + contrastive"), ("ViT-ProtS-Pool", "supervised-contrastive ViT"))),
    KnownCheckpoint("OpenPhenom.safetensors", "openphenom",
                    "OpenPhenom-S/16, Recursion's channel-agnostic MAE (encoder and decoder; non-commercial licence)",
                    url="recursionpharma/OpenPhenom/resolve/main/model.safetensors", host="huggingface"),
    KnownCheckpoint("opencell_dino.pth", "opencell", "a DINO trained on OpenCell images (the study's third backbone)",
                    how=f"pretrain it with `{OPENCELL_DINO_COMMAND}` (DINO ViT-S/16 at 224 px, a GPU job; "
                        "when it completes it writes opencell_dino.pth into the weights folder), or use your own "
                        "DINO checkpoint"),
)}


def weights_dir() -> Path:
    if os.environ.get("XFERLAB_WEIGHTS"):
        return Path(os.environ["XFERLAB_WEIGHTS"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return cache / "xferlab" / "weights"


# ---------------------------------------------------------------- where public files come from

DINO_URL = "https://dl.fbaipublicfiles.com/dino"
ZENODO_URL = "https://zenodo.org"
# where a checkpoint's `url` is relative to: host -> (environment variable that moves it, default)
HOSTS = {
    "dino": ("XFERLAB_DINO_URL", DINO_URL),
    "huggingface": ("HF_ENDPOINT", "https://huggingface.co"),  # huggingface_hub's own setting
    "subcell": ("XFERLAB_SUBCELL_URL", "https://czi-subcell-public.s3.amazonaws.com/models"),
}


def host_url(host: str) -> str:
    variable, default = HOSTS[host]
    return os.environ.get(variable, default).rstrip("/")


def zenodo_url() -> str:
    return os.environ.get("XFERLAB_ZENODO_URL", ZENODO_URL).rstrip("/")


def source_url(known: KnownCheckpoint) -> str:
    if known.url:
        return f"{host_url(known.host)}/{known.url}"
    return f"{known.member or known.file} from {zenodo_url()}/records/{known.zenodo}"


def where_to_get(name: str) -> str:
    known = KNOWN_CHECKPOINTS.get(name)
    if known is None:
        return "it is not one of the public checkpoints xferlab knows; use your own file"
    if known.how:
        return known.how
    return f"download {source_url(known)} (or run `python -m xferlab.fetch weights {name}` online)"


# ---------------------------------------------------------------- the lock

def read_lock(folder: Path) -> dict[str, str]:
    """file name -> sha256 from `folder/weights.lock` (empty when there is none)."""
    path = Path(folder) / LOCK_FILE
    if not path.is_file():
        return {}
    lock = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise WeightsError(f"{path}, line {n}: {line!r} is not '<sha256>  <file name>'; correct or delete the line")
        lock[name.strip()] = digest
    return lock


def record_lock(folder: Path, name: str, digest: str) -> None:
    """Add or replace `name`'s line in `folder/weights.lock` (atomically, one writer at a time)."""
    from filelock import FileLock

    from xferlab.runtime.io import atomic_write_text

    folder = Path(folder)
    with FileLock(str(folder / f".{LOCK_FILE}.lock"), timeout=60):
        lock = {**read_lock(folder), name: digest}
        atomic_write_text(folder / LOCK_FILE, "".join(f"{d}  {n}\n" for n, d in sorted(lock.items())))


def check_lock(path: Path, digest: str) -> None:
    """A file listed in its folder's `weights.lock` must have the digest recorded there."""
    path = Path(path)
    expected = read_lock(path.parent).get(path.name)
    if expected is not None and expected != digest:
        raise WeightsError(
            f"{path}: sha256 {digest} differs from {expected} recorded in {path.parent / LOCK_FILE} when the file was "
            f"verified. The file changed since: delete it and fetch it again (`python -m xferlab.fetch weights "
            f"{path.name}`), or, if you replaced it on purpose, delete its line from {LOCK_FILE}"
        )
