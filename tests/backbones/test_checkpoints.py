"""Real checkpoint layouts load strictly, reproduce a reference forward pass, and bad files fail clearly."""

from __future__ import annotations

import argparse
import pathlib
import time

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from tests.backbones.vit_reference import random_vit_state, reference_cls, reference_tokens
from xferlab.backbones.checkpoints import UnsafeCheckpointError
from xferlab.backbones.registry import build_backbone
from xferlab.backbones.weights import WeightsError

PRE = {"input_size": 32, "normalize": "zscore"}


def build(weights, in_channels=("nucleus", "protein"), **kw):
    return build_backbone(name="t", arch="vit_small_patch16_224", in_channels=list(in_channels), init="weights",
                          preprocess=PRE, weights=str(weights), **kw)


def dino_head(prefix):
    return {f"{prefix}head.mlp.0.weight": torch.zeros(16, 128), f"{prefix}head.last_layer.weight_g": torch.ones(1, 8),
            f"{prefix}head.last_layer.weight_v": torch.zeros(32, 16)}


def dino_checkpoint(state, extra=None):
    teacher = {f"backbone.{k}": v for k, v in state.items()} | dino_head("")
    student = {f"module.backbone.{k}": v * 0.9 for k, v in state.items()} | dino_head("module.")
    return {"teacher": teacher, "student": student, "optimizer": {"state": {}, "param_groups": []}, "epoch": 100,
            "args": argparse.Namespace(arch="vit_small", patch_size=8, out_dim=32), "dino_loss": {"center": torch.zeros(1, 32)},
            **(extra or {})}


FORMATS = {
    "plain_pth": lambda s, p: torch.save(s, p),
    "dino_full": lambda s, p: torch.save(dino_checkpoint(s), p),
    "dino4cells": lambda s, p: torch.save(dino_checkpoint(s), p),
    "timm_safetensors": lambda s, p: save_file({**s, "head.weight": torch.zeros(10, 128), "head.bias": torch.zeros(10)}, p),
    "xferlab_pretrain": lambda s, p: torch.save(dino_checkpoint(s, {"xferlab": {"dataset": "synthcell"}}), p),
    "wrapped_state_dict": lambda s, p: torch.save({"state_dict": s, "epoch": 3}, p),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_loads_strictly_and_matches_the_reference_forward(fmt, tmp_path):
    chans = 4 if fmt == "dino4cells" else 2
    state = random_vit_state(in_chans=chans)
    path = tmp_path / ("w.safetensors" if "safetensors" in fmt else "w.pth")
    FORMATS[fmt](state, path)
    names = ["nucleus", "protein", "microtubules", "er"][:chans]
    bb = build(path, in_channels=names)
    assert bb.model.patch_embed.proj.weight.shape == (128, chans, 8, 8)
    assert len(bb.model.blocks) == 4 and bb.embed_dim == 128
    x = torch.randn(3, chans, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bb(x), reference_cls(state, x, num_heads=2), rtol=1e-4, atol=1e-4)
    assert bb.file_sha256 and len(bb.file_sha256) == 64


def test_student_weights_are_selectable(tmp_path):
    state = random_vit_state()
    torch.save(dino_checkpoint(state), tmp_path / "w.pth")
    student = build(tmp_path / "w.pth", checkpoint_key="student")
    shifted = {k: v * 0.9 for k, v in state.items()}
    x = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(student(x), reference_cls(shifted, x, num_heads=2), rtol=1e-4, atol=1e-4)
    with pytest.raises(WeightsError, match="no 'momentum' entry"):
        build(tmp_path / "w.pth", checkpoint_key="momentum")


def test_last4_features_are_the_normed_cls_tokens_of_the_last_four_blocks(tmp_path):
    state = random_vit_state(depth=5)
    torch.save(state, tmp_path / "w.pth")
    bb = build(tmp_path / "w.pth", features="last4")
    x = torch.randn(2, 2, 32, 32)
    tokens = reference_tokens(state, x, num_heads=2)[-4:]
    expected = torch.cat([F.layer_norm(t, (128,), state["norm.weight"], state["norm.bias"], eps=1e-6)[:, 0]
                          for t in tokens], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(bb(x), expected, rtol=1e-4, atol=1e-4)
    assert bb.embed_dim == 512


class CreatesAFile:
    """A pickle payload that creates a file when unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_a_checkpoint_needing_arbitrary_pickles_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({**dino_checkpoint(random_vit_state()), "payload": CreatesAFile(marker)}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match="arbitrary code.*trust_checkpoint=true"):
        build(tmp_path / "evil.pth")
    assert not marker.exists()
    # the user's explicit trust loads it (and the payload runs: that is the risk the error names)
    build(tmp_path / "evil.pth", trust_checkpoint=True)
    assert marker.exists()


def test_truncated_empty_and_non_checkpoint_files_are_clear_errors(tmp_path):
    torch.save(random_vit_state(), tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_text("this is not a checkpoint\n")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    for name, match in [("truncated.pth", "truncated"), ("empty.pth", "empty"), ("text.pth", "not a PyTorch checkpoint"),
                        ("bad.safetensors", "not a readable safetensors")]:
        with pytest.raises(WeightsError, match=match) as err:
            build(tmp_path / name)
        assert str(tmp_path / name) in str(err.value) and "download it again" in str(err.value), name  # file, fix
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "nostate.pth")
    with pytest.raises(WeightsError, match="no state dict found") as err:
        build(tmp_path / "nostate.pth")
    assert str(tmp_path / "nostate.pth") in str(err.value) and "Point backbone.weights at" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(  # reading wrote nothing beside them
        ["good.pth", "truncated.pth", "empty.pth", "text.pth", "bad.safetensors", "nostate.pth"])


def test_a_flipped_byte_in_a_weights_file_is_refused(tmp_path):
    """torch.load does not check the zip members' CRCs: without the check this loads a wrong weight."""
    torch.save(random_vit_state(), tmp_path / "w.pth")
    data = bytearray((tmp_path / "w.pth").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "w.pth").write_bytes(bytes(data))
    assert torch.load(tmp_path / "w.pth", weights_only=True)  # loads silently
    with pytest.raises(WeightsError, match=r"w.pth is damaged \(member .* fails its CRC check"):
        build(tmp_path / "w.pth")


def test_architecture_or_channels_that_disagree_with_the_checkpoint_are_errors(tmp_path):
    torch.save(random_vit_state(in_chans=2, patch=8), tmp_path / "w.pth")
    with pytest.raises(WeightsError, match="patch_size: config 16 vs checkpoint 8"):
        build(tmp_path / "w.pth", model_kwargs={"patch_size": 16})
    with pytest.raises(WeightsError, match="in_chans: config 3 vs checkpoint 2"):
        build(tmp_path / "w.pth", in_channels=["red", "green", "blue"])
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "cnn.pth")
    with pytest.raises(WeightsError, match="do not fit the model") as err:
        build(tmp_path / "cnn.pth")
    assert str(tmp_path / "cnn.pth") in str(err.value) and "use a checkpoint made for this backbone" in str(err.value)


def test_missing_public_checkpoint_names_file_source_and_destination_fast(tmp_path, monkeypatch):
    from tests.conftest import compose_config
    from xferlab.runtime.building import build as instantiate

    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path / "weights"))
    for option, file, source in [("imagenet", "dino_deitsmall16_pretrain.pth", "dl.fbaipublicfiles.com"),
                                 ("imagenet_vitb8", "dino_vitbase8_pretrain.pth", "dl.fbaipublicfiles.com"),
                                 ("hpa", "DINO_FOV_checkpoint.pth", "zenodo.org/records/8061392"),
                                 ("hpa_sc", "DINO_single_cell_checkpoint.pth", "zenodo.org/records/8061426")]:
        cfg = compose_config([f"backbone={option}", "paths.output_dir=/tmp/x"])
        start = time.perf_counter()
        with pytest.raises(WeightsError) as err:
            instantiate(cfg.backbone)
        assert time.perf_counter() - start < 5  # no hub retries (the issue asks for well under a second)
        message = str(err.value)
        assert file in message and source in message and str(tmp_path / "weights" / file) in message
    cfg = compose_config(["backbone=opencell", "paths.output_dir=/tmp/x"])
    with pytest.raises(WeightsError, match="opencell_dino.pth not found.*xferlab.pretrain"):
        instantiate(cfg.backbone)


def test_weights_folder_lookup(tmp_path, monkeypatch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    torch.save(random_vit_state(), tmp_path / "mine.pth")
    assert build("mine.pth").weights_source.startswith(str(tmp_path / "mine.pth"))


def test_hub_weights_offline_fail_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="not in the local Hugging Face cache"):
        build_backbone(name="imagenet", arch="vit_small_patch16_224", in_channels=["r", "g", "b"], init="hub",
                       preprocess=PRE, hub_id="vit_small_patch16_224.dino_not_cached_here")
