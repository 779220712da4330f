"""Public checkpoints downloaded on first use, from a real HTTP server on 127.0.0.1 serving a
DINO-like file and Zenodo-like records (JSON file list with md5 checksums, a zip read by range)."""

from __future__ import annotations

import hashlib
import io

import pytest
import torch

from tests.backbones.record_server import RecordServer, zip_bytes
from tests.backbones.test_checkpoints import dino_checkpoint
from tests.backbones.vit_reference import random_vit_state
from tests.conftest import compose_config
from xferlab import fetch
from xferlab.backbones.locations import LOCK_FILE, read_lock
from xferlab.backbones.weights import WeightsError
from xferlab.runtime.building import build

DINO_PATH = "/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth"
ZIP_PATH = "/api/records/8061392/files/HPA_FOV_data.zip/content"


def small_vit(in_chans: int, seed: int = 0):
    return random_vit_state(in_chans=in_chans, dim=32, depth=1, seed=seed)


def saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with RecordServer() as srv:
        monkeypatch.setenv("XFERLAB_DINO_URL", srv.url + "/dino")
        monkeypatch.setenv("XFERLAB_ZENODO_URL", srv.url)
        srv.dino = saved(small_vit(in_chans=3, seed=1))  # a backbone-only DINO file (3 channels)
        srv.files[DINO_PATH] = srv.dino
        srv.fov = saved(dino_checkpoint(small_vit(in_chans=4, seed=2)))  # DINO4Cells layout, 4 channels
        srv.other = torch.randint(0, 255, (4 << 20,), generator=torch.Generator().manual_seed(0),
                                  dtype=torch.uint8).numpy().tobytes()  # 4 MiB the download must not read
        archive = zip_bytes({"HPA_FOV_data/DINO_FOV_checkpoint.pth": srv.fov, "HPA_FOV_data/images.bin": srv.other})
        srv.add_record("8061392", {"README.md": b"HPA FOV data", "HPA_FOV_data.zip": archive})
        yield srv


def backbone(name: str):
    return build(compose_config([f"backbone={name}", "paths.output_dir=/tmp/x"]).backbone)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name) if folder.exists() else []


def test_dino_file_downloaded_on_first_use_verified_and_locked(server, tmp_path):
    bb = backbone("imagenet")
    path = tmp_path / "weights" / "dino_deitsmall16_pretrain.pth"
    assert path.read_bytes() == server.dino
    assert bb.file_sha256 == sha256(server.dino)
    assert read_lock(path.parent) == {path.name: sha256(server.dino)}
    backbone("imagenet")  # second use: from the folder, no download
    assert [r for r in server.requests if r[1] == DINO_PATH and r[0] == "GET"] == [("GET", DINO_PATH, None)]


def test_zenodo_checkpoint_is_read_from_the_archive_by_byte_ranges(server, tmp_path):
    bb = backbone("hpa")
    path = tmp_path / "weights" / "DINO_FOV_checkpoint.pth"
    assert path.read_bytes() == server.fov and bb.model.patch_embed.proj.weight.shape[1] == 4
    assert ("GET", "/api/records/8061392", None) in server.requests  # the file list came from the REST API
    zip_gets = [r for r in server.requests if r[1] == ZIP_PATH and r[0] == "GET"]
    assert zip_gets and all(r[2] for r in zip_gets)  # only range requests on the archive ...
    received = 0
    for _, _, rng in zip_gets:
        first, last = rng.removeprefix("bytes=").split("-")
        received += int(last) - int(first) + 1 if first else int(last)
    assert received < len(server.fov) + len(server.other) // 2  # ... and far less than the whole of it
    assert read_lock(path.parent)[path.name] == sha256(server.fov)


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    data = saved(dino_checkpoint(small_vit(in_chans=4, seed=3)))
    wrong = hashlib.md5(b"another file").hexdigest()
    server.add_record("8061426", {"DINO_single_cell_checkpoint.pth": data}, md5={"DINO_single_cell_checkpoint.pth": wrong})
    with pytest.raises(WeightsError) as err:
        backbone("hpa_sc")
    message = str(err.value)
    assert "checksum mismatch" in message and wrong in message and hashlib.md5(data).hexdigest() in message
    folder = tmp_path / "weights"
    assert not (folder / "DINO_single_cell_checkpoint.pth").exists() and leftovers(folder) == []
    assert "DINO_single_cell_checkpoint.pth" not in read_lock(folder)


def test_a_file_that_does_not_fit_its_backbone_is_not_kept(server, tmp_path):
    server.files[DINO_PATH] = saved(small_vit(in_chans=4))  # 4 input channels: not an ImageNet DINO
    with pytest.raises(WeightsError, match="does not load into backbone=imagenet"):
        backbone("imagenet")
    folder = tmp_path / "weights"
    assert not (folder / "dino_deitsmall16_pretrain.pth").exists() and leftovers(folder) == []


def test_interrupted_download_leaves_nothing_and_the_next_run_completes(server, tmp_path):
    server.cut[DINO_PATH] = len(server.dino) // 3
    with pytest.raises(WeightsError, match="interrupted") as err:
        backbone("imagenet")
    assert DINO_PATH in str(err.value)
    folder = tmp_path / "weights"
    assert not (folder / "dino_deitsmall16_pretrain.pth").exists() and leftovers(folder) == []
    del server.cut[DINO_PATH]
    assert backbone("imagenet").file_sha256 == sha256(server.dino)


def test_changed_file_is_refused_by_the_lock_naming_both_digests(server, tmp_path):
    backbone("imagenet")
    path = tmp_path / "weights" / "dino_deitsmall16_pretrain.pth"
    replaced = saved(small_vit(in_chans=3, seed=9))
    path.write_bytes(replaced)
    with pytest.raises(WeightsError) as err:
        backbone("imagenet")
    assert sha256(server.dino) in str(err.value) and sha256(replaced) in str(err.value) and LOCK_FILE in str(err.value)


def test_offline_is_one_clear_error_without_any_request(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as err:
        backbone("hpa")
    message = str(err.value)
    assert "HF_HUB_OFFLINE=1" in message and "DINO_FOV_checkpoint.pth" in message
    assert str(tmp_path / "weights" / "DINO_FOV_checkpoint.pth") in message and "8061392" in message
    assert server.requests == []


def test_download_never_keeps_the_missing_file_an_error(server, tmp_path):
    cfg = compose_config(["backbone=imagenet", "backbone.download=never", "paths.output_dir=/tmp/x"])
    with pytest.raises(WeightsError, match="not found in the weights folder"):
        build(cfg.backbone)
    assert server.requests == []


def test_fetch_weights_command_downloads_by_name_and_lists(server, tmp_path, capsys):
    assert fetch.main(["--no-progress", "weights", "dino_deitsmall16_pretrain.pth", "DINO_FOV_checkpoint.pth"]) == 0
    folder = tmp_path / "weights"
    assert set(read_lock(folder)) == {"dino_deitsmall16_pretrain.pth", "DINO_FOV_checkpoint.pth"}
    assert fetch.main(["weights", "--list"]) == 0
    out = capsys.readouterr().out
    assert "present  dino_deitsmall16_pretrain.pth" in out and "missing  opencell_dino.pth" in out
    assert fetch.main(["weights", "no_such.pth"]) == 2


def test_fetch_weights_verifies_a_file_placed_by_hand_once_and_pins_it(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "weights"
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(folder))
    folder.mkdir()
    good = saved(small_vit(in_chans=3))
    (folder / "dino_vitbase8_pretrain.pth").write_bytes(good)
    (folder / "dino_deitsmall16_pretrain.pth").write_bytes(saved(small_vit(in_chans=4)))  # not an RGB model
    names = ["dino_vitbase8_pretrain.pth", "dino_deitsmall16_pretrain.pth"]
    assert fetch.main(["--offline", "weights", *names]) == 1
    captured = capsys.readouterr()
    assert "present  dino_vitbase8_pretrain.pth" in captured.out and "FAILED   dino_deitsmall16_pretrain.pth" in captured.err
    assert read_lock(folder) == {"dino_vitbase8_pretrain.pth": sha256(good)}  # only the file that loads is pinned


# ---------------------------------------------------------------- DINOv2 / DINOv3 and SubCell files

HUB_PATH = "/timm/vit_small_patch14_dinov2.lvd142m/resolve/main/model.safetensors"


def hub_file(server, monkeypatch, announced: str | None = None) -> bytes:
    """timm's DINOv2 ViT-S/14 layout (a small model of it) behind a hub-like redirect that announces
    the file's sha256 (`X-Linked-Etag`), as huggingface.co does."""
    import timm
    from safetensors.torch import save

    monkeypatch.setenv("HF_ENDPOINT", server.url)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=28,
                              embed_dim=128, depth=1, num_heads=2)
    data = save({k: v.contiguous() for k, v in model.state_dict().items()})
    server.files["/cdn/blob"] = data
    server.redirects[HUB_PATH] = ("/cdn/blob", {"X-Linked-Etag": f'"{announced or sha256(data)}"'})
    return data


def test_hub_file_downloaded_checked_against_the_announced_sha256_and_locked(server, tmp_path, monkeypatch):
    data = hub_file(server, monkeypatch)
    bb = backbone("dinov2_vits14")
    path = tmp_path / "weights" / "vit_small_patch14_dinov2.lvd142m.safetensors"
    assert path.read_bytes() == data and bb.file_sha256 == sha256(data)
    assert read_lock(path.parent) == {path.name: sha256(data)}
    assert bb.model.num_prefix_tokens == 1 and bb.model.patch_embed.patch_size == (14, 14)


def test_hub_file_whose_bytes_differ_from_the_announced_sha256_is_not_kept(server, tmp_path, monkeypatch):
    hub_file(server, monkeypatch, announced="0" * 64)
    with pytest.raises(WeightsError, match="checksum mismatch: sha256 .* the server lists 0{64}"):
        backbone("dinov2_vits14")
    assert not (tmp_path / "weights" / "vit_small_patch14_dinov2.lvd142m.safetensors").exists()
    assert leftovers(tmp_path / "weights") == []


def test_subcell_encoder_downloaded_from_its_bucket_verified_and_locked(server, tmp_path, monkeypatch):
    from tests.backbones.test_subcell import released_state

    monkeypatch.setenv("XFERLAB_SUBCELL_URL", server.url + "/models")
    data = saved(released_state(2))
    server.files["/models/DNA-Protein_MAE-CellS-ProtS-Pool.pth"] = data
    bb = backbone("subcell_bg")
    path = tmp_path / "weights" / "DNA-Protein_MAE-CellS-ProtS-Pool.pth"
    assert path.read_bytes() == data and bb.file_sha256 == sha256(data)
    assert read_lock(path.parent) == {path.name: sha256(data)}
    server.files["/models/DNA-Protein_ViT-ProtS-Pool.pth"] = saved(released_state(4))  # not a bg encoder
    assert fetch.main(["--no-progress", "weights", "DNA-Protein_ViT-ProtS-Pool.pth"]) == 1
    assert not (tmp_path / "weights" / "DNA-Protein_ViT-ProtS-Pool.pth").exists()
