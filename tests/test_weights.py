import json

import timm
import torch

from xferlab import weights


def test_verify_loads_a_placed_checkpoint_strictly_and_records_its_sha256(tmp_path, monkeypatch):
    monkeypatch.setenv("XFERLAB_WEIGHTS", str(tmp_path))
    model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(model.state_dict(), path)
    digest = weights.verify(path, "imagenet")
    assert len(digest) == 64
    monkeypatch.setattr(weights, "download", lambda url, dest, timeout=30: (_ for _ in ()).throw(OSError("offline")))
    assert weights.main([]) == 1  # the other downloads fail (offline here) ...
    manifest = json.loads((tmp_path / "MANIFEST.json").read_text())
    assert manifest["dino_deitsmall16_pretrain.pth"]["sha256"] == digest  # ... the present file is verified
