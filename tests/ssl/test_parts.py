"""DINO's parts, each on its own."""

import math

import numpy as np
import pytest
import torch

from xferlab.ssl.augment import Augment, CropSpec, MultiCrop, gaussian_blur, random_resized_crop
from xferlab.ssl.head import DINOHead
from xferlab.ssl.loss import DINOLoss, entropy
from xferlab.ssl.schedules import cosine_schedule, teacher_temperature


def test_head_output_and_frozen_weight_norm():
    head = DINOHead(32, out_dim=64, hidden_dim=48, bottleneck_dim=16)
    out = head(torch.randn(5, 32))
    assert out.shape == (5, 64)
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)
    # with unit-norm rows and a normalised bottleneck, logits are cosines in [-1, 1]
    assert out.abs().max() <= 1 + 1e-5


def test_loss_skips_same_view_pairs_and_updates_the_centre():
    loss = DINOLoss(4, student_temp=0.1, center_momentum=0.9)
    t = [torch.tensor([[10.0, 0, 0, 0]]), torch.tensor([[0, 10.0, 0, 0]])]
    # the student matches each teacher view with the *other* global view -> low loss
    good = [t[1].clone(), t[0].clone()]
    bad = [t[0].clone(), t[1].clone()]
    l_good, _ = DINOLoss(4)(good, t, 0.04)
    l_bad, _ = DINOLoss(4)(bad, t, 0.04)
    assert l_good < l_bad
    before = loss.center.clone()
    loss(good, t, 0.04)
    torch.testing.assert_close(loss.center, before * 0.9 + 0.1 * torch.tensor([[5.0, 5.0, 0, 0]]))


def test_loss_value_by_hand():
    s = [torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2)]
    t = [torch.zeros(1, 2), torch.zeros(1, 2)]
    value, probs = DINOLoss(2)(s, t, 0.04)
    assert value.item() == pytest.approx(math.log(2))  # uniform vs uniform: cross-entropy log 2
    assert entropy(probs[0]).item() == pytest.approx(math.log(2))


def test_schedules():
    lr = cosine_schedule(1.0, 0.0, total_steps=100, warmup_steps=10)
    assert len(lr) == 100 and lr[0] == 0 and lr[10] == pytest.approx(1.0) and lr[-1] == pytest.approx(0.0, abs=1e-3)
    assert np.all(np.diff(lr[10:]) <= 1e-12)
    m = cosine_schedule(0.99, 1.0, 50)
    assert m[0] == pytest.approx(0.99) and np.all(np.diff(m) >= 0)
    temp = teacher_temperature(0.04, 0.07, 10, 30)
    assert len(temp) == 30 and temp[0] == pytest.approx(0.04) and temp[9] == pytest.approx(0.07) and temp[-1] == 0.07


def test_augmentations_keep_channels_apart_and_are_seeded():
    x = torch.zeros(3, 32, 32)
    x[1] = 1.0  # only channel 1 holds signal
    aug = Augment(CropSpec(16, (0.5, 1.0)), noise=0.0, blur_prob=1.0, channel_dropout=0.0)
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == (3, 16, 16)
    # intensity changes are per channel: channel 0 and 2 get only their own shift, no signal from channel 1
    assert out[0].std() < 1e-5 and out[2].std() < 1e-5
    again = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    views = MultiCrop(24, 12, n_local=3)(torch.randn(4, 32, 32), torch.Generator().manual_seed(1))
    assert [tuple(v.shape) for v in views] == [(4, 24, 24)] * 2 + [(4, 12, 12)] * 3


def test_crop_and_blur_shapes():
    x = torch.arange(64.0).view(1, 8, 8)
    crop = random_resized_crop(x, CropSpec(4, (1.0, 1.0)), torch.Generator().manual_seed(0))
    assert crop.shape == (1, 4, 4)
    blurred = gaussian_blur(torch.ones(2, 8, 8), 1.0)
    torch.testing.assert_close(blurred, torch.ones(2, 8, 8))


def test_channel_dropout_never_drops_everything():
    aug = Augment(CropSpec(8, (1.0, 1.0)), channel_dropout=1.0, noise=0.0, blur_prob=0.0)
    out = aug(torch.ones(2, 8, 8), torch.Generator().manual_seed(0))
    assert (out.abs().sum(dim=(1, 2)) > 0).sum() == 1


def test_the_knn_monitor_leaves_the_teacher_in_its_training_mode_and_the_bn_head_works():
    from xferlab.backbones.registry import create_model
    from xferlab.ssl.module import DINOModule

    backbone = create_model("vit_tiny_patch16_224", 2, {"img_size": 16, "patch_size": 8, "depth": 1,
                                                       "dynamic_img_size": True}, seed=0)
    module = DINOModule(backbone, steps_per_epoch=2, epochs=1, out_dim=16, head_hidden=8, bottleneck=4, head_bn=True)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in module.student["head"].modules())
    module.train()
    out = module.embed(torch.randn(5, 2, 16, 16))
    assert out.shape == (5, 192) and torch.allclose(out.norm(dim=1), torch.ones(5))
    assert module.teacher["backbone"].training
